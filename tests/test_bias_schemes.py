"""Bias schemes against independent numpy references of the papers' formulas.

Every expected value below is computed in numpy from the equation (loops where the paper sums), reading only the
scheme's parameters from the module; the registry-wide contract (shapes, dtypes, jit, shift-invariance) is
tests/test_positional_contract.py.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.model.attention import causal_mask
from research.positional import POSITIONAL, POSITIONS, Dims
from research.positional.base import causal_mask_of
from research.positional.data_dependent_alibi import forget_log_gates, forgetting_bias
from research.positional.fire import fire_bias, fire_normalized_distance
from research.positional.kerple import kerple_log_bias, kerple_power_bias
from research.positional.positions import check_compatible
from research.positional.xl_relative import evenly_spaced as xl_evenly_spaced

DIMS = Dims(d_model=16, num_heads=4, head_dim=4, num_layers=2, max_len=8)
B, H, K, D = 2, DIMS.num_heads, 2, DIMS.head_dim  # K = 2 kv heads: grouped-query shapes
NEW = ("kerple", "sandwich", "fire", "dynamic_bias", "data_dependent_alibi", "cope", "xl_relative")
TOL = dict(rtol=1e-5, atol=1e-5)


def _build(name, dims=DIMS, **options):
    config = POSITIONAL.get(name)(**options)
    config.validate(dims)
    return config.build(dims, rngs=nnx.Rngs(0))


def _pos(t, s, offsets=(0, 5)):
    """(q_pos [B,T], k_pos [B,S]) int32: rows start at `offsets`; queries are the last t keys."""
    k_pos = np.arange(s)[None] + np.asarray(offsets)[:, None]
    return jnp.asarray(k_pos[:, -t:], jnp.int32), jnp.asarray(k_pos, jnp.int32)


def _qk(t, s, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, t, H, D)).astype(np.float32)
    k = rng.normal(size=(B, s, K, D)).astype(np.float32)
    return q, k


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize(
    "name, relative",
    [("kerple", True), ("sandwich", True), ("fire", False), ("dynamic_bias", True)]
    + [("data_dependent_alibi", True), ("cope", True), ("xl_relative", True), ("alibi", True)],
)
def test_registered_and_relative_flag(name, relative):
    assert POSITIONAL.get(name)().relative is relative


# ------------------------------------------------------------------------------------------------ alibi
def test_alibi_causal_vs_bidirectional():
    dims = Dims(d_model=16, num_heads=8, head_dim=2, num_layers=1, max_len=8)
    slopes = 2.0 ** -np.arange(1, 9)  # 8 heads: 1/2 .. 1/256
    pos = jnp.arange(6, dtype=jnp.int32)[None]
    rel = np.arange(6)[:, None] - np.arange(6)[None, :]  # i - j
    causal = np.asarray(_build("alibi", dims).bias(pos, pos, layer=0))[0]
    symmetric = np.asarray(_build("alibi", dims, bidirectional=True).bias(pos, pos, layer=0))[0]
    np.testing.assert_allclose(causal, -slopes[:, None, None] * np.maximum(rel, 0), **TOL)
    np.testing.assert_allclose(symmetric, -slopes[:, None, None] * np.abs(rel), **TOL)
    past = rel >= 0
    np.testing.assert_array_equal(causal[:, past], symmetric[:, past])  # identical under a causal mask
    assert (causal[:, ~past] == 0).all() and (symmetric[:, ~past] < 0).all()


# ----------------------------------------------------------------------------------------------- kerple
def test_kerple_formulas_with_given_parameters():
    q_pos, k_pos = _pos(5, 7)
    r1, r2 = np.array([0.5, 1.0, 2.0, 0.1]), np.array([0.3, 1.0, 1.5, 2.0])
    dist = np.abs(np.asarray(q_pos)[:, :, None] - np.asarray(k_pos)[:, None, :])[:, None]  # [B,1,T,S]
    r1_, r2_ = r1[None, :, None, None], r2[None, :, None, None]
    log = kerple_log_bias(q_pos, k_pos, jnp.asarray(r1, jnp.float32), jnp.asarray(r2, jnp.float32))
    power = kerple_power_bias(q_pos, k_pos, jnp.asarray(r1, jnp.float32), jnp.asarray(r2, jnp.float32))
    np.testing.assert_allclose(log, -r1_ * np.log(1 + r2_ * dist), **TOL)
    np.testing.assert_allclose(power, -r1_ * dist**r2_, **TOL)


@pytest.mark.parametrize("variant, r2_max", [("log", None), ("power", 2.0)])
def test_kerple_parameters_stay_positive(variant, r2_max):
    pe = _build("kerple", variant=variant)
    q_pos, k_pos = _pos(6, 6)
    raw1 = np.array([[-1.0, 0.0, 0.5, 3.0], [0.2, -0.3, 1.0, 0.01]], np.float32)  # [L,H], some out of bounds
    raw2 = np.array([[-2.0, 0.005, 2.5, 1.0], [0.7, 5.0, -0.1, 0.3]], np.float32)
    pe.r1[...], pe.r2[...] = jnp.asarray(raw1), jnp.asarray(raw2)
    r1, r2 = np.clip(raw1[1], 0.01, None), np.clip(raw2[1], 0.01, r2_max)
    got1, got2 = pe.kernel_params(1)
    assert (np.asarray(got1) > 0).all() and (np.asarray(got2) > 0).all()
    np.testing.assert_allclose(got1, r1, **TOL)
    np.testing.assert_allclose(got2, r2, **TOL)
    dist = np.abs(np.asarray(q_pos)[:, :, None] - np.asarray(k_pos)[:, None, :])[:, None]
    r1_, r2_ = r1[None, :, None, None], r2[None, :, None, None]
    expected = -r1_ * np.log(1 + r2_ * dist) if variant == "log" else -r1_ * dist**r2_
    np.testing.assert_allclose(pe.bias(q_pos, k_pos, layer=1), expected, **TOL)
    # straight-through: a clamped parameter still receives a gradient (and no NaN from 0^r2 at distance 0)
    grad_r2 = jax.grad(lambda r: kerple_power_bias(q_pos, k_pos, jnp.ones(H), r).sum())(jnp.full(H, 0.5))
    assert np.isfinite(np.asarray(grad_r2)).all()
    graphdef, state = nnx.split(pe)
    grads = jax.grad(lambda st: nnx.merge(graphdef, st).bias(q_pos, k_pos, layer=1).sum())(state)
    assert np.abs(np.asarray(grads["r1"][...])[1]).min() > 0  # raw r1 = -0.3 is clamped, yet learns


def test_kerple_init_ranges():
    for variant, (hi1, hi2) in {"log": (2.0, 1.0), "power": (1.0, 2.0)}.items():
        pe = _build("kerple", variant=variant)
        r1, r2 = np.asarray(pe.r1[...]), np.asarray(pe.r2[...])
        assert r1.shape == r2.shape == (DIMS.num_layers, H)
        assert (r1 >= 0).all() and (r1 <= hi1).all() and (r2 >= 0).all() and (r2 <= hi2).all()


# --------------------------------------------------------------------------------------------- sandwich
@pytest.mark.parametrize("dim", [None, 8])
def test_sandwich_matches_formula(dim):
    q_pos, k_pos = _pos(6, 9, offsets=(0, 1000))  # a large offset: the result depends on i - j only
    pe = _build("sandwich", dim=dim)
    dbar = DIMS.d_model if dim is None else dim
    qp, kp = np.asarray(q_pos), np.asarray(k_pos)
    expected = np.zeros((B, H, 6, 9))
    for b in range(B):
        for i in range(6):
            for j in range(9):
                delta = float(qp[b, i] - kp[b, j])
                total = sum(math.cos(delta / 10000 ** (2 * k / dbar)) for k in range(1, dbar // 2 + 1))
                for h in range(1, H + 1):
                    expected[b, h - 1, i, j] = (total - dbar / 2) / (8 * h / H)
    got = np.asarray(pe.bias(q_pos, k_pos, layer=0))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-5)
    diagonal = qp[:, :, None] == kp[:, None, :]
    assert np.abs(got[:, :, diagonal[0]]).max() < 1e-5 and got.max() < 1e-5  # 0 at i = j, <= 0 elsewhere


# ------------------------------------------------------------------------------------------------- fire
def _np_fire(qp, kp, c, threshold, w1, b1, w2, b2, eps=1e-6):
    out = np.zeros((qp.shape[0], w2.shape[1], qp.shape[1], kp.shape[1]))
    for b in range(qp.shape[0]):
        for i in range(qp.shape[1]):
            for j in range(kp.shape[1]):
                psi = math.log(abs(c * (qp[b, i] - kp[b, j])) + 1)
                x = psi / (math.log(abs(c * max(qp[b, i], threshold)) + 1) + eps)
                out[b, :, i, j] = np.maximum(x * w1 + b1, 0) @ w2 + b2
    return out


def test_fire_mlp_with_given_parameters():
    rng = np.random.default_rng(1)
    w1, b1 = rng.normal(size=32), rng.normal(size=32)
    w2, b2 = rng.normal(size=(32, H)) / 6, rng.normal(size=H)
    q_pos, k_pos = _pos(5, 12, offsets=(0, 9))
    params = [jnp.asarray(p, jnp.float32) for p in (w1, b1, w2, b2)]
    got = fire_bias(q_pos, k_pos, jnp.float32(0.3), jnp.float32(6.0), *params)
    assert got.shape == (B, H, 5, 12) and got.dtype == jnp.float32
    expected = _np_fire(np.asarray(q_pos), np.asarray(k_pos), 0.3, 6.0, w1, b1, w2, b2)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_fire_module_uses_its_parameters():
    pe = _build("fire")
    q_pos, k_pos = _pos(8, 8, offsets=(0, 20))
    p = {n: np.asarray(getattr(pe, n)[...])[1] for n in ("c", "l_mult", "w1", "b1", "w2", "b2")}
    assert p["c"] == pytest.approx(0.1) and p["l_mult"] == 1.0  # reference inits; L0 = training length
    threshold = abs(p["l_mult"] * DIMS.max_len)
    expected = _np_fire(
        np.asarray(q_pos), np.asarray(k_pos), p["c"], threshold, p["w1"], p["b1"], p["w2"], p["b2"]
    )
    np.testing.assert_allclose(pe.bias(q_pos, k_pos, layer=1), expected, rtol=1e-4, atol=1e-5)


def test_fire_progressive_interpolation():
    """Past the threshold, the farthest key always maps to 1: every length lands in the trained input range."""
    threshold, c = 4.0, jnp.float32(1.0)
    pos = jnp.arange(40, dtype=jnp.int32)[None]
    x = np.asarray(fire_normalized_distance(pos, pos, c, jnp.float32(threshold)))[0]  # [T,S]
    causal = np.tril(np.ones((40, 40), bool))
    assert x[causal].min() >= 0 and x[causal].max() <= 1
    i = np.arange(40)
    np.testing.assert_allclose(x[i >= threshold, 0], 1.0, atol=1e-5)  # j = 0 at i >= L: ψ(i)/ψ(i)
    short = np.arange(1, 4)
    np.testing.assert_allclose(x[short, 0], np.log1p(short) / (np.log1p(threshold) + 1e-6), **TOL)
    # Same distance, later query: a smaller input (distances shrink as the context grows).
    assert x[30, 20] < x[20, 10] < x[10, 0]


# ----------------------------------------------------------------------------------------- dynamic_bias
def test_dynamic_bias_depends_only_on_distance():
    pe = _build("dynamic_bias")
    ws = [np.asarray(w[...]) for w in pe.weights]
    bs = [np.asarray(b[...]) for b in pe.biases]
    q_pos = jnp.asarray([[0, 3, 4, 9, 10, 15], [7, 10, 11, 16, 17, 22]], jnp.int32)  # row 1 = row 0 + 7
    got = np.asarray(pe.bias(q_pos, q_pos, layer=0))
    np.testing.assert_allclose(got[0], got[1], **TOL)  # shift-invariant
    shifted = np.asarray(pe.bias(q_pos + 1000, q_pos + 1000, layer=1))
    np.testing.assert_allclose(shifted, got, **TOL)
    qp = np.asarray(q_pos)[0]
    for i in range(6):
        for j in range(6):
            delta = qp[i] - qp[j]
            hidden = np.array([np.sign(delta) * np.log1p(abs(delta))])
            for w, b in zip(ws[:-1], bs[:-1]):
                z = hidden @ w + b
                hidden = z / (1 + np.exp(-z))  # SiLU
            np.testing.assert_allclose(got[0, :, i, j], hidden @ ws[-1] + bs[-1], **TOL)
    # equal distances (4-3 and 10-9) give equal biases
    np.testing.assert_allclose(got[0, :, 2, 1], got[0, :, 4, 3], **TOL)


# --------------------------------------------------------------------------------- data_dependent_alibi
def _np_forgetting(k, w, bias, t, s):
    """Σ_{t'=j+1..i} f_t' with f = ln σ(w_h · k_t' + b_h); query i is key i + s - t; 0 for j > i."""
    out = np.zeros((B, H, t, s))
    for b in range(B):
        for h in range(H):
            f = [np.log(_sigmoid(w[h] @ k[b, tt, h // (H // K)] + bias[h])) for tt in range(s)]
            for i in range(t):
                key_i = i + s - t
                for j in range(key_i + 1):
                    out[b, h, i, j] = sum(f[tt] for tt in range(j + 1, key_i + 1))
    return out


@pytest.mark.parametrize("t, s", [(6, 6), (3, 7)])
def test_data_dependent_alibi_equals_explicit_sum(t, s):
    pe = _build("data_dependent_alibi", bias_init=2.0)
    pe.w[...] = pe.w[...] * 20  # gates that differ visibly across tokens
    q, k = _qk(t, s)
    q_pos, k_pos = _pos(t, s, offsets=(0, 11))
    w, bias = np.asarray(pe.w[...])[1], np.asarray(pe.b[...])[1]
    assert (bias == 2.0).all()
    got = pe.bias(q_pos, k_pos, layer=1, q=jnp.asarray(q), k=jnp.asarray(k))
    np.testing.assert_allclose(got, _np_forgetting(k, w, bias, t, s), rtol=1e-5, atol=1e-5)


def test_data_dependent_alibi_with_constant_gates_is_alibi():
    slopes = np.array([0.5, 0.25, 0.125, 0.0625])
    gate_bias = np.log(np.exp(-slopes) / (1 - np.exp(-slopes)))  # σ(b) = e^{-m}
    _, k = _qk(5, 5)
    f = forget_log_gates(jnp.asarray(k), jnp.zeros((H, D)), jnp.asarray(gate_bias, jnp.float32))
    pos = jnp.arange(5, dtype=jnp.int32)[None].repeat(B, 0)
    rel = np.arange(5)[:, None] - np.arange(5)[None, :]
    expected = -slopes[:, None, None] * np.maximum(rel, 0)
    np.testing.assert_allclose(forgetting_bias(pos, pos, f), np.broadcast_to(expected, (B, H, 5, 5)), **TOL)


# ------------------------------------------------------------------------------------------------- cope
def _np_cope(q, k, table, t, s):
    npos = table.shape[0]
    out = np.zeros((B, H, t, s))
    for b in range(B):
        for h in range(H):
            for i in range(t):
                key_i = i + s - t
                for j in range(key_i + 1):
                    gates = [
                        _sigmoid(q[b, i, h] @ k[b, tt, h // (H // K)] / math.sqrt(D))
                        for tt in range(j, key_i + 1)
                    ]
                    p = min(sum(gates), npos - 1)
                    lo, hi = math.floor(p), math.ceil(p)
                    e = (p - lo) * table[hi] + (1 - p + lo) * table[lo]
                    out[b, h, i, j] = q[b, i, h] @ e / math.sqrt(D)
    return out


@pytest.fixture(params=["native", "jnp"])
def cope_path(request, monkeypatch):
    """CoPE's two implementations of the counts and interpolation: the fused CPU kernel (research/runtime/native.py; skipped
    without a C++ compiler) and the jnp path (RESEARCH_NATIVE=0, also what other platforms run)."""
    from research.positional import cope
    from research.runtime import native

    if request.param == "jnp":
        monkeypatch.setenv("RESEARCH_NATIVE", "0")
    elif not native.load(cope._KERNEL, cope._TARGETS):
        pytest.skip("no C++ compiler")
    return request.param


@pytest.mark.parametrize("t, s, npos", [(6, 6, None), (3, 7, 4)])  # npos = 4 clamps the counts
def test_cope_equals_loop_over_pairs(t, s, npos, cope_path):
    pe = _build("cope", npos=npos, init_stddev=1.0)
    q, k = _qk(t, s, seed=3)
    q_pos, k_pos = _pos(t, s, offsets=(0, 4))
    table = np.asarray(pe.table[...])[0]
    assert table.shape == ((DIMS.max_len + 1) if npos is None else npos, D)
    got = np.asarray(pe.bias(q_pos, k_pos, layer=0, q=jnp.asarray(q), k=jnp.asarray(k)))
    expected = _np_cope(q, k, table, t, s)
    visible = np.arange(s)[None, :] <= (np.arange(t) + s - t)[:, None]  # [T,S]
    np.testing.assert_allclose(got[:, :, visible], expected[:, :, visible], rtol=1e-4, atol=1e-5)


def test_cope_reads_attention_logits(cope_path):
    """Given attention's own scaled logits (the `logits=` of the bias hook), CoPE's bias equals the one it computes
    from q and k, and so do the gradients to q and k (through the logits instead of its own q·k)."""
    from research.model.attention import scaled_logits

    pe = _build("cope", init_stddev=1.0)
    t, s = 5, 8
    q, k = _qk(t, s, seed=6)
    k = np.repeat(k, H // K, axis=2)  # attention's logits are per query head
    q_pos, k_pos = _pos(t, s)
    head_major = lambda a: jnp.transpose(a, (0, 2, 1, 3))  # noqa: E731

    def total(q, k, shared: bool):
        logits = scaled_logits(head_major(q), head_major(k)) if shared else None
        return jnp.sum(pe.bias(q_pos, k_pos, layer=0, q=q, k=k, logits=logits) ** 2)

    own = jax.value_and_grad(lambda q, k: total(q, k, False), argnums=(0, 1))(jnp.asarray(q), jnp.asarray(k))
    shared = jax.value_and_grad(lambda q, k: total(q, k, True), argnums=(0, 1))(
        jnp.asarray(q), jnp.asarray(k)
    )
    np.testing.assert_allclose(shared[0], own[0], rtol=1e-5)
    for a, b in zip(shared[1], own[1]):
        np.testing.assert_allclose(a, b, **TOL)


def test_cope_counts_by_sequence_order_not_position_values():
    """Padding slots that repeat the last real position (the ragged randomized sampler) must not count for earlier
    queries: the bias ignores position values, and a later key never changes an earlier query's row."""
    pe = _build("cope", init_stddev=1.0)
    q, k = (jnp.asarray(a) for a in _qk(6, 6, seed=4))
    repeated = jnp.asarray([[0, 3, 5, 7, 7, 7]] * B)  # the last three share one position
    bias = pe.bias(repeated, repeated, layer=0, q=q, k=k)
    contiguous = jnp.broadcast_to(jnp.arange(6), (B, 6))
    np.testing.assert_array_equal(bias, pe.bias(contiguous, contiguous, layer=0, q=q, k=k))
    changed = pe.bias(repeated, repeated, layer=0, q=q, k=k.at[:, 4].multiply(-3.0))
    np.testing.assert_array_equal(changed[:, :, :4], bias[:, :, :4])  # queries 0..3 never see key 4


# ------------------------------------------------------------------------------------------ xl_relative
XL_POSITIONS = {  # (q_pos, k_pos) for t = 4 queries, the last of s = 6 keys
    "rows": _pos(4, 6, offsets=(500, 2000)),  # [B,T]: the angle-addition form
    "shared": (jnp.arange(2, 6)[None], jnp.arange(6)[None]),  # [1,T], evenly spaced: the relative shift
    "shared_step3": (jnp.arange(2, 6)[None] * 3 + 7, jnp.arange(6)[None] * 3 + 7),
    "shared_fractional": (jnp.arange(2.0, 6.0)[None] * 0.4, jnp.arange(6.0)[None] * 0.4),  # float: expanded
    "shared_uneven": (jnp.asarray([[3, 4, 7, 9]]), jnp.asarray([[0, 1, 3, 4, 7, 9]])),  # shared, not a grid
    "shared_misaligned": (jnp.arange(1, 5)[None], jnp.arange(6)[None]),  # queries are not the last keys
}


def _xl_relative_scaled(pe, layer=1):
    """Scale u, v and W_R[layer] by 50 so every term shows; -> their numpy values."""
    u, v = np.asarray(pe.u[...]) * 50, np.asarray(pe.v[...]) * 50
    w_r = np.asarray(pe.w_r[...])[layer] * 50  # [d_R,H,D]
    pe.u[...], pe.v[...] = jnp.asarray(u), jnp.asarray(v)
    pe.w_r[...] = pe.w_r[...].at[layer].set(jnp.asarray(w_r))
    return u, v, w_r


def _xl_relative_logits(pe, q_pos, k_pos, layer=1):
    """(state, q, k) -> the attention logits as the transformer makes them: rotate (q + u), q·k/sqrt(D) + bias."""
    graphdef = nnx.graphdef(pe)

    def logits(state, q, k):
        module = nnx.merge(graphdef, state)
        q, k = module.rotate(q, k, q_pos, k_pos, layer=layer)
        bias = module.bias(q_pos, k_pos, layer=layer, q=q, k=k)
        return jnp.einsum("bthd,bshd->bhts", q, jnp.repeat(k, H // K, axis=2)) / math.sqrt(D) + bias

    return logits


@pytest.mark.parametrize("positions", XL_POSITIONS)
def test_xl_relative_total_logits_equal_paper_formula(positions):
    pe = _build("xl_relative")
    q_pos, k_pos = XL_POSITIONS[positions]
    t, s = q_pos.shape[-1], k_pos.shape[-1]
    q, k = _qk(t, s, seed=5)
    u, v, w_r = _xl_relative_scaled(pe)
    d_r = w_r.shape[0]
    inv_freq = 1.0 / 10000 ** (np.arange(0, d_r, 2) / d_r)
    k_heads = np.repeat(k, H // K, axis=2)
    qp, kp = np.broadcast_to(q_pos, (B, t)), np.broadcast_to(k_pos, (B, s))
    expected = np.zeros((B, H, t, s))
    for b in range(B):
        for h in range(H):
            for i in range(t):
                for j in range(s):
                    delta = float(qp[b, i]) - float(kp[b, j])
                    r = np.concatenate([np.sin(delta * inv_freq), np.cos(delta * inv_freq)])  # R_{i-j}
                    content = (q[b, i, h] + u[h]) @ k_heads[b, j, h]
                    position = (q[b, i, h] + v[h]) @ (r @ w_r[:, h, :])  # W_R,h R_{i-j} in R^D
                    expected[b, h, i, j] = (content + position) / math.sqrt(D)
    total = np.asarray(jax.jit(_xl_relative_logits(pe, q_pos, k_pos))(nnx.state(pe), q, k))
    seen = np.asarray(causal_mask(q_pos, k_pos))[
        0, 0
    ]  # [T,S]; the hook leaves keys after their query unspecified
    assert np.isfinite(total).all()
    np.testing.assert_allclose(total[..., seen], expected[..., seen], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("positions", [name for name in XL_POSITIONS if name.startswith("shared")])
def test_xl_relative_shared_positions_match_rows_with_gradients(positions):
    """Shared [1,T] integer positions take the relative shift when evenly spaced (else the angle-addition form);
    the same positions given per row [B,T] always take the angle-addition form. The logits of the keys each query
    sees and the gradients of q, k, u, v and W_R agree."""
    pe = _build("xl_relative")
    _xl_relative_scaled(pe)
    q_pos, k_pos = XL_POSITIONS[positions]
    if jnp.issubdtype(q_pos.dtype, jnp.integer):
        assert bool(xl_evenly_spaced(q_pos[0], k_pos[0])) == (
            positions not in ("shared_uneven", "shared_misaligned")
        )
    q, k = (jnp.asarray(a) for a in _qk(4, 6, seed=6))
    weights = np.random.default_rng(1).normal(size=(B, H, 4, 6)) * np.asarray(
        causal_mask_of(4, 6)
    )  # seen keys
    weights = jnp.asarray(weights, jnp.float32)

    def loss_of(q_pos, k_pos):
        logits = _xl_relative_logits(pe, q_pos, k_pos)
        grad = jax.value_and_grad(lambda *a: jnp.sum(logits(*a) * weights), argnums=(0, 1, 2))
        return jax.jit(grad)(nnx.state(pe), q, k)

    shared = loss_of(q_pos, k_pos)
    rows = loss_of(jnp.broadcast_to(q_pos, (B, 4)), jnp.broadcast_to(k_pos, (B, 6)))
    np.testing.assert_allclose(shared[0], rows[0], rtol=1e-5)
    got, want = (jax.tree.leaves(x[1]) for x in (shared, rows))
    assert len(want) == 5  # u, v, W_R (the state), q, k
    for a, b in zip(got, want, strict=True):
        assert np.abs(np.asarray(b)).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))


# ------------------------------------------------------------------------------------ every new scheme
@pytest.mark.parametrize("name", NEW)
def test_fractional_positions_give_finite_float32_bias(name):
    """The `interpolated` sampler feeds float32 positions at evaluation; every scheme takes them as they are."""
    pe = _build(name)
    q, k = _qk(8, 8)
    pos = (jnp.arange(8, dtype=jnp.float32) * 0.4)[None].repeat(B, 0)
    bias = pe.bias(pos, pos, layer=1, q=jnp.asarray(q, jnp.bfloat16), k=jnp.asarray(k, jnp.bfloat16))
    assert bias.shape[1:] == (H, 8, 8) and bias.dtype == jnp.float32
    assert bool(jnp.isfinite(bias).all())
    check_compatible(POSITIONAL.get(name)(), POSITIONS.get("interpolated")(train_len=DIMS.max_len), DIMS)


@pytest.mark.parametrize(
    "name, options, field",
    [
        ("kerple", {"variant": "cubic"}, "kerple.variant"),
        ("kerple", {"eps": 0.0}, "kerple.eps"),
        ("sandwich", {"dim": 7}, "sandwich.dim"),
        ("fire", {"init_c": 0.0}, "fire.init_c"),
        ("fire", {"init_L": -1.0}, "fire.init_L"),
        ("dynamic_bias", {"depth": 0}, "dynamic_bias.depth"),
        ("data_dependent_alibi", {"init_stddev": -1.0}, "data_dependent_alibi.init_stddev"),
        ("cope", {"npos": 1}, "cope.npos"),
        ("xl_relative", {"rel_dim": 3}, "xl_relative.rel_dim"),
    ],
)
def test_validate_names_scheme_and_field(name, options, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        POSITIONAL.get(name)(**options).validate(DIMS)
