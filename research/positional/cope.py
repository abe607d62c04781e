"""CoPE, contextual position encoding (Golovneva et al. 2024, "Contextual Position Encoding: Learning to Count
What's Important", arXiv 2405.18719).

Equation: positions are counts of the keys a query's gates select, and a learned table is read at those counts,
    g_ij = σ(q_i · k_j / sqrt(D)),         p_ij = Σ_{t=j..i} g_it  (fractional, in [0, i - j + 1])
    e[p] = (p - ⌊p⌋) e[⌈p⌉] + (1 - p + ⌊p⌋) e[⌊p⌋],     e in R^{npos x D}, p clamped to npos - 1
    logits_h(i, j) = q_i · (k_j + e[p_ij]) / sqrt(D) = q_i · k_j / sqrt(D) + q_i · e[p_ij] / sqrt(D)
computed as in the paper by interpolating z_i[n] = q_i · e[n] for integer n, not e itself.

Hooks: `bias` only; causal only. `relative = True`: position values are ignored; the keys between j and i are
selected by sequence order (the queries being the last T of the S keys, as in attention's causal mask), and what
is counted is content. Position samplers therefore change nothing.

Conventions / deviations (checked against the official code, facebookresearch/RAM projects/cope):
- Scale: the paper writes σ(q_i · k_j) and q_i · e[p]; its code computes the gates from the scaled logits
  σ(q·k / sqrt(D)) and adds q·e[p] *before* dividing by sqrt(D) (the default, not `--cope-nodiv`). The bias
  returned here is therefore q_i · e[p_ij] / sqrt(D), added after the attention's own 1/sqrt(D).
- The gates use q and k as the hook receives them (after any rotation of a composite scheme); under grouped-query
  attention head h reads kv head h // (H/K). Inside the model they are attention's own logits (the hook's
  `logits=`; under bfloat16 training, at the precision of attention's q·k), as in the official code, which
  computes the gates from the attention logits; so q·k is computed and differentiated once. The reverse cumulative sum runs over visible keys only (by
  index, like attention's mask: padding slots that repeat a position never count), as the code multiplies the
  gates by the mask.
- One table [npos, D] per layer, shared by all heads (the code's `pos_emb` [1, D, npos], `--cope-shared` off);
  npos defaults to the training length + 1 (the code's block_size + 1: position 0 .. T are possible). Longer
  contexts clamp p to npos - 1.
- Speed (not maths): on the CPU the gates, counts and interpolation run as one fused kernel (`cope_cpu.cc`, built
  on first use, research/runtime/native.py) with its own backward, because XLA runs them as separate passes over
  [B,H,T,S] arrays, among them a gather and a scatter-add that run element by element. Its backward recomputes the
  gates and counts from the logits instead of reading them back from memory (cheaper than the memory traffic;
  measurements in docs/performance_log.md).
  `counted_bias_jnp` is the same computation as XLA ops, run on other platforms, with RESEARCH_NATIVE=0 or without
  a C++ compiler; tests/test_native.py checks the two against each other and against float64 equations.
- Init: N(0, 0.02). The official code initialises the table to zeros, which makes CoPE a no-op until the first
  update (and fails the project's no-silent-no-op contract test); small nonzero values avoid that.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding, causal_mask_of
from research.runtime import native


def gate_logits(q: jax.Array, k: jax.Array) -> jax.Array:
    """q_i · k_j / sqrt(D) for q [B,T,H,D], k [B,S,K,D] -> float32 [B,H,T,S]; head h reads kv head h // (H/K)."""
    q, k = q.astype(jnp.float32), k.astype(jnp.float32)
    k = jnp.repeat(k, q.shape[2] // k.shape[2], axis=2)  # [B,S,H,D]
    return jnp.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.shape[-1])


