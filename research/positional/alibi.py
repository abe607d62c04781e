"""ALiBi, attention with linear biases (Press et al. 2022, "Train Short, Test Long: Attention with Linear Biases
Enables Input Length Extrapolation", arXiv 2108.12409, §3).

Equation: a fixed, head-specific penalty proportional to the query-key distance is added to the logits,
    causal (default):     logits_h(i, j) = q_i · k_j / sqrt(D) - m_h (i - j)   for j <= i,  + 0 for j > i
    bidirectional=True:   logits_h(i, j) = q_i · k_j / sqrt(D) - m_h |i - j|   (symmetric, for encoders)
with geometric slopes m_h: for H a power of two, m_h = 2^(-8 (h + 1) / H), h = 0 .. H-1; otherwise the slopes of
the nearest lower power of two c, followed by every other slope of 2c, up to H in total.

Hooks: `bias` only (`relative = True`).

Conventions / deviations:
- The bias is computed from the actual positions, -m_h (q_pos - k_pos), not as the official causal shortcut
  +m_h * j along keys (equal under a causal mask, by softmax shift-invariance, but wrong for packed or shifted
  positions). The causal mask itself is the attention's job.
- Causal vs bidirectional: under a causal mask both give identical logits (they differ only for keys after the
  query, which the mask removes). The causal variant leaves those future entries at 0 (the paper's matrix is
  lower-triangular); the bidirectional one penalises them symmetrically, -m_h |i - j|, which is what an encoder
  (no mask) needs. Press et al. define only the causal case; the symmetric form is the common encoder extension.
- Slopes keep the official order, which is not monotonic for non-powers of two; never sort them.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding


def _power_of_two_slopes(n: int) -> list[float]:
    # start = 2^(-8/n), each next slope multiplies by start again.
    return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]


def alibi_slopes(num_heads: int) -> jax.Array:
    """Per-head slopes m_h in the official order (non-powers of two included) -> float32 [H]."""
    if num_heads < 1:
        raise ValueError(f"alibi_slopes: expected num_heads >= 1, got {num_heads}")
    lower = 2 ** math.floor(math.log2(num_heads))  # largest power of two <= H
    slopes = _power_of_two_slopes(lower)
    if (
        lower < num_heads
    ):  # fill the rest with the odd-indexed slopes of the next power of two, interleaving scales
        slopes += _power_of_two_slopes(2 * lower)[0::2][: num_heads - lower]
    return jnp.asarray(slopes, jnp.float32)  # [H]


def alibi_bias(
    q_pos: jax.Array, k_pos: jax.Array, slopes: jax.Array, *, bidirectional: bool = False
) -> jax.Array:
    """ALiBi for q_pos [B,T], k_pos [B,S], slopes [H] -> float32 [B,H,T,S].

    Causal: -m_h (i - j) for j <= i and 0 for keys after the query; bidirectional: -m_h |i - j|.
    """
    rel = (q_pos[:, :, None] - k_pos[:, None, :]).astype(jnp.float32)  # [B,T,S], i - j
    dist = jnp.abs(rel) if bidirectional else jnp.maximum(rel, 0.0)  # [B,T,S]
    return -slopes[None, :, None, None] * dist[:, None, :, :]  # [B,H,T,S]


@POSITIONAL.register("alibi")
@dataclasses.dataclass(frozen=True, kw_only=True)
class ALiBiConfig(PositionalConfig):
    """Fixed linear distance penalties per head; no parameters (the slopes follow from H)."""

    bidirectional: bool = False
    """False: causal ALiBi, -m (i - j) for past keys and 0 for future ones; True: symmetric -m |i - j| (encoders)."""

    def validate(self, dims: Dims) -> None:
        if dims.num_heads < 1:
            raise ValueError(f"alibi: expected num_heads >= 1, got {dims.num_heads}")

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        return ALiBi(num_heads=dims.num_heads, bidirectional=self.bidirectional)


class ALiBi(PositionalEncoding):
    """Adds `alibi_bias` to every layer's logits. Slopes are recomputed per call (a constant under jit) so that no
    plain array becomes module state."""

    shared_bias = True  # one bias for every layer

    def __init__(self, *, num_heads: int, bidirectional: bool = False):
        self.num_heads, self.bidirectional = num_heads, bidirectional

    def bias(self, q_pos, k_pos, *, layer: int, q=None, k=None, logits=None):
        slopes = alibi_slopes(self.num_heads)  # [H]
        return alibi_bias(q_pos, k_pos, slopes, bidirectional=self.bidirectional)  # [B,H,T,S]
