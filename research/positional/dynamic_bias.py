"""Dynamic position bias: a per-head bias from a small MLP of the relative distance (Wang et al. 2021,
"CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention", arXiv 2108.00154, "DPB";
the 1-D language-model form of lucidrains' x-transformers `DynamicPositionBias`).

Equation: with δ = i - j and, by default, the signed log distance s(δ) = sign(δ) ln(1 + |δ|),
    logits_h(i, j) = q_i · k_j / sqrt(D) + MLP(s(δ))_h
    MLP: 1 -> W (SiLU) -> [W -> W (SiLU)] x (depth - 1) -> H,  W = 32, depth = 2
A continuous, learned function of the offset: unlike a T5 table it is defined at every distance, including ones
never seen in training.

Hooks: `bias` only (`relative = True`: the input is i - j and nothing else).

Conventions / deviations:
- x-transformers feeds the raw distance by default and the signed log with `log_distance=True`; here the log is
  the default (raw distances grow without bound past the training length and saturate the MLP), and
  `log_distance=False` restores the raw input. No LayerNorm between layers (x-transformers' `norm=False`).
- One MLP shared by all layers, as x-transformers computes the bias once per forward pass.
- The MLP runs on every (i, j) pair ([B,T,S,W] activations), so that shifted, packed or fractional positions
  need no table of distinct distances; at long lengths the activations dominate the memory of this hook.
- Init: PyTorch's default nn.Linear, U(±1/sqrt(fan_in)) for weights and biases, as the reference.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding


def signed_log_distance(rel: jax.Array) -> jax.Array:
    """sign(δ) ln(1 + |δ|), elementwise, float32."""
    rel = rel.astype(jnp.float32)
    return jnp.sign(rel) * jnp.log1p(jnp.abs(rel))


def dynamic_position_mlp(x: jax.Array, layers: list[tuple[jax.Array, jax.Array]]) -> jax.Array:
    """MLP of scalars x [...] through (w [in,out], b [out]) layers, SiLU between them -> head-major [H, ...].

    Run feature-major on the flattened inputs ([W, N] activations): the output comes out head-major, where the
    row-major [N, H] form needed a transpose of a [N, 4]-shaped array forward and backward, which XLA's CPU backend
    does slowly (tens of ms at N = 65536).
    """
    h = x.reshape(1, -1)  # [1,N]
    for w, b in layers[:-1]:
        h = jax.nn.silu(w.T @ h + b[:, None])  # [W,N]
    w, b = layers[-1]
    return (w.T @ h + b[:, None]).reshape(-1, *x.shape)  # [H, ...]


def dynamic_position_bias(
    q_pos: jax.Array, k_pos: jax.Array, layers: list[tuple[jax.Array, jax.Array]], log_distance: bool = True
) -> jax.Array:
    """MLP(s(i - j)) for q_pos [B,T], k_pos [B,S] -> float32 [B,H,T,S]."""
    rel = (q_pos[:, :, None] - k_pos[:, None, :]).astype(jnp.float32)  # [B,T,S]
    x = signed_log_distance(rel) if log_distance else rel
    return jnp.swapaxes(dynamic_position_mlp(x, layers), 0, 1)  # [H,B,T,S] -> [B,H,T,S]


@POSITIONAL.register("dynamic_bias")
@dataclasses.dataclass(frozen=True, kw_only=True)
class DynamicBiasConfig(PositionalConfig):
    """A learned continuous function of i - j (an MLP), one bias per head, shared by all layers."""

    width: int = 32
    """Hidden units of every MLP layer."""
    depth: int = 2
    """Hidden layers (each Linear + SiLU) before the output layer to H heads; x-transformers' default is 2."""
    log_distance: bool = True
    """True: input sign(δ) ln(1 + |δ|); False: the raw distance δ = i - j."""

    def validate(self, dims: Dims) -> None:
        if self.width < 1:
            raise ValueError(f"dynamic_bias.width: expected >= 1, got {self.width}")
        if self.depth < 1:
            raise ValueError(f"dynamic_bias.depth: expected >= 1, got {self.depth}")
        if dims.num_heads < 1:
            raise ValueError(f"dynamic_bias: expected num_heads >= 1, got {dims.num_heads}")

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        return DynamicBias(self, num_heads=dims.num_heads, rngs=rngs)


class DynamicBias(PositionalEncoding):
    """The MLP's weights are nnx.Params in two lists (w [in,out], b [out]); `layer` is ignored."""

    shared_bias = True  # one bias for every layer

    def __init__(self, config: DynamicBiasConfig, *, num_heads: int, rngs: nnx.Rngs):
        self.log_distance = config.log_distance
        sizes = [1] + [config.width] * config.depth + [num_heads]
        ws, bs = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            ws.append(
                nnx.Param(jax.random.uniform(rngs.params(), (fan_in, fan_out), jnp.float32, -bound, bound))
            )
            bs.append(nnx.Param(jax.random.uniform(rngs.params(), (fan_out,), jnp.float32, -bound, bound)))
        self.weights, self.biases = nnx.List(ws), nnx.List(bs)

    def bias(self, q_pos, k_pos, *, layer: int, q=None, k=None, logits=None):
        layers = [(w[...], b[...]) for w, b in zip(self.weights, self.biases)]
        return dynamic_position_bias(q_pos, k_pos, layers, self.log_distance)  # [B,H,T,S]