def cope_positions(logits: jax.Array) -> jax.Array:
    """p_ij = Σ_{j <= t <= i'} σ(logits_it) for the gate logits [...,T,S] (`gate_logits`, or attention's own) ->
    [...,T,S], where query i is key i' = i + S - T (the queries are the last T keys; attention's causal mask, by
    index). Position values are never read."""
    gates = jax.nn.sigmoid(logits.astype(jnp.float32))
    visible = causal_mask_of(*logits.shape[-2:])[0, 0]  # [T,S]
    return jax.lax.cumsum(jnp.where(visible, gates, 0.0), axis=logits.ndim - 1, reverse=True)  # [...,T,S]


def interpolate_logits(z: jax.Array, positions: jax.Array) -> jax.Array:
    """z at fractional positions by linear interpolation of the neighbouring integers: z [...,N], p [...,S] -> [...,S].

    Positions must lie in [0, N - 1]; the weight p - ⌊p⌋ carries the gradient to p.

    Computed as z[⌊p⌋] + (p - ⌊p⌋) (z[⌊p⌋ + 1] - z[⌊p⌋]), i.e. the same (1 - w) z[⌊p⌋] + w z[⌈p⌉] (w = 0 when p is
    an integer, so the neighbour past N - 1 is never read with weight). For speed, one gather of (value, step)
    pairs at flat row offsets: take_along_axis would build an index tuple per element and gather twice, and the
    backward pass would scatter twice.
    """
    n, s = z.shape[-1], positions.shape[-1]
    lead = jnp.broadcast_shapes(z.shape[:-1], positions.shape[:-1])
    z = jnp.broadcast_to(z, (*lead, n)).reshape(-1, n)  # [R,N]
    p = jnp.broadcast_to(positions, (*lead, s)).reshape(-1, s)  # [R,S]
    lo = jnp.floor(p)
    step = jnp.concatenate(
        [z[:, 1:] - z[:, :-1], jnp.zeros_like(z[:, :1])], axis=1
    )  # z[n+1] - z[n], 0 at N-1
    pairs = jnp.stack([z, step], axis=-1).reshape(-1, 2)  # [R*N, 2]
    flat = lo.astype(jnp.int32) + n * jnp.arange(z.shape[0], dtype=jnp.int32)[:, None]  # [R,S]
    picked = pairs.at[flat].get(mode="promise_in_bounds")  # [R,S,2]
    return (picked[..., 0] + (p - lo) * picked[..., 1]).reshape(*lead, s)


def counted_bias(logits: jax.Array, z: jax.Array, scale: float) -> jax.Array:
    """scale · z interpolated at the clamped counts min(p_ij, N - 1), for the gate logits [...,T,S] and z [...,T,N]
    -> float32 [...,T,S].

    On the CPU, one fused kernel (`cope_cpu.cc`, built on first use by research/runtime/native.py) computes the gates,
    their reverse cumulative sum and the interpolation row by row, and its own backward. Elsewhere, or when the
    kernel cannot be built, `counted_bias_jnp`: the same equations as XLA ops. Tested equal, values and gradients.
    """
    logits, z = logits.astype(jnp.float32), z.astype(jnp.float32)
    if not native.load(_KERNEL, _TARGETS):
        return counted_bias_jnp(logits, z, scale)
    return jax.lax.platform_dependent(
        logits,
        z,
        cpu=functools.partial(_counted_bias_cpu, scale),
        default=functools.partial(counted_bias_jnp, scale=scale),
    )


def counted_bias_jnp(logits: jax.Array, z: jax.Array, scale: float) -> jax.Array:
    """`counted_bias` as XLA ops (any platform)."""
    positions = jnp.minimum(cope_positions(logits), z.shape[-1] - 1)
    return interpolate_logits(z, positions) * scale


_KERNEL = Path(__file__).with_name("cope_cpu.cc")
_TARGETS = ("research_cope_forward", "research_cope_backward", "research_cope_counts")


