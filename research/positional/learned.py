"""Learned absolute position embeddings (Gehring et al. 2017, "Convolutional Sequence to Sequence Learning",
arXiv 1705.03122; used by BERT, arXiv 1810.04805, and GPT-2).

Equation:
    x_t <- x_t + P[min(max(pos_t, 0), N - 1)],      P in R^{N x E} learned, N = max_len

Hooks: `embed` only (absolute; `relative = False`).

Conventions / deviations:
- Positions past the table (evaluation beyond the training length) are CLAMPED to the last row N - 1, and negative
  positions to row 0. This is the documented, error-free behaviour for longer lengths: every position >= N shares
  one vector, which is exactly why learned absolute positions fail to extrapolate. Without the explicit clip,
  `table[pos]` would clamp silently and `jnp.take` would return NaN rows; clipping makes the behaviour a choice.
- Init: normal, stddev 0.02 (GPT-2 / BERT).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding


def learned_lookup(table: jax.Array, positions: jax.Array) -> jax.Array:
    """Rows of `table` [N,E] at integer `positions` [...], clamped into [0, N-1] -> [..., E]."""
    index = jnp.clip(positions, 0, table.shape[0] - 1)  # [...], beyond-table positions reuse row N-1
    return jnp.take(table, index, axis=0)  # [..., E]


@POSITIONAL.register("learned")
@dataclasses.dataclass(frozen=True, kw_only=True)
class LearnedConfig(PositionalConfig):
    """A trainable [max_len, E] table added to the token embeddings."""

    relative = False

    max_len: int | None = None
    """Rows in the table; None = the training length (dims.max_len). Later positions reuse the last row."""
    init_stddev: float = 0.02
    """Standard deviation of the normal initialiser."""

    def validate(self, dims: Dims) -> None:
        rows = dims.max_len if self.max_len is None else self.max_len
        if rows < 1:
            raise ValueError(f"learned: expected max_len >= 1, got {rows}")
        if self.init_stddev < 0:
            raise ValueError(f"learned: expected init_stddev >= 0, got {self.init_stddev}")

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        rows = dims.max_len if self.max_len is None else self.max_len
        return Learned(rows, dims.d_model, init_stddev=self.init_stddev, rngs=rngs)


class Learned(PositionalEncoding):
    """x[B,T,E] + table[clamp(pos)]; the table is an nnx.Param, counted as positional parameters."""

    def __init__(self, max_len: int, d_model: int, *, init_stddev: float, rngs: nnx.Rngs):
        init = nnx.initializers.normal(stddev=init_stddev)
        self.table = nnx.Param(init(rngs.params(), (max_len, d_model), jnp.float32))  # [N,E]

    def embed(self, x: jax.Array, pos: jax.Array) -> jax.Array:
        return x + learned_lookup(self.table[...], pos).astype(x.dtype)  # [B,T,E]
