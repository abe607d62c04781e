"""Rotary position embedding, RoPE (Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
Embedding", arXiv 2104.09864, §3: the rotation R^d_{Theta,m} and its element-wise form).

Equation: each pair (a, b) of a query/key head vector is rotated by the angle p * theta_k of its position p,
    theta_k = base^(-2k/D),   k = 0 .. D/2 - 1
    (a, b) -> (a cos(p theta_k) - b sin(p theta_k),  b cos(p theta_k) + a sin(p theta_k))
so that <R_m q, R_n k> depends on m - n only.

Hooks: `rotate` only (`relative = True`).

Conventions / deviations:
- Pairing. Default is half-split (GPT-NeoX / Hugging Face Llama `rotate_half`): dimension k pairs with k + D/2.
  `interleaved=True` gives the RoFormer / GPT-J / Meta layout: dimension 2k pairs with 2k + 1. The two agree up to
  a fixed permutation of the q/k projection rows; loading weights trained with the other one fails silently.
- Angles, cos and sin are computed in float32 even for bf16 activations (bf16 holds integers exactly only up to
  256), and the rotated result is cast back to the input dtype.
- Every head dimension is rotated (no partial rotary); context scaling (PI / NTK / YaRN) is a later addition to
  `rope_frequencies(scaling=...)`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding


def rope_frequencies(head_dim: int, base: float = 10000.0, scaling=None) -> jax.Array:
    """Inverse frequencies theta_k = base^(-2k/head_dim) -> float32 [head_dim // 2]."""
    if scaling is not None:
        raise ValueError(f"rope_frequencies: context scaling is not implemented yet, got scaling={scaling!r}")
    if head_dim % 2:
        raise ValueError(f"rope_frequencies: expected an even head_dim, got {head_dim}")
    return base ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)  # [D/2]


def apply_rope(
    x: jax.Array, positions: jax.Array, inv_freq: jax.Array, interleaved: bool = False
) -> jax.Array:
    """Rotate x [B,T,H,D] by positions [B,T] with inv_freq [D/2]; returns x's shape and dtype."""
    if 2 * inv_freq.shape[-1] != x.shape[-1]:
        raise ValueError(f"apply_rope: expected {2 * inv_freq.shape[-1]} features, got {x.shape[-1]}")
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B,T,D/2]
    cos = jnp.cos(angles)[..., None, :]  # [B,T,1,D/2], broadcast over heads
    sin = jnp.sin(angles)[..., None, :]
    xf = x.astype(jnp.float32)
    if interleaved:  # pairs (2k, 2k+1)
        a, b = xf[..., 0::2], xf[..., 1::2]  # [B,T,H,D/2]
        out = jnp.stack([a * cos - b * sin, b * cos + a * sin], axis=-1).reshape(xf.shape)
    else:  # pairs (k, k + D/2)
        a, b = jnp.split(xf, 2, axis=-1)  # [B,T,H,D/2]
        out = jnp.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
    return out.astype(x.dtype)  # [B,T,H,D]


@POSITIONAL.register("rope")
@dataclasses.dataclass(frozen=True, kw_only=True)
class RoPEConfig(PositionalConfig):
    """Rotate queries and keys by their positions in every layer; no parameters."""

    base: float = 10000.0
    """Frequency base: the slowest pair turns about once every 2*pi*base positions (Llama 3 uses 500000)."""
    interleaved: bool = False
    """False: half-split pairs (k, k+D/2) as in GPT-NeoX/Llama; True: adjacent pairs (2k, 2k+1) as in RoFormer."""

    def validate(self, dims: Dims) -> None:
        if dims.head_dim % 2:
            raise ValueError(f"rope: expected head_dim divisible by 2, got {dims.head_dim}")
        if self.base <= 1.0:
            raise ValueError(f"rope: expected base > 1, got {self.base}")

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        return RoPE(head_dim=dims.head_dim, base=self.base, interleaved=self.interleaved)


class RoPE(PositionalEncoding):
    """Applies `apply_rope` to q and k. The frequencies are recomputed per call (constant-folded under jit) rather
    than stored: a plain array attribute would become module state and travel with the parameters."""

    def __init__(self, *, head_dim: int, base: float, interleaved: bool):
        self.head_dim, self.base, self.interleaved = head_dim, base, interleaved

    def rotate(self, q, k, q_pos, k_pos, *, layer: int):
        inv_freq = rope_frequencies(self.head_dim, self.base)  # [D/2]
        q = apply_rope(q, q_pos, inv_freq, self.interleaved)  # [B,T,H,D]
        k = apply_rope(k, k_pos, inv_freq, self.interleaved)  # [B,S,K,D]
        return q, k
