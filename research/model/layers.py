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


class Dense(nnx.Linear):
    """nnx.Linear applied to the rows of x flattened to 2-D ([..., in] -> [N, in] -> [..., out]).

    Same parameters and values as nnx.Linear. The flattening is for speed: the kernel's gradient then contracts one
    axis of two row-major matrices. On a [B,T,in] input it contracts two axes, and XLA's CPU backend lays one
    operand out transposed with a copy, fused with whatever elementwise backward precedes it (the GELU's), which
    made the MLP's forward+backward 1.6x slower (research/bench/steps.py, `breakdown`).
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        lead = x.shape[:-1]
        return super().__call__(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)


def dense(in_dim: int, out_dim: int, *, std: float, rngs: nnx.Rngs) -> Dense:
    return Dense(in_dim, out_dim, use_bias=False, kernel_init=nnx.initializers.normal(std), rngs=rngs)


class MLP(nnx.Module):
    def __init__(
        self, d_model: int, hidden: int, *, out_std: float, rngs: nnx.Rngs, recompute_hidden: bool = False
    ):
        """`recompute_hidden`: save only the input for the backward pass, which recomputes the up projection and
        GELU. For layers under a scan, whose saved activations are stacked over the layers: XLA zero-fills and
        copies those [L,B,T,hidden] stacks, which costs more than the recomputed matmul. A loop keeps them:
        recomputing costs it ~2%."""
        self.up = dense(d_model, hidden, std=0.02, rngs=rngs)
        self.down = dense(hidden, d_model, std=out_std, rngs=rngs)
        self.recompute_hidden = recompute_hidden

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.remat(_mlp)(self, x) if self.recompute_hidden else _mlp(self, x)


def _mlp(mlp: MLP, x: jax.Array) -> jax.Array:
    return mlp.down(jax.nn.gelu(mlp.up(x)))
