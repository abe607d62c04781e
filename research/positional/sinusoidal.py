"""Fixed sinusoidal absolute positions (Vaswani et al. 2017, "Attention Is All You Need", arXiv 1706.03762, §3.5).

Equation (Vaswani layout: sine on even dimensions, cosine on odd ones):
    PE[p, 2i]   = sin(p / base^(2i/E))
    PE[p, 2i+1] = cos(p / base^(2i/E)),        base = 10000
    x_t <- x_t + PE[pos_t]

Hooks: `embed` only (absolute; `relative = False`).

Conventions / deviations:
- The layout is interleaved sin/cos, not the concatenated [sin | cos] of x-transformers or the Tensor2Tensor /
  MaxText timescale formula; quality is the same, but tables are not interchangeable.
- The paper multiplies token embeddings by sqrt(E) before adding PE; that scale belongs to the token-embedding design
  (research/embedding/), so it is not applied here.
- Angles are computed in float32 whatever the activation dtype, then the table is cast to x.dtype.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding


def sinusoidal_table(positions: jax.Array, dim: int, base: float = 10000.0) -> jax.Array:
    """Sinusoidal codes for integer `positions` of any shape [...] -> float32 [..., dim] (dim must be even)."""
    if dim % 2:
        raise ValueError(f"sinusoidal_table: expected an even dim, got {dim}")
    inv_freq = base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)  # [dim/2], 1 / base^(2i/dim)
    angles = jnp.asarray(positions, jnp.float32)[..., None] * inv_freq  # [..., dim/2]
    # Stacking on a new last axis then flattening puts sin at 2i and cos at 2i+1 (the Vaswani layout).
    table = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # [..., dim/2, 2]
    return table.reshape(*angles.shape[:-1], dim)  # [..., dim]


@POSITIONAL.register("sinusoidal")
@dataclasses.dataclass(frozen=True, kw_only=True)
class SinusoidalConfig(PositionalConfig):
    """Fixed sin/cos table added to the token embeddings; no parameters."""

    relative = False

    base: float = 10000.0
    """Longest wavelength / (2*pi): wavelengths form a geometric series from 2*pi to 2*pi*base."""

    def validate(self, dims: Dims) -> None:
        if dims.d_model % 2:
            raise ValueError(f"sinusoidal: expected d_model divisible by 2, got {dims.d_model}")
        if self.base <= 1.0:
            raise ValueError(f"sinusoidal: expected base > 1, got {self.base}")

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        return Sinusoidal(base=self.base)


class Sinusoidal(PositionalEncoding):
    """x[B,T,E] + PE[pos] ; defined for every position, so longer evaluation lengths need nothing special."""

    def __init__(self, *, base: float):
        self.base = base

    def embed(self, x: jax.Array, pos: jax.Array) -> jax.Array:
        return x + sinusoidal_table(pos, x.shape[-1], self.base).astype(x.dtype)  # [B,T,E]
