"""The token-embedding interface.

A design maps token ids to vectors and vectors back to vocabulary logits:
    embed(tokens[B,T] int32) -> x[B,T,E]
    unembed(x[B,T,E]) -> logits[B,T,V]     (tied to the input table, or a separate readout)
Designs are frozen configs registered in EMBEDDINGS whose `build(vocab_size, d_model, rngs=...)` returns the module.
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from research.registry import Registry

EMBEDDINGS: Registry[type[EmbeddingConfig]] = Registry("embedding")


class TokenEmbedding(nnx.Module):
    def embed(self, tokens: jax.Array) -> jax.Array:  # [B,T] -> [B,T,E]
        raise NotImplementedError

    def unembed(self, x: jax.Array) -> jax.Array:  # [B,T,E] -> [B,T,V]
        raise NotImplementedError


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbeddingConfig:
    def validate(self, *, vocab_size: int, d_model: int) -> None:
        """Raise ValueError naming the field; called before any compilation."""

    def build(self, *, vocab_size: int, d_model: int, rngs: nnx.Rngs) -> TokenEmbedding:
        raise NotImplementedError
