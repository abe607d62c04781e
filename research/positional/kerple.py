"""KERPLE, kernelized relative positional embedding (Chi et al. 2022, "KERPLE: Kernelized Relative Positional
Embedding for Length Extrapolation", arXiv 2205.09921; the power and logarithmic variants).

Equation: a conditionally positive definite kernel of the distance, with two learned positive scalars per head,
    power: logits_h(i, j) = q_i · k_j / sqrt(D) - r1_h |i - j|^r2_h,         r1 > 0, 0 < r2 <= 2
    log:   logits_h(i, j) = q_i · k_j / sqrt(D) - r1_h ln(1 + r2_h |i - j|),   r1, r2 > 0

Hooks: `bias` only (`relative = True`).

Conventions / deviations:
- Constraints: the reference code (chijames/KERPLE, on gpt-neox) clamps the stored parameters in place before each
  forward, to >= eps = 0.01 (and r2 <= 2 for power). Here the stored value is left alone and the forward uses a
  straight-through clamp: the value is clip(raw, eps, hi) exactly, the gradient passes as if unclamped, so a
  parameter pushed past a bound can come back (a plain clip would freeze it at zero gradient).
- Init as the reference code: log r1 ~ U(0, 2), r2 ~ U(0, 1); power r1 ~ U(0, 1), r2 ~ U(0, 2) (its bias_p is the
  exponent / log scale, bias_a the slope).
- One (r1, r2) pair per head and per layer (gpt-neox builds one module per attention layer).
- Uses |i - j| (symmetric); the reference's lower-triangular i - j is equal under a causal mask.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding


def straight_through_clip(x: jax.Array, low: float, high: float | None = None) -> jax.Array:
    """clip(x, low, high) in value, identity in gradient."""
    return x + jax.lax.stop_gradient(jnp.clip(x, low, high) - x)


def _distance(q_pos: jax.Array, k_pos: jax.Array) -> jax.Array:
    return jnp.abs(q_pos[:, :, None] - k_pos[:, None, :]).astype(jnp.float32)[:, None]  # [B,1,T,S]


def kerple_log_bias(q_pos: jax.Array, k_pos: jax.Array, r1: jax.Array, r2: jax.Array) -> jax.Array:
    """-r1_h ln(1 + r2_h |i - j|) for q_pos [B,T], k_pos [B,S], r1, r2 [H] -> float32 [B,H,T,S]."""
    r1, r2 = r1[None, :, None, None], r2[None, :, None, None]  # [1,H,1,1]
    return -r1 * jnp.log1p(r2 * _distance(q_pos, k_pos))


def kerple_power_bias(q_pos: jax.Array, k_pos: jax.Array, r1: jax.Array, r2: jax.Array) -> jax.Array:
    """-r1_h |i - j|^r2_h for q_pos [B,T], k_pos [B,S], r1, r2 [H] -> float32 [B,H,T,S]."""
    r1, r2 = r1[None, :, None, None], r2[None, :, None, None]  # [1,H,1,1]
    dist = _distance(q_pos, k_pos)  # [B,1,T,S]
    # exp(r2 ln d) with d = 0 routed around the log: 0^r2 = 0, and its gradient in r2 stays finite (not 0 * -inf).
    safe = jnp.where(dist > 0, dist, 1.0)
    return -r1 * jnp.where(dist > 0, jnp.exp(r2 * jnp.log(safe)), 0.0)


# variant -> (bias function, init upper bounds (r1, r2) of U(0, hi), upper bound of r2 or None)
KERNELS = {
    "log": (kerple_log_bias, (2.0, 1.0), None),
    "power": (kerple_power_bias, (1.0, 2.0), 2.0),
}


@POSITIONAL.register("kerple")
@dataclasses.dataclass(frozen=True, kw_only=True)
class KerpleConfig(PositionalConfig):
    """A learned, positive, per-head decaying kernel of |i - j|: logarithmic or power."""

    variant: Literal["log", "power"] = "log"
    """log: -r1 ln(1 + r2 |i-j|) (the paper's best for extrapolation); power: -r1 |i-j|^r2 with r2 in (0, 2]."""
    eps: float = 0.01
    """Lower bound of r1 and r2 (the reference clamps at 1e-2); keeps both strictly positive."""

    def validate(self, dims: Dims) -> None:
        if self.variant not in KERNELS:
            raise ValueError(f"kerple.variant: expected one of {sorted(KERNELS)}, got {self.variant!r}")
        if not 0 < self.eps < 1:
            raise ValueError(f"kerple.eps: expected 0 < eps < 1, got {self.eps}")
        if dims.num_heads < 1 or dims.num_layers < 1:
            raise ValueError(
                f"kerple: expected num_heads, num_layers >= 1, got {dims.num_heads}, {dims.num_layers}"
            )

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        return Kerple(self, num_heads=dims.num_heads, num_layers=dims.num_layers, rngs=rngs)


class Kerple(PositionalEncoding):
    """Raw parameters r1, r2 are nnx.Param [L,H]; the forward reads them through the straight-through clamp."""

    def __init__(self, config: KerpleConfig, *, num_heads: int, num_layers: int, rngs: nnx.Rngs):
        self.variant, self.eps = config.variant, config.eps
        _, (hi1, hi2), _ = KERNELS[config.variant]
        shape = (num_layers, num_heads)
        self.r1 = nnx.Param(jax.random.uniform(rngs.params(), shape, jnp.float32, 0.0, hi1))  # [L,H]
        self.r2 = nnx.Param(jax.random.uniform(rngs.params(), shape, jnp.float32, 0.0, hi2))  # [L,H]

    def kernel_params(self, layer: int) -> tuple[jax.Array, jax.Array]:
        """Effective (r1, r2) [H] of `layer`, within the paper's bounds."""
        r2_max = KERNELS[self.variant][2]
        r1 = straight_through_clip(self.r1[...][layer], self.eps)
        return r1, straight_through_clip(self.r2[...][layer], self.eps, r2_max)

    def bias(self, q_pos, k_pos, *, layer: int, q=None, k=None, logits=None):
        return KERNELS[self.variant][0](q_pos, k_pos, *self.kernel_params(layer))  # [B,H,T,S]
