"""Small building blocks: RMSNorm and the GELU MLP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class RMSNorm(nnx.Module):
    """x / rms(x) * g (Zhang & Sennrich 2019, arXiv 1910.07467), statistics in float32."""

    def __init__(self, dim: int, *, eps: float = 1e-6):
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...]).astype(x.dtype)


def dense(in_dim: int, out_dim: int, *, std: float, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(in_dim, out_dim, use_bias=False, kernel_init=nnx.initializers.normal(std), rngs=rngs)


class MLP(nnx.Module):
    def __init__(self, d_model: int, hidden: int, *, out_std: float, rngs: nnx.Rngs):
        self.up = dense(d_model, hidden, std=0.02, rngs=rngs)
        self.down = dense(hidden, d_model, std=out_std, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.gelu(self.up(x)))
