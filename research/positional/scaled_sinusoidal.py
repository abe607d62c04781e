"""Scaled sinusoidal absolute positions: the fixed sinusoidal table times one learned scalar (Hua et al. 2022,
"Transformer Quality in Linear Time", arXiv 2202.10447, FLASH; also used by Geiping & Goldstein 2023, Cramming).

Equation (table as in sinusoidal.py, Vaswani layout):
    x_t <- x_t + g * PE[pos_t],        g a learned scalar, initialised to d_model^(-1/2)

Hooks: `embed` only (absolute; `relative = False`). One parameter, counted as positional.

Conventions / deviations:
- Initial scale d^(-1/2) follows the widely used x-transformers implementation (`ScaledSinusoidalEmbedding`);
  FLASH does not state its initial value. `init_scale` overrides it.
- The learned scalar lets the model balance position against token content; with g = 1 this is `sinusoidal`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding
from research.positional.sinusoidal import sinusoidal_table


def scaled_sinusoidal(x: jax.Array, pos: jax.Array, scale: jax.Array, base: float = 10000.0) -> jax.Array:
    """x[B,T,E] + scale * PE[pos] (PE in float32, cast to x.dtype)."""
    return x + (scale * sinusoidal_table(pos, x.shape[-1], base)).astype(x.dtype)  # [B,T,E]


@POSITIONAL.register("scaled_sinusoidal")
@dataclasses.dataclass(frozen=True, kw_only=True)
class ScaledSinusoidalConfig(PositionalConfig):
    """Sinusoidal table times a learned scalar."""

    relative = False

    base: float = 10000.0
    """As in `sinusoidal`."""
    init_scale: float | None = None
    """Initial g; None = d_model ** -0.5."""

    def validate(self, dims: Dims) -> None:
        if dims.d_model % 2:
            raise ValueError(f"scaled_sinusoidal: expected d_model divisible by 2, got {dims.d_model}")
        if self.base <= 1.0:
            raise ValueError(f"scaled_sinusoidal: expected base > 1, got {self.base}")

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        init = dims.d_model**-0.5 if self.init_scale is None else self.init_scale
        return ScaledSinusoidal(base=self.base, init_scale=init)


class ScaledSinusoidal(PositionalEncoding):
    """x[B,T,E] + g * PE[pos]; defined at every position, so longer evaluation needs nothing special."""

    def __init__(self, *, base: float, init_scale: float):
        self.base = base
        self.scale = nnx.Param(jnp.asarray(init_scale, jnp.float32))  # [] scalar

    def embed(self, x: jax.Array, pos: jax.Array) -> jax.Array:
        return scaled_sinusoidal(x, pos, self.scale[...], self.base)
