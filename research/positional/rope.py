"""Rotary position embedding, RoPE (Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
Embedding", arXiv 2104.09864, §3: the rotation R^d_{Theta,m} and its element-wise form).

Equation: each pair (a, b) of the first R = rot_dim features of a query/key head vector is rotated by the angle
p * theta_k of its position p,
    theta_k = base^(-2k/R),   k = 0 .. R/2 - 1
    (a, b) -> c (a cos(p theta_k) - b sin(p theta_k),  b cos(p theta_k) + a sin(p theta_k))
so that <R_m q, R_n k> depends on m - n only. c = 1 except for context scaling methods with an attention factor
(YaRN, LongRoPE), which multiply cos and sin by it.

Hooks: `rotate` only (`relative = True`). No parameters, with or without scaling: a model trained with plain RoPE
can be evaluated with `scaling` switched on.

Conventions / deviations:
- Pairing. Default is half-split (GPT-NeoX / Hugging Face Llama `rotate_half`): feature k pairs with k + R/2.
  `interleaved=True` gives the RoFormer / GPT-J / Meta layout: feature 2k pairs with 2k + 1. The two agree up to
  a fixed permutation of the q/k projection rows; loading weights trained with the other one fails silently.
- Partial rotary (GPT-NeoX `rotary_pct`): only the first R = int(fraction * D) features, rounded down to even,
  rotate (in either pairing, within that slice); the other D - R pass through unchanged and unscaled.
- Context scaling (`scaling`, a Spec resolved through ROPE_SCALING in rope_scaling.py) changes theta_k and c.
  Methods that depend on the current length (dynamic_ntk, longrope) get the call's static length
  max(T, S) = the key length, never the position values, so one compiled function serves every batch; Hugging Face
  instead uses the largest position id seen.
- Angles, cos and sin are computed in float32 even for bf16 activations (bf16 holds integers exactly only up to
  256), and the rotated result is cast back to the input dtype.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from research.config import parse_spec, resolve_spec
from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding
from research.positional.rope_scaling import ROPE_SCALING, RoPEScaling


def rope_parameters(
    head_dim: int,
    base: float = 10000.0,
    scaling: RoPEScaling | dict | None = None,
    *,
    length: int | None = None,
) -> tuple[jax.Array, float]:
    """(inverse frequencies float32 [head_dim/2], factor on cos and sin) for a rotary dim `head_dim`, optionally
    context-scaled (`scaling`: a ROPE_SCALING config or its Spec) at static sequence length `length`."""
    if head_dim % 2 or head_dim < 2:
        raise ValueError(f"rope_parameters: expected an even head_dim >= 2, got {head_dim}")
    if isinstance(scaling, (dict, str)):
        scaling = resolve_spec(ROPE_SCALING, scaling, field="scaling")
    scaling = RoPEScaling() if scaling is None else scaling  # the base class is plain RoPE
    scaling.validate(head_dim)
    inv_freq, factor = scaling.parameters(head_dim, base, length)
    return jnp.asarray(inv_freq, jnp.float32), factor  # [D/2]


def rope_frequencies(
    head_dim: int, base: float = 10000.0, scaling=None, *, length: int | None = None
) -> jax.Array:
    """Inverse frequencies theta_k = base^(-2k/head_dim) (or their context-scaled form) -> float32 [head_dim/2]."""
    return rope_parameters(head_dim, base, scaling, length=length)[0]


def apply_rope(
    x: jax.Array,
    positions: jax.Array,
    inv_freq: jax.Array,
    interleaved: bool = False,
    *,
    scale: float | jax.Array = 1.0,
    rot_dim: int | None = None,
) -> jax.Array:
    """Rotate the first rot_dim (default all D) features of x [B,T,H,D] by positions [B,T] with inv_freq
    [rot_dim/2]; `scale` (a number or [B,T,rot_dim/2]) multiplies cos and sin. Returns x's shape and dtype."""
    rot_dim = x.shape[-1] if rot_dim is None else rot_dim
    if 2 * inv_freq.shape[-1] != rot_dim or rot_dim > x.shape[-1]:
        raise ValueError(
            f"apply_rope: expected rot_dim = 2 * {inv_freq.shape[-1]} frequencies <= {x.shape[-1]} features, "
            f"got rot_dim={rot_dim}"
        )
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B,T,R/2]
    scale = jnp.asarray(scale, jnp.float32)
    cos = (jnp.cos(angles) * scale)[..., None, :]  # [B,T,1,R/2], broadcast over heads
    sin = (jnp.sin(angles) * scale)[..., None, :]
    xf, rest = x[..., :rot_dim].astype(jnp.float32), x[..., rot_dim:]  # [B,T,H,R], [B,T,H,D-R]
    if interleaved:  # pairs (2k, 2k+1)
        a, b = xf[..., 0::2], xf[..., 1::2]  # [B,T,H,R/2]
        out = jnp.stack([a * cos - b * sin, b * cos + a * sin], axis=-1).reshape(xf.shape)
    else:  # pairs (k, k + R/2)
        a, b = jnp.split(xf, 2, axis=-1)  # [B,T,H,R/2]
        out = jnp.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
    return jnp.concatenate([out.astype(x.dtype), rest], axis=-1)  # [B,T,H,D]


