"""Data-dependent ALiBi: the forget gate of the Forgetting Transformer (Lin et al. 2025, "Forgetting Transformer:
Softmax Attention with a Forget Gate", ICLR 2025, arXiv 2503.02130).

Equation: a scalar forget gate per head and token, whose log-sums decay the logits like a learned, content-aware
ALiBi,
    f_t = ln σ(w_h · x_t + b_h) <= 0,     F_i = Σ_{t <= i} f_t
    logits_h(i, j) = q_i · k_j / sqrt(D) + Σ_{t=j+1..i} f_t = q_i · k_j / sqrt(D) + F_i - F_j      (j <= i)
With σ ≡ e^(-m_h) (a constant gate) this is exactly ALiBi with slope m_h.

Hooks: `bias` only. `relative = True`: positions enter only through order comparisons k_pos[t] <= q_pos[i]
(which keys lie between j and i), unchanged by a common shift; the gates are content-dependent. Position values
are otherwise ignored, so position samplers change nothing but order.

Conventions / deviations:
- The hook sees q and k, not x. The gate is computed from the key, f_t = ln σ(w_h · k_t + b_h): since
  k_t = W_k x_t, w_h · k_t = (W_k^T w_h) · x_t is FoX's gate restricted to the row space of W_k (a D-dim
  subspace of the E-dim input, per kv head). Under grouped-query attention head h reads kv head h // (H/K).
  In a composite scheme k is the key after any rotation.
- Init as the FoX code's default data-dependent gate (`fgate_type="full"`): w ~ N(0, 0.02), b = 0, so σ ≈ 1/2 and
  f ≈ -0.69 per token at init (a strong recency prior). FoX's special bias init (decay times) applies only to its
  data-independent gates; `bias_init` here sets b (e.g. +3..5 for σ ≈ 0.95..0.99, a slow initial decay).
- Self-attention only: query i's own prefix sum F_i is read from the keys, as the sum of the gates of every key
  at or before it (F over keys with k_pos <= q_pos[i]); T != S works when the queries are among the keys (cached
  decoding: the queries are the last T keys). Keys must be sorted by position, as every sampler makes them.
- Future keys (j > i) get 0; the causal mask removes them. F is a float32 running sum, so at very long lengths
  F_i - F_j loses absolute precision ~ 1e-7 |F_i| (as in FoX's own kernels).
- One gate (w, b) per head and per layer.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding


def forget_log_gates(k: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """f_t = ln σ(w_h · k_t + b_h) for k [B,S,K,D], w [H,D], b [H] -> float32 [B,S,H] (<= 0)."""
    # [B,S,H,D]: head h reads kv head h // (H/K)
    k = jnp.repeat(k.astype(jnp.float32), w.shape[0] // k.shape[2], axis=2)
    # w_h · k_t elementwise and summed over D: as a dot, XLA transposed all of k per head and query block.
    return jax.nn.log_sigmoid(jnp.sum(k * w, axis=-1) + b)  # [B,S,H]


def forgetting_bias(q_pos: jax.Array, k_pos: jax.Array, log_gates: jax.Array) -> jax.Array:
    """Σ_{t=j+1..i} f_t for q_pos [B,T], k_pos [B,S] (sorted), f [B,S,H] -> float32 [B,H,T,S]; 0 for j > i."""
    b, _, h = log_gates.shape
    zero = jnp.zeros((b, 1, h), jnp.float32)
    # prefix[n] = Σ_{t<n} f_t, so F_j = prefix[j + 1]
    prefix = jnp.concatenate([zero, jnp.cumsum(log_gates, axis=1)], axis=1)  # [B,S+1,H]
    visible = k_pos[:, None, :] <= q_pos[:, :, None]  # [B,T,S]
    count = visible.sum(-1)  # [B,T]: keys at or before query i, so F_i = prefix[count]
    f_query = jnp.take_along_axis(prefix, count[:, :, None], axis=1)  # [B,T,H]
    f_key = prefix[:, 1:]  # [B,S,H], F_j
    bias = jnp.transpose(f_query, (0, 2, 1))[:, :, :, None] - jnp.transpose(f_key, (0, 2, 1))[:, :, None, :]
    return jnp.where(visible[:, None], bias, 0.0)  # [B,H,T,S]


@POSITIONAL.register("data_dependent_alibi")
@dataclasses.dataclass(frozen=True, kw_only=True)
class DataDependentALiBiConfig(PositionalConfig):
    """FoX's forget gate as a bias: per head, a learned gate on each key's content, summed over the gap i - j."""

    init_stddev: float = 0.02
    """Standard deviation of the normal init of the gate weights w [H,D]."""
    bias_init: float = 0.0
    """Initial gate bias b; 0 = FoX's default (σ = 1/2 at init); larger = slower initial forgetting."""

    def validate(self, dims: Dims) -> None:
        if self.init_stddev < 0:
            raise ValueError(f"data_dependent_alibi.init_stddev: expected >= 0, got {self.init_stddev}")
        if dims.num_heads < 1 or dims.head_dim < 1:
            raise ValueError(
                f"data_dependent_alibi: expected num_heads, head_dim >= 1, got {dims.num_heads}, {dims.head_dim}"
            )

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        return DataDependentALiBi(self, dims, rngs=rngs)


class DataDependentALiBi(PositionalEncoding):
    """Gate weights w [L,H,D] and biases b [L,H] as nnx.Param; needs k in the `bias` call."""

    def __init__(self, config: DataDependentALiBiConfig, dims: Dims, *, rngs: nnx.Rngs):
        init = nnx.initializers.normal(stddev=config.init_stddev)
        shape = (dims.num_layers, dims.num_heads)
        self.w = nnx.Param(init(rngs.params(), (*shape, dims.head_dim), jnp.float32))  # [L,H,D]
        self.b = nnx.Param(jnp.full(shape, config.bias_init, jnp.float32))  # [L,H]

    def bias(self, q_pos, k_pos, *, layer: int, q=None, k=None, logits=None):
        if k is None:
            raise ValueError("data_dependent_alibi: the bias hook needs k (the gate reads the keys)")
        log_gates = forget_log_gates(k, self.w[...][layer], self.b[...][layer])  # [B,S,H]
        return forgetting_bias(q_pos, k_pos, log_gates)  # [B,H,T,S]
