"""xPos, extrapolatable position embedding (Sun et al. 2022, "A Length-Extrapolatable Transformer",
arXiv 2212.10554, §3.2-3.3, Eq. 8-9).

Equation: RoPE whose rotation of pair k also scales by zeta_k to the power of the position over gamma, up for
queries and down for keys,
    zeta_k = (2k/D + 0.4) / 1.4,    gamma = scale_base = 512,    k = 0 .. D/2 - 1
    q_n -> R_n q_n * zeta^(+(n - c)/gamma),    k_m -> R_m k_m * zeta^(-(m - c)/gamma)
so pair k of q_n . k_m carries zeta_k^((n - m)/gamma): an exponential decay with distance (zeta_k < 1), strongest
for the fast pairs, on top of RoPE's rotation. Both members of a pair share the scale.

Hooks: `rotate` only (`relative = True`). No parameters.

Conventions / deviations:
- Centring (REFERENCES: "positions centred"). c cancels in q . k, so the result depends on n - m only for any c
  shared by q and k; c only keeps each factor well-conditioned (zeta_0^(n/512) underflows float32 past n ~ 35k).
  torchscale centres on the middle of the current window (-L/2 .. L/2). Here c is per sequence, from the key
  positions: c_b = (min_j k_pos[b,j] + max_j k_pos[b,j]) // 2, so shifted, packed or offset positions stay centred
  too and shifting all positions changes nothing. Consequence: a KV cache must store unscaled keys (or freeze c).
- Causal only: for keys after the query (m > n) the factor grows instead of decaying; use xPos with a causal mask.
- Pairing and frequencies follow the project's RoPE (`rope.py`: half-split by default, theta_k = base^(-2k/D));
  torchscale uses interleaved pairs, available with `interleaved=True`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding
from research.positional.rope import apply_rope, rope_frequencies


def xpos_zeta(head_dim: int) -> jax.Array:
    """Per-pair decay bases zeta_k = (2k/D + 0.4) / 1.4 -> float32 [D/2], in (0.28, 1)."""
    return (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim + 0.4) / 1.4  # [D/2]


def xpos_scale(offsets: jax.Array, head_dim: int, scale_base: float = 512.0) -> jax.Array:
    """zeta_k^(offset / scale_base) for signed float offsets [B,T] -> float32 [B,T,D/2]."""
    return jnp.exp(offsets.astype(jnp.float32)[..., None] / scale_base * jnp.log(xpos_zeta(head_dim)))


@POSITIONAL.register("xpos")
@dataclasses.dataclass(frozen=True, kw_only=True)
class XPosConfig(PositionalConfig):
    """RoPE with a per-pair exponential decay of q . k with distance; no parameters; causal attention only."""

    base: float = 10000.0
    """RoPE frequency base, theta_k = base^(-2k/D)."""
    scale_base: float = 512.0
    """gamma: the decay of pair k over a distance gamma is zeta_k (larger = slower decay)."""
    interleaved: bool = False
    """False: half-split pairs (k, k+D/2); True: adjacent pairs (2k, 2k+1) as in torchscale."""

    def validate(self, dims: Dims) -> None:
        if dims.head_dim % 2:
            raise ValueError(f"xpos: expected head_dim divisible by 2, got {dims.head_dim}")
        if self.base <= 1.0:
            raise ValueError(f"xpos.base: expected > 1, got {self.base}")
        if self.scale_base <= 0:
            raise ValueError(f"xpos.scale_base: expected > 0, got {self.scale_base}")

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        return XPos(
            head_dim=dims.head_dim, base=self.base, scale_base=self.scale_base, interleaved=self.interleaved
        )


class XPos(PositionalEncoding):
    def __init__(self, *, head_dim: int, base: float, scale_base: float, interleaved: bool):
        self.head_dim, self.base, self.scale_base, self.interleaved = head_dim, base, scale_base, interleaved

    def rotate(self, q, k, q_pos, k_pos, *, layer: int):
        centre = (
            k_pos.min(-1, keepdims=True) + k_pos.max(-1, keepdims=True)
        ) // 2  # [B,1], integer: exact offsets
        q_off, k_off = q_pos - centre, k_pos - centre  # [B,T], [B,S]
        inv_freq = rope_frequencies(self.head_dim, self.base)  # [D/2]
        q_scale = xpos_scale(q_off, self.head_dim, self.scale_base)  # [B,T,D/2]
        k_scale = xpos_scale(-k_off, self.head_dim, self.scale_base)  # [B,S,D/2], the inverse scale
        q = apply_rope(q, q_pos, inv_freq, self.interleaved, scale=q_scale)  # [B,T,H,D]
        k = apply_rope(k, k_pos, inv_freq, self.interleaved, scale=k_scale)  # [B,S,K,D]
        return q, k