@POSITIONAL.register("rope")
@dataclasses.dataclass(frozen=True, kw_only=True)
class RoPEConfig(PositionalConfig):
    """Rotate queries and keys by their positions in every layer; no parameters."""

    base: float = 10000.0
    """Frequency base: the slowest pair turns about once every 2*pi*base positions (Llama 3 uses 500000)."""
    interleaved: bool = False
    """False: half-split pairs (k, k+R/2) as in GPT-NeoX/Llama; True: adjacent pairs (2k, 2k+1) as in RoFormer."""
    fraction: float = 1.0
    """Share of each head's features that rotate (GPT-NeoX partial rotary uses 0.25); the rest pass through."""
    scaling: dict | None = None
    """Context scaling Spec, e.g. {"name": "yarn", "factor": 4} (rope_scaling.py: linear, ntk, dynamic_ntk, yarn,
    llama3, proportional, longrope); None = plain RoPE. Parameter-free, so it can be switched on at evaluation."""

    def __post_init__(self):
        if (
            self.scaling is not None
        ):  # 'yarn:factor=4' from the command line -> a dict, as config.json stores it
            object.__setattr__(self, "scaling", parse_spec(self.scaling))

    def rot_dim(self, head_dim: int) -> int:
        return int(self.fraction * head_dim) // 2 * 2  # rounded down to even

    def resolved_scaling(self) -> RoPEScaling | None:
        if self.scaling is None:
            return None
        return resolve_spec(ROPE_SCALING, self.scaling, field="model.positional.scaling")

    def validate(self, dims: Dims) -> None:
        if dims.head_dim % 2:
            raise ValueError(f"rope: expected head_dim divisible by 2, got {dims.head_dim}")
        if self.base <= 1.0:
            raise ValueError(f"rope: expected base > 1, got {self.base}")
        rot_dim = self.rot_dim(dims.head_dim)
        if not 0.0 < self.fraction <= 1.0 or rot_dim < 2:
            raise ValueError(
                f"rope.fraction: expected (0, 1] with at least 2 rotated features, got {self.fraction} "
                f"(rot_dim {rot_dim} of head_dim {dims.head_dim})"
            )
        if (scaling := self.resolved_scaling()) is not None:
            scaling.validate(rot_dim)

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        scaling = self.resolved_scaling()
        return RoPE(
            rot_dim=self.rot_dim(dims.head_dim),
            base=self.base,
            interleaved=self.interleaved,
            scaling=None if scaling is None else scaling.bind(dims.max_len),
        )


class RoPE(PositionalEncoding):
    """Applies `apply_rope` to q and k. The frequencies are recomputed per call (constant-folded under jit) rather
    than stored: a plain array attribute would become module state and travel with the parameters."""

    def __init__(self, *, rot_dim: int, base: float, interleaved: bool, scaling: RoPEScaling | None = None):
        self.rot_dim, self.base, self.interleaved, self.scaling = rot_dim, base, interleaved, scaling

    def rotate(self, q, k, q_pos, k_pos, *, layer: int):
        length = max(q_pos.shape[-1], k_pos.shape[-1])  # static: the keys span the whole context
        inv_freq, scale = rope_parameters(self.rot_dim, self.base, self.scaling, length=length)  # [R/2]
        q = apply_rope(q, q_pos, inv_freq, self.interleaved, scale=scale, rot_dim=self.rot_dim)  # [B,T,H,D]
        k = apply_rope(k, k_pos, inv_freq, self.interleaved, scale=scale, rot_dim=self.rot_dim)  # [B,S,K,D]
        return q, k
