"""Position samplers: how the integer position ids fed to every positional hook are drawn.

A sampler is separate from the scheme, so "randomized RoPE" is `positional=rope, positions=randomized`, not a new
scheme. Each sampler is a frozen kw_only config registered in POSITIONS with one method,
    sample(batch, length, *, key, train) -> int32 [B, T]
called once at the top of the forward pass (positions are data; layers never call `arange`). `train` lets a
sampler behave differently at evaluation; `key` is a JAX PRNG key that deterministic samplers ignore.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from research.registry import Registry


@dataclasses.dataclass(frozen=True, kw_only=True)
class PositionSampler:
    """Base config; subclasses are registered in POSITIONS."""

    def validate(self, max_len: int) -> None:
        """Raise ValueError naming the field and what was expected, given the training length."""

    def sample(self, batch: int, length: int, *, key: jax.Array | None, train: bool) -> jax.Array:
        raise NotImplementedError


POSITIONS: Registry[type[PositionSampler]] = Registry("position sampler")


@POSITIONS.register("contiguous")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Contiguous(PositionSampler):
    """0, 1, ..., length - 1 for every sequence, in training and at evaluation."""

    def sample(self, batch: int, length: int, *, key: jax.Array | None, train: bool) -> jax.Array:
        return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))  # [B,T]
