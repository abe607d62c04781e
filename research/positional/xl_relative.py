"""Transformer-XL relative positional attention (Dai et al. 2019, "Transformer-XL: Attentive Language Models
Beyond a Fixed-Length Context", arXiv 1901.02860, §3.3).

Equation: the four terms of the relative score, scaled by 1/sqrt(D) as in the reference code,
    score_h(i, j) = [ (q_i + u_h) · k_j  +  (q_i + v_h) · W_R,h R_{i-j} ] / sqrt(D)
    R_δ = [ sin(δ ω) | cos(δ ω) ] in R^{d_R},   ω_k = 10000^(-2k/d_R),  k = 0 .. d_R/2 - 1
with u, v in R^{H x D} and W_R in R^{d_R x H·D} learned.

Hooks (`relative = True`: positions enter only through i - j; the terms are content-dependent):
- `rotate` adds u to the queries, q_i <- q_i + u_h, so attention's own q·k/sqrt(D) is the content terms
  (q_i + u_h)·k_j / sqrt(D), and their backward is attention's (a separate u_h·k_j bias per query block cost a
  [B,S,H] product, transpose and gradient reduction each). Under bfloat16, q_i + u_h is rounded as q is.
- `bias` receives that q_i + u_h and returns the position terms (q_i + v_h)·W_R,h R_{i-j} / sqrt(D), reading
  q_i + v_h as (q_i + u_h) + (v_h - u_h). The total equals the paper's score.

Conventions / deviations:
- R uses the reference code's concatenated [sin | cos] layout (not Vaswani's interleaving) with d_R = d_model by
  default. W_R is per layer (each layer's `r_net`), u and v are shared by all layers (the reference code's
  default, untie_r = False). Init N(0, 0.02) for u, v and W_R (init_std = 0.02).
- R_{i-j} is never materialised for every pair. Integer positions shared by every row ([1,T]) that step evenly
  (checked at run time; every built-in sampler's shared positions do) use the reference code's relative shift:
  W_R R_δ for the distances a causal query can see, one D-wide matmul with q_i + v, then each row read at its own
  offset. Any other positions (per-row, randomized, uneven, fractional) expand (q_i + v) · W_R R_{i-j} with sin/cos
  angle addition into an inner product of query-side and key-side features: exact for arbitrary, shifted or
  fractional positions, O(T S d_R) and no [T,S,d_R] tensor, re-based on each row's first key position so float32
  angles stay small. Both forms give the same values and the same gradients of q, v and W_R (tested) for
  every key a query sees (j <= i + S - T); at the reference shape (d_R = d_model = 4 D) the shift does about 4x
  fewer flops.
- Entries of keys after their query are left unspecified (finite) by the shift: the paper's score there is never
  used under the causal mask, and computing it took the T - 1 negative distances too (28% more of the position
  matmul at the reference shape's query blocks, and a second pad in the shift's backward).
- Segment-level recurrence (the memory of previous segments) is not part of a positional scheme; not implemented.
- Under grouped-query attention, u_h meets kv head h // (H/K).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding


def xl_frequencies(dim: int, base: float = 10000.0) -> jax.Array:
    """ω_k = base^(-2k/d_R), k = 0 .. d_R/2 - 1 -> float32 [d_R/2]."""
    return base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)


def xl_position_bias(
    q: jax.Array,
    q_pos: jax.Array,
    k_pos: jax.Array,
    v: jax.Array,
    w_r: jax.Array,
    base: float = 10000.0,
) -> jax.Array:
    """The position terms (q_i + v)·W_R R_{i-j} / sqrt(D) for q [B,T,H,D], v [H,D], W_R [d_R,H,D].

    -> float32 [B,H,T,S]. Integer positions shared by every row ([1,T], [1,S]) that are evenly spaced take the
    relative shift (`shifted_position_term`), checked at run time; any others the angle-addition form
    (`expanded_position_term`). Both are exact for the keys each query sees (j <= i + S - T); entries after that
    are finite and unspecified (`shifted_position_term`).
    """
    args = (q.astype(jnp.float32), v, q_pos, k_pos, w_r, base)
    integer = jnp.issubdtype(q_pos.dtype, jnp.integer) and jnp.issubdtype(k_pos.dtype, jnp.integer)
    if integer and q_pos.shape[0] == 1 and k_pos.shape[0] == 1:
        shared = evenly_spaced(q_pos[0], k_pos[0])
        position = jax.lax.cond(shared, shifted_position_term, expanded_position_term, *args)
    else:
        position = expanded_position_term(*args)
    return position / math.sqrt(v.shape[-1])


def evenly_spaced(q_pos: jax.Array, k_pos: jax.Array) -> jax.Array:
    """Whether integer keys k_pos [S] step evenly (k_pos[j] = k_pos[0] + c j) and the queries q_pos [T] are the last
    T keys: then q_pos[i] - k_pos[j] = c (S - T + i - j). -> bool scalar."""
    s, t = k_pos.shape[0], q_pos.shape[0]
    if t > s:
        return jnp.bool_(False)
    step = k_pos[1] - k_pos[0] if s > 1 else jnp.zeros((), k_pos.dtype)
    grid = k_pos[0] + step * jnp.arange(s, dtype=k_pos.dtype)
    return jnp.all(k_pos == grid) & jnp.all(q_pos == k_pos[s - t :])


def expanded_position_term(q, v, q_pos, k_pos, w_r, base):
    """(q_i + v)·W_R R_{i-j} for any positions, by angle addition: an inner product of query-side and key-side
    features over d_R. q [B,T,H,D], v [H,D], q_pos [B|1,T], k_pos [B|1,S], W_R [d_R,H,D] -> [B,H,T,S]."""
    # Head-major from here on ([B,H,T,*]): the position matmul then writes [B,H,T,S] without a transpose.
    a = jnp.einsum("bhtd,rhd->bhtr", jnp.swapaxes(q + v, 1, 2), w_r)  # [B,H,T,d_R], W_R^T (q_i + v)
    a_sin, a_cos = jnp.split(a, 2, axis=-1)  # coefficients of sin(δω) and cos(δω), [B,H,T,d_R/2]
    omega = xl_frequencies(w_r.shape[0], base)  # [d_R/2]
    origin = k_pos[:, :1]  # [B,1], a shared offset: i - j unchanged
    ang_q = (q_pos - origin).astype(jnp.float32)[..., None] * omega  # [B,T,d_R/2]
    ang_k = (k_pos - origin).astype(jnp.float32)[..., None] * omega  # [B,S,d_R/2]
    sin_q, cos_q = jnp.sin(ang_q)[:, None], jnp.cos(ang_q)[:, None]  # [B,1,T,d_R/2]
    # a_s sin(x_i - x_j) + a_c cos(x_i - x_j) = cos x_j (a_s sin x_i + a_c cos x_i) + sin x_j (a_c sin x_i - a_s cos x_i)
    with_cos = a_sin * sin_q + a_cos * cos_q  # [B,H,T,d_R/2]
    with_sin = a_cos * sin_q - a_sin * cos_q  # [B,H,T,d_R/2]
    coefficients = jnp.concatenate([with_cos, with_sin], axis=-1)  # [B,H,T,d_R]
    features = jnp.concatenate([jnp.cos(ang_k), jnp.sin(ang_k)], axis=-1)  # [B|1,S,d_R]
    if features.shape[0] == 1:  # keys shared by every row: one [B*H*T, d_R] x [d_R, S] matmul
        return coefficients @ features[0].T  # [B,H,T,S]
    return jnp.einsum("bhtf,bsf->bhts", coefficients, features)  # [B,H,T,S]


def shifted_position_term(q, v, q_pos, k_pos, w_r, base):
    """(q_i + v)·W_R R_{i-j} for evenly spaced shared positions (`evenly_spaced`), with the reference code's
    relative shift, causal half only: W_R R_δ for the S + 1 distances δ = c n, n = S .. 0, one D-wide matmul
    against the queries, then row i read from column T - i of that table on. Entries of keys after their query
    (j > i + S - T) read the next row's columns: finite, not the formula, and hidden by attention's causal mask.
    q [B,T,H,D], v [H,D], q_pos [1,T], k_pos [1,S], W_R [d_R,H,D] -> [B,H,T,S]."""
    b, t, h, d = q.shape
    s, d_r = k_pos.shape[-1], w_r.shape[0]
    step = (k_pos[0, 1] - k_pos[0, 0]).astype(jnp.float32) if s > 1 else jnp.float32(0)
    n = jnp.arange(s, -1, -1, dtype=jnp.float32)  # [S+1]: column c holds distance c (S - c)
    angles = (step * n)[:, None] * xl_frequencies(d_r, base)  # [S+1,d_R/2]
    r = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # [S+1,d_R], R_δ
    projected = (r @ w_r.reshape(d_r, -1)).reshape(-1, h, d)  # [S+1,H,D], W_R R_δ
    # One 2-D matmul per head: on CPU, XLA transposes operands around a head-batched dot of these shapes. Each
    # head's q_i + v is its own slice-and-add, one pass over q, where q + v first and then the slices was two.
    table = jnp.stack(
        [((q[:, :, i] + v[i]).reshape(-1, d) @ projected[:, i].T).reshape(b, t, -1) for i in range(h)], 1
    )
    # table [B,H,T,S+1]. Flat offset T + i S + j is table[i, T - i + j] while T - i + j <= S, i.e. for the keys
    # query i sees: distance c (S - T + i - j). The T S entries from flat offset T on are exactly [T,S].
    return table.reshape(b, h, t * (s + 1))[..., t:].reshape(b, h, t, s)  # [B,H,T,S]


@POSITIONAL.register("xl_relative")
@dataclasses.dataclass(frozen=True, kw_only=True)
class XLRelativeConfig(PositionalConfig):
    """Transformer-XL's global content bias u, position bias v and projected sinusoidal R_{i-j} per layer."""

    rel_dim: int | None = None
    """d_R, the width of the sinusoidal R_{i-j} (even); None = d_model, as in the paper."""
    base: float = 10000.0
    """Wavelength base of R, ω_k = base^(-2k/d_R)."""
    init_stddev: float = 0.02
    """Standard deviation of the normal init of u, v and W_R."""

    def validate(self, dims: Dims) -> None:
        rel_dim = dims.d_model if self.rel_dim is None else self.rel_dim
        if rel_dim < 2 or rel_dim % 2:
            raise ValueError(
                f"xl_relative.rel_dim: expected an even width >= 2 (None = d_model), got {rel_dim}"
            )
        if self.base <= 1.0:
            raise ValueError(f"xl_relative.base: expected > 1, got {self.base}")
        if self.init_stddev < 0:
            raise ValueError(f"xl_relative.init_stddev: expected >= 0, got {self.init_stddev}")

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        rel_dim = dims.d_model if self.rel_dim is None else self.rel_dim
        return XLRelative(self, rel_dim, dims, rngs=rngs)


