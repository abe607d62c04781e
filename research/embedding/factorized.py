"""Factorized embedding (ALBERT, Lan et al. 2020, "ALBERT: A Lite BERT for Self-supervised Learning of Language
Representations", arXiv 1909.11942, §3.1): a [V, E] table projected to d_model by a [E, d] matrix, so the vocabulary
costs V·E + E·d parameters instead of V·d.

    embed(t)  = table[t] P                      (E -> d)
    tied readout:   logits = (h Pᵀ) tableᵀ      (d -> E -> V; the table and the projection are shared)
    untied readout: logits = h R                 (a separate [d, V] matrix)

E is free (E < d saves parameters; E >= d is allowed, for embedding-width sweeps). Options `scale`, `norm` and
`dropout` act on the projected vectors exactly as in `table`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from research.embedding.base import EMBEDDINGS, TokenEmbedding
from research.embedding.table import AfterLookup, VectorOptions, lookup


def factorized_embed(table: jax.Array, projection: jax.Array, tokens: jax.Array) -> jax.Array:
    """table[V,E], projection[E,d], tokens[B,T] -> [B,T,d]."""
    return lookup(table, tokens) @ projection


def factorized_unembed(table: jax.Array, projection: jax.Array, h: jax.Array) -> jax.Array:
    """Tied readout: h[B,T,d] -> (h Pᵀ) tableᵀ [B,T,V]."""
    return jnp.einsum("bte,ve->btv", h @ projection.T, table)


@EMBEDDINGS.register("factorized")
@dataclasses.dataclass(frozen=True, kw_only=True)
class FactorizedConfig(VectorOptions):
    embed_dim: int = 64
    """E, the width of the table."""

    def validate(self, *, vocab_size: int, d_model: int) -> None:
        if self.embed_dim < 1:
            raise ValueError(f"model.embedding.embed_dim: expected a positive integer, got {self.embed_dim}")
        super().validate(vocab_size=vocab_size, d_model=d_model)

    def build(self, *, vocab_size: int, d_model: int, rngs: nnx.Rngs, pieces=None) -> TokenEmbedding:
        return FactorizedEmbedding(self, vocab_size=vocab_size, d_model=d_model, rngs=rngs)


class FactorizedEmbedding(TokenEmbedding):
    def __init__(self, config: FactorizedConfig, *, vocab_size: int, d_model: int, rngs: nnx.Rngs):
        e = config.embed_dim
        init = nnx.initializers.normal(config.init_std)
        self.table = nnx.Param(init(rngs.params(), (vocab_size, e), jnp.float32))  # [V,E]
        # Projection scaled so that projected vectors keep the table's scale: std 1/sqrt(E).
        self.projection = nnx.Param(init_projection(rngs.params(), e, d_model))  # [E,d]
        self.readout = (
            None if config.tied else nnx.Param(init(rngs.params(), (d_model, vocab_size), jnp.float32))
        )  # [d,V]
        self.after = AfterLookup(config, d_model, rngs=rngs)

    def embed(self, tokens: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.after(factorized_embed(self.table[...], self.projection[...], tokens), key)  # [B,T,d]

    def unembed(self, x: jax.Array) -> jax.Array:
        if self.readout is None:
            return factorized_unembed(
                self.table[...].astype(x.dtype), self.projection[...].astype(x.dtype), x
            )
        return jnp.einsum("btd,dv->btv", x, self.readout[...].astype(x.dtype))


def init_projection(key: jax.Array, e: int, d: int) -> jax.Array:
    return jax.random.normal(key, (e, d), jnp.float32) / math.sqrt(e)