_forward = native.rowwise(_TARGETS[0], (0,), "... t s, ... t n -> ... t s", ("t", "s", "n"))
"""(logits [...,T,S], z [...,T,N]) -> (bias [...,T,S],)."""
_backward = native.rowwise(
    _TARGETS[1], (0, 2), "... t s, ... t s, ... t n -> ... t s, ... t n", ("t", "s", "n")
)
"""(d bias, logits, z) -> d logits [...,T,S], d z [...,T,N]; gates and counts recomputed from the logits."""
_counts = native.rowwise(_TARGETS[2], (0, 0), "... t s, ... t n -> ... t s, ... t s", ("t", "s", "n"))
"""(logits, z) -> gates, clamped counts [...,T,S], as both passes compute them (for tests)."""


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _counted_bias_cpu(scale: float, logits: jax.Array, z: jax.Array) -> jax.Array:
    return _counted_bias_cpu_fwd(scale, logits, z)[0]


def _counted_bias_cpu_fwd(scale, logits, z):
    # The residuals are the inputs: the backward recomputes gates and counts row by row (in cache) from the
    # logits: writing them out [...,T,S] twice and reading them back costs more than the recomputation.
    (bias,) = _forward((("scale", np.float32(scale)),), logits, z)
    return bias, (logits, z)


def _counted_bias_cpu_bwd(scale, residuals, d):
    return _backward((("scale", np.float32(scale)),), d, *residuals)  # d logits, d z


_counted_bias_cpu.defvjp(_counted_bias_cpu_fwd, _counted_bias_cpu_bwd)


def cope_bias(
    q: jax.Array,
    k: jax.Array,
    table: jax.Array,
    logits: jax.Array | None = None,
) -> jax.Array:
    """q_i · e[p_ij] / sqrt(D) for q [B,T,H,D] (the last T of the S keys), k [B,S,K,D], table e [npos,D] -> float32
    [B,H,T,S]. `logits`: q·k / sqrt(D) [B,H,T,S] when the caller has them (attention's own); from q and k
    otherwise."""
    table = table[: k.shape[1] + 1]  # p_ij <= i - j + 1 <= S: larger counts are never read
    logits = gate_logits(q, k) if logits is None else logits
    qh = jnp.transpose(q.astype(jnp.float32), (0, 2, 1, 3))  # [B,H,T,D]; 2-D matmul, as in model.layers.Dense
    b, h, t, d = qh.shape
    z = (qh.reshape(-1, d) @ table.T).reshape(b, h, t, -1)  # [B,H,T,npos], q_i · e[n]
    return counted_bias(logits, z, 1 / math.sqrt(d))  # [B,H,T,S]


@POSITIONAL.register("cope")
@dataclasses.dataclass(frozen=True, kw_only=True)
class CoPEConfig(PositionalConfig):
    """Content-gated counts of the keys between j and i, read from a learned per-layer table; causal only."""

    npos: int | None = None
    """Rows of the table (counts 0 .. npos-1; larger counts clamp); None = the training length + 1."""
    init_stddev: float = 0.02
    """Standard deviation of the normal init of the table (the official code uses zeros)."""

    def validate(self, dims: Dims) -> None:
        npos = dims.max_len + 1 if self.npos is None else self.npos
        if npos < 2:
            raise ValueError(f"cope.npos: expected >= 2 (None = training length + 1), got {npos}")
        if self.init_stddev < 0:
            raise ValueError(f"cope.init_stddev: expected >= 0, got {self.init_stddev}")

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        npos = dims.max_len + 1 if self.npos is None else self.npos
        return CoPE(npos, dims, init_stddev=self.init_stddev, rngs=rngs)


class CoPE(PositionalEncoding):
    """The tables e [L,npos,D] are an nnx.Param; needs q and k in the `bias` call."""

    def __init__(self, npos: int, dims: Dims, *, init_stddev: float, rngs: nnx.Rngs):
        init = nnx.initializers.normal(stddev=init_stddev)
        self.table = nnx.Param(init(rngs.params(), (dims.num_layers, npos, dims.head_dim), jnp.float32))

    def bias(self, q_pos, k_pos, *, layer: int, q=None, k=None, logits=None):
        if q is None or k is None:
            raise ValueError("cope: the bias hook needs q and k (the gates are q·k)")
        return cope_bias(q, k, self.table[...][layer], logits)  # [B,H,T,S]
