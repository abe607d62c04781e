"""Sandwich (Chi et al. 2023, "Dissecting Transformer Length Extrapolation via the Lens of Receptive Field
Analysis", ACL 2023, arXiv 2212.10356).

Equation: keep only the position-position term p_i · p_j of sinusoidal embeddings of width d̄, shift it so that
distance 0 gives 0, and compress it per head like ALiBi,
    logits_h(i, j) = q_i · k_j / sqrt(D) + [ Σ_{k=1..d̄/2} cos((i - j) ω_k) - d̄/2 ] / (8 h / H),   h = 1 .. H
    ω_k = base^(-2k / d̄),  base = 10000
Parameter-free. The bracket is <= 0, 0 at i = j, and decays (with ripples) to about -d̄/2 with distance.

Hooks: `bias` only (`relative = True`).

Conventions / deviations:
- Frequencies use k = 1 .. d̄/2 as in the paper's sum (and NVIDIA NeMo's implementation), not Vaswani's 0-based k.
- d̄ (`dim`) defaults to d_model, the width of the sinusoidal embeddings the paper starts from; NeMo passes the
  head dimension instead. It is a hyperparameter in the paper, so it is a config field here.
- The sum of cosines is computed as the inner product p_i · p_j of [cos | sin] features (angle addition), which
  is what Sandwich is, and costs O(T S d̄/2) without a [T,S,d̄/2] tensor. Positions are re-based on each row's
  first key position before the trigonometry, so float32 angles stay small at long offsets; the result is
  unchanged in exact arithmetic.
- cos is even, so the bias is symmetric in i - j; under a causal mask only j <= i matters.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding


def sandwich_frequencies(dim: int, base: float = 10000.0) -> jax.Array:
    """ω_k = base^(-2k/d̄), k = 1 .. d̄/2 -> float32 [d̄/2]."""
    k = jnp.arange(1, dim // 2 + 1, dtype=jnp.float32)
    return base ** (-2.0 * k / dim)


def sandwich_bias(
    q_pos: jax.Array, k_pos: jax.Array, num_heads: int, dim: int, base: float = 10000.0
) -> jax.Array:
    """[Σ_k cos((i - j) ω_k) - d̄/2] / (8h/H) for q_pos [B,T], k_pos [B,S] -> float32 [B,H,T,S]."""
    origin = k_pos[:, :1]  # [B,1]; a shared offset, so i - j is unchanged
    omega = sandwich_frequencies(dim, base)  # [d̄/2]
    ang_q = (q_pos - origin).astype(jnp.float32)[..., None] * omega  # [B,T,d̄/2]
    ang_k = (k_pos - origin).astype(jnp.float32)[..., None] * omega  # [B,S,d̄/2]
    # cos(a - b) = cos a cos b + sin a sin b, summed over k: p_i · p_j.
    total = jnp.einsum("btf,bsf->bts", jnp.cos(ang_q), jnp.cos(ang_k)) + jnp.einsum(
        "btf,bsf->bts", jnp.sin(ang_q), jnp.sin(ang_k)
    )  # [B,T,S]
    compress = 8.0 * jnp.arange(1, num_heads + 1, dtype=jnp.float32) / num_heads  # [H], 8h/H
    return (total[:, None] - dim / 2) / compress[None, :, None, None]  # [B,H,T,S]


@POSITIONAL.register("sandwich")
@dataclasses.dataclass(frozen=True, kw_only=True)
class SandwichConfig(PositionalConfig):
    """Parameter-free sinusoidal self-similarity p_i · p_j, shifted to 0 at i = j and compressed per head."""

    dim: int | None = None
    """d̄, the width of the sinusoidal embeddings (even); None = d_model. Larger d̄ = deeper, smoother decay."""
    base: float = 10000.0
    """Wavelength base of the sinusoids, ω_k = base^(-2k/d̄)."""

    def validate(self, dims: Dims) -> None:
        dim = dims.d_model if self.dim is None else self.dim
        if dim < 2 or dim % 2:
            raise ValueError(f"sandwich.dim: expected an even width >= 2, got {dim}")
        if self.base <= 1.0:
            raise ValueError(f"sandwich.base: expected > 1, got {self.base}")
        if dims.num_heads < 1:
            raise ValueError(f"sandwich: expected num_heads >= 1, got {dims.num_heads}")

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        dim = dims.d_model if self.dim is None else self.dim
        return Sandwich(num_heads=dims.num_heads, dim=dim, base=self.base)


class Sandwich(PositionalEncoding):
    """Adds `sandwich_bias` to every layer's logits; no state."""

    shared_bias = True  # one bias for every layer

    def __init__(self, *, num_heads: int, dim: int, base: float):
        self.num_heads, self.dim, self.base = num_heads, dim, base

    def bias(self, q_pos, k_pos, *, layer: int, q=None, k=None, logits=None):
        return sandwich_bias(q_pos, k_pos, self.num_heads, self.dim, self.base)  # [B,H,T,S]
