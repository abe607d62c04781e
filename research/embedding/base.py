"""The token-embedding interface.

A design maps token ids to vectors and vectors back to vocabulary logits:
    embed(tokens[B,T] int32, *, key=None) -> x[B,T,d_model]
    unembed(x[B,T,d_model]) -> logits[B,T,V]     (tied to the input side, or a separate readout)
Designs are frozen configs registered in EMBEDDINGS whose `build(vocab_size, d_model, rngs=...)` returns the module.
`key` is a PRNG key in training (for dropout) and None at evaluation (deterministic). Parameters of an untied output
layer live in attributes whose names start with `readout`, so parameter counts can report them apart.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from research.registry import Registry

EMBEDDINGS: Registry[type[EmbeddingConfig]] = Registry("embedding")


class TokenEmbedding(nnx.Module):
    def embed(self, tokens: jax.Array, *, key: jax.Array | None = None) -> jax.Array:  # [B,T] -> [B,T,E]
        raise NotImplementedError

    def unembed(self, x: jax.Array) -> jax.Array:  # [B,T,E] -> [B,T,V]
        raise NotImplementedError


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbeddingConfig:
    def validate(self, *, vocab_size: int, d_model: int) -> None:
        """Raise ValueError naming the field; called before any compilation."""

    needs_pieces = False
    """True for designs that spell tokens (char_cnn, word_char): build() then needs the tokenizer's pieces()."""

    def build(self, *, vocab_size: int, d_model: int, rngs: nnx.Rngs, pieces=None) -> TokenEmbedding:
        """The module; `pieces` (a string per id, from the tokenizer) for designs that read spellings."""
        raise NotImplementedError


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout of elements of x with probability `rate`; the identity when key is None (evaluation)."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def check_common(*, scale: str = "none", dropout: float = 0.0, init_std: float = 0.02) -> None:
    """Checks shared by the table-like designs; ValueError naming the field."""
    if scale not in ("none", "sqrt_d"):
        raise ValueError(f"model.embedding.scale: expected 'none' or 'sqrt_d', got {scale!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.embedding.dropout: expected 0 <= p < 1, got {dropout}")
    if not init_std > 0:
        raise ValueError(f"model.embedding.init_std: expected > 0, got {init_std}")
