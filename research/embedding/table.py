"""Lookup-table token embedding with a tied or untied readout.

Each token id indexes a learned row of a [V, E] table (Bengio et al. 2003; the standard LM input layer). The readout
either reuses the table (tied: logits = x Wᵀ, Press & Wolf 2017, arXiv 1608.05859) or owns a separate [E, V] matrix.
Options:
- `scale="sqrt_d"` multiplies the looked-up vectors by sqrt(E), as Vaswani et al. 2017 do;
- `norm=true` applies a LayerNorm to the looked-up vectors (BERT, Devlin et al. 2019);
- `dropout=p` drops elements of the embedded vectors with probability p in training (inverted dropout; none at
  evaluation). It is element dropout on the output of the lookup, not Gal & Ghahramani's dropout of whole word types.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from research.embedding.base import EMBEDDINGS, EmbeddingConfig, TokenEmbedding, check_common, dropout


def lookup(table: jax.Array, tokens: jax.Array) -> jax.Array:
    """table[V,E], tokens[B,T] -> [B,T,E]."""
    return jnp.take(table, tokens, axis=0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class VectorOptions(EmbeddingConfig):
    """Options of the designs that look token vectors up in a table (`table`, `factorized`)."""

    tied: bool = True
    """Readout shares the input side (logits = h @ tableᵀ, through the projection for factorized); False gives a
    separate [d, V] readout."""
    scale: Literal["none", "sqrt_d"] = "none"
    """Multiply looked-up vectors by sqrt(d) ('sqrt_d') or not."""
    init_std: float = 0.02
    """Standard deviation of the normal initialiser of the table (and readout)."""
    norm: bool = False
    """LayerNorm after the lookup (and scaling)."""
    dropout: float = 0.0
    """Element dropout probability on the embedded vectors, in training only."""

    def validate(self, *, vocab_size: int, d_model: int) -> None:
        check_common(scale=self.scale, dropout=self.dropout, init_std=self.init_std)


class AfterLookup(nnx.Module):
    """scale, then optional LayerNorm, then training-only dropout, on looked-up vectors [B,T,d]."""

    def __init__(self, config: VectorOptions, d_model: int, *, rngs: nnx.Rngs):
        self.multiplier = math.sqrt(d_model) if config.scale == "sqrt_d" else 1.0
        self.norm = nnx.LayerNorm(d_model, rngs=rngs) if config.norm else None
        self.rate = config.dropout

    def __call__(self, x: jax.Array, key: jax.Array | None) -> jax.Array:
        x = x * self.multiplier
        if self.norm is not None:
            x = self.norm(x)
        return dropout(x, self.rate, key)


@EMBEDDINGS.register("table")
@dataclasses.dataclass(frozen=True, kw_only=True)
class TableConfig(VectorOptions):
    """A [V, d] table."""

    def build(self, *, vocab_size: int, d_model: int, rngs: nnx.Rngs, pieces=None) -> TokenEmbedding:
        return TableEmbedding(self, vocab_size=vocab_size, d_model=d_model, rngs=rngs)


class TableEmbedding(TokenEmbedding):
    def __init__(self, config: TableConfig, *, vocab_size: int, d_model: int, rngs: nnx.Rngs):
        init = nnx.initializers.normal(config.init_std)
        self.table = nnx.Param(init(rngs.params(), (vocab_size, d_model), jnp.float32))  # [V,E]
        self.readout = (
            None if config.tied else nnx.Param(init(rngs.params(), (d_model, vocab_size), jnp.float32))
        )  # [E,V]
        self.after = AfterLookup(config, d_model, rngs=rngs)

    def embed(self, tokens: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.after(lookup(self.table[...], tokens), key)  # [B,T,E]

    def unembed(self, x: jax.Array) -> jax.Array:
        if self.readout is None:
            return jnp.einsum("bte,ve->btv", x, self.table[...].astype(x.dtype))
        return jnp.einsum("bte,ev->btv", x, self.readout[...].astype(x.dtype))