class XLRelative(PositionalEncoding):
    """u, v [H,D] shared by layers, W_R [L,d_R,H,D] per layer, all nnx.Param.

    `rotate` turns q into q + u, so attention's own q·k/sqrt(D) is the paper's content terms (q_i + u)·k_j/sqrt(D);
    `bias` gets that q' = q + u and returns the position terms from q' + (v - u) = q + v.
    """

    def __init__(self, config: XLRelativeConfig, rel_dim: int, dims: Dims, *, rngs: nnx.Rngs):
        init = nnx.initializers.normal(stddev=config.init_stddev)
        h, d = dims.num_heads, dims.head_dim
        self.base = config.base
        self.u = nnx.Param(init(rngs.params(), (h, d), jnp.float32))  # [H,D]
        self.v = nnx.Param(init(rngs.params(), (h, d), jnp.float32))  # [H,D]
        shape = (dims.num_layers, rel_dim, h, d)
        self.w_r = nnx.Param(init(rngs.params(), shape, jnp.float32))  # [L,d_R,H,D]

    def rotate(self, q, k, q_pos, k_pos, *, layer: int):
        return (q + self.u[...]).astype(q.dtype), k  # q [B,T,H,D] + u [H,D]

    def bias(self, q_pos, k_pos, *, layer: int, q=None, k=None, logits=None):
        if q is None:
            raise ValueError("xl_relative: the bias hook needs q (after its rotate hook, q + u)")
        v = self.v[...] - self.u[...]  # (q + u) + (v - u) = q + v
        return xl_position_bias(q, q_pos, k_pos, v, self.w_r[...][layer], self.base)  # [B,H,T,S]
