"""FIRE, functional interpolation for relative positions (Li et al. 2023, "Functional Interpolation for Relative
Positions Improves Long Context Transformers", ICLR 2024, arXiv 2310.04418).

Equation: a small MLP of the relative distance, progressively normalised by the query position,
    logits_h(i, j) = q_i · k_j / sqrt(D) + f_θ( ψ(i - j) / ψ(max(i, L)) )_h,     ψ(x) = ln(|c x| + 1)
    f_θ: 1 -> 32 (ReLU) -> H
c > 0 amplifies short distances before the log; L = |L_mult · L0| is a learned threshold so that short sequences
are not over-normalised. For i >= L the input lies in [0, 1] whatever the length (the "interpolation").

Hooks: `bias` only. `relative = False`: the normaliser ψ(max(i, L)) reads the query's absolute position, so the
bias is shift-invariant only while every query position is below L.

Conventions / deviations:
- Follows the public PyTorch implementation that cites the paper (e.g. mcleish7/arithmetic, `FIRE`): c init
  0.1, L = |L_mult · L0| with L_mult learned (init 1) and L0 fixed, eps = 1e-6 added to the normaliser, ReLU MLP
  with PyTorch's default nn.Linear init U(±1/sqrt(fan_in)) for weights and biases.
- L0 defaults to the training length (dims.max_len); the reference code's constant is 512 (`init_L=512`).
- One FIRE (c, L_mult, MLP) per layer, as the paper learns a bias per layer.
- Positions are taken as they are (i = q_pos); with shifted or packed positions the normaliser sees those values.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding


def fire_psi(x: jax.Array, c: jax.Array) -> jax.Array:
    """ψ(x) = ln(|c x| + 1), elementwise."""
    return jnp.log1p(jnp.abs(c * x))


def fire_normalized_distance(
    q_pos: jax.Array, k_pos: jax.Array, c: jax.Array, threshold: jax.Array, eps: float = 1e-6
) -> jax.Array:
    """ψ(i - j) / (ψ(max(i, L)) + eps) for q_pos [B,T], k_pos [B,S] -> float32 [B,T,S]."""
    q = q_pos.astype(jnp.float32)
    rel = q[:, :, None] - k_pos.astype(jnp.float32)[:, None, :]  # [B,T,S]
    normalizer = fire_psi(jnp.maximum(q, threshold), c) + eps  # [B,T]
    return fire_psi(rel, c) / normalizer[:, :, None]  # [B,T,S]


def fire_mlp(x: jax.Array, w1: jax.Array, b1: jax.Array, w2: jax.Array, b2: jax.Array) -> jax.Array:
    """relu(x w1 + b1) w2 + b2 for scalars x [...], w1 [W], b1 [W], w2 [W,H], b2 [H] -> head-major [H, ...].

    Run feature-major on the flattened inputs ([W, N] hidden units; both layers are matmuls, so every gradient,
    x's included, is a matmul too): the output comes out head-major, and no [N, W] or [N, H] array is transposed
    or reduced over its long axis, which XLA's CPU backend does slowly.
    """
    flat = x.reshape(1, -1)  # [1,N]
    hidden = jax.nn.relu(w1[:, None] @ flat + b1[:, None])  # [W,N]
    return (w2.T @ hidden + b2[:, None]).reshape(-1, *x.shape)  # [H, ...]


def fire_bias(q_pos, k_pos, c, threshold, w1, b1, w2, b2, eps: float = 1e-6) -> jax.Array:
    """FIRE bias for q_pos [B,T], k_pos [B,S] and one layer's parameters -> float32 [B,H,T,S]."""
    x = fire_normalized_distance(q_pos, k_pos, c, threshold, eps)  # [B,T,S]
    return jnp.swapaxes(fire_mlp(x, w1, b1, w2, b2), 0, 1)  # [H,B,T,S] -> [B,H,T,S]


@POSITIONAL.register("fire")
@dataclasses.dataclass(frozen=True, kw_only=True)
class FireConfig(PositionalConfig):
    """A per-layer MLP of the log-distance, normalised by the log of the query position (at least L)."""

    relative = False

    mlp_width: int = 32
    """Hidden units of the 1 -> W -> H MLP."""
    init_c: float = 0.1
    """Initial c in ψ(x) = ln(|c x| + 1); larger = more resolution for short distances."""
    init_L: float | None = None
    """L0, the initial threshold below which positions are not normalised; None = the training length."""
    eps: float = 1e-6
    """Added to the normaliser ψ(max(i, L)) (zero at i = L = 0 otherwise)."""

    def validate(self, dims: Dims) -> None:
        if self.mlp_width < 1:
            raise ValueError(f"fire.mlp_width: expected >= 1, got {self.mlp_width}")
        if self.init_c <= 0:
            raise ValueError(f"fire.init_c: expected > 0, got {self.init_c}")
        init_l = dims.max_len if self.init_L is None else self.init_L
        if init_l <= 0:
            raise ValueError(f"fire.init_L: expected > 0 (None = the training length), got {init_l}")
        if self.eps <= 0:
            raise ValueError(f"fire.eps: expected > 0, got {self.eps}")

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        init_l = float(dims.max_len if self.init_L is None else self.init_L)
        return Fire(self, init_l, num_heads=dims.num_heads, num_layers=dims.num_layers, rngs=rngs)


def _torch_linear_init(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


class Fire(PositionalEncoding):
    """Per-layer c, L_mult [L] and MLP weights [L,...] as nnx.Param; L0 is a constant."""

    def __init__(self, config: FireConfig, init_l: float, *, num_heads: int, num_layers: int, rngs: nnx.Rngs):
        n, w, h = num_layers, config.mlp_width, num_heads
        self.init_l, self.eps = init_l, config.eps
        self.c = nnx.Param(jnp.full((n,), config.init_c, jnp.float32))  # [L]
        self.l_mult = nnx.Param(jnp.ones((n,), jnp.float32))  # [L]
        self.w1 = nnx.Param(_torch_linear_init(rngs.params(), (n, w), 1))  # [L,W]
        self.b1 = nnx.Param(_torch_linear_init(rngs.params(), (n, w), 1))  # [L,W]
        self.w2 = nnx.Param(_torch_linear_init(rngs.params(), (n, w, h), w))  # [L,W,H]
        self.b2 = nnx.Param(_torch_linear_init(rngs.params(), (n, h), w))  # [L,H]

    def bias(self, q_pos, k_pos, *, layer: int, q=None, k=None, logits=None):
        threshold = jnp.abs(self.l_mult[...][layer] * self.init_l)
        weights = (self.w1, self.b1, self.w2, self.b2)
        w1, b1, w2, b2 = (p[...][layer] for p in weights)
        return fire_bias(q_pos, k_pos, self.c[...][layer], threshold, w1, b1, w2, b2, self.eps)  # [B,H,T,S]
