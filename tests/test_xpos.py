"""xPos (Sun et al. 2022, arXiv 2212.10554) against a numpy transcription of its formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.positional import Dims
from research.positional.xpos import XPosConfig

D = 16
DIMS = Dims(d_model=4 * D, num_heads=4, head_dim=D, num_layers=1, max_len=16)


def _np_pairs(x, interleaved):
    """Pair k of each head vector as a complex number a + i b -> [..., D/2]."""
    if interleaved:
        return x[..., 0::2] + 1j * x[..., 1::2]
    return x[..., : D // 2] + 1j * x[..., D // 2 :]


def _np_xpos_logits(q, k, q_pos, k_pos, base=10000.0, gamma=512.0, interleaved=False):
    """sum_k Re(q_k e^{i n theta_k} conj(k_k e^{i m theta_k})) zeta_k^((n - m)/gamma), float64, no centring."""
    kk = np.arange(D // 2)
    theta = base ** (-2.0 * kk / D)
    zeta = (2.0 * kk / D + 0.4) / 1.4
    zq = _np_pairs(q.astype(np.float64), interleaved) * np.exp(
        1j * q_pos[..., None, None] * theta
    )  # [B,T,H,D/2]
    zk = _np_pairs(k.astype(np.float64), interleaved) * np.exp(
        1j * k_pos[..., None, None] * theta
    )  # [B,S,H,D/2]
    dist = q_pos[:, :, None] - k_pos[:, None, :]  # [B,T,S]
    decay = zeta ** (dist[..., None] / gamma)  # [B,T,S,D/2]
    return np.einsum("bthk,bshk,btsk->bhts", zq, np.conj(zk), decay).real


@pytest.fixture(scope="module")
def rotate():
    cache = {}

    def run(q, k, q_pos, k_pos, **options):
        key = tuple(sorted(options.items()))
        if key not in cache:
            module = XPosConfig(**options).build(DIMS, rngs=nnx.Rngs(0))
            cache[key] = jax.jit(lambda *a: module.rotate(*a, layer=0))
        rq, rk = cache[key](jnp.asarray(q), jnp.asarray(k), jnp.asarray(q_pos), jnp.asarray(k_pos))
        return np.asarray(rq, np.float64), np.asarray(rk, np.float64)

    return run


def _logits(rq, rk):
    return np.einsum("bthd,bshd->bhts", rq, rk)


@pytest.mark.parametrize("interleaved", [False, True])
def test_xpos_matches_the_formula(rotate, interleaved):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 12, 1, D)).astype(np.float32)
    k = rng.normal(size=(2, 12, 1, D)).astype(np.float32)
    pos = np.arange(12)[None] + np.array([[0], [300]])  # the second row far from 0
    rq, rk = rotate(q, k, pos, pos, interleaved=interleaved)
    np.testing.assert_allclose(
        _logits(rq, rk), _np_xpos_logits(q, k, pos, pos, interleaved=interleaved), atol=1e-4
    )
    # Each side separately: RoPE rotation times zeta^(+-(p - c)/gamma), c = middle of the key span (documented).
    c = (pos.min(-1, keepdims=True) + pos.max(-1, keepdims=True)) // 2
    kk = np.arange(D // 2)
    zeta, theta = (2.0 * kk / D + 0.4) / 1.4, 10000.0 ** (-2.0 * kk / D)
    rot = np.exp(1j * pos[..., None, None] * theta)  # [B,T,1,D/2]
    expected_q = _np_pairs(q, interleaved) * rot * zeta ** ((pos - c)[..., None, None] / 512)
    expected_k = _np_pairs(k, interleaved) * rot * zeta ** (-(pos - c)[..., None, None] / 512)
    np.testing.assert_allclose(_np_pairs(rq, interleaved), expected_q, atol=1e-5)
    np.testing.assert_allclose(_np_pairs(rk, interleaved), expected_k, atol=1e-5)


def test_scores_depend_only_on_the_offset(rotate):
    """Same q, k at (n, m) placed in windows with different spans, starts and centres: same score."""
    rng = np.random.default_rng(1)
    q, k = rng.normal(size=(1, 1, 1, D)), rng.normal(size=(1, 1, 1, D))

    def score(n, m, window):
        k_pos = np.array([[m, *window]])  # extra keys move the centre the scheme picks
        ks = np.concatenate([k, rng.normal(size=(1, len(window), 1, D))], axis=1)
        rq, rk = rotate(q.astype(np.float32), ks.astype(np.float32), np.array([[n]]), k_pos)
        return _logits(rq, rk)[0, 0, 0, 0]

    for n, m in [(5, 2), (600, 10), (9, 9)]:
        ref = _np_xpos_logits(q, k, np.array([[n]]), np.array([[m]]))[0, 0, 0, 0]
        for shift, window in [(0, []), (1000, [m + 1500]), (37, [37, 3000])]:
            assert score(n + shift, m + shift, window) == pytest.approx(ref, abs=1e-3, rel=1e-4)


def test_envelope_decays_with_distance(rotate):
    """All-ones q, k: score(d) = sum_k 2 zeta_k^(d/gamma) cos(d theta_k); its envelope sum_k 2 zeta_k^(d/gamma)
    (the score with the rotations' phases removed) falls strictly with the distance d, unlike plain RoPE's."""
    dists = np.array([0, 1, 16, 128, 512, 2048, 8192])
    ones = np.ones((1, 1, 1, D), np.float32)
    envelopes, scores = [], []
    for d in dists:
        rq, rk = rotate(ones, ones, np.array([[d]]), np.array([[0]]))
        scores.append(_logits(rq, rk)[0, 0, 0, 0])
        envelopes.append(np.sum(np.abs(_np_pairs(rq, False) * np.conj(_np_pairs(rk, False)))))
    kk = np.arange(D // 2)
    zeta, theta = (2.0 * kk / D + 0.4) / 1.4, 10000.0 ** (-2.0 * kk / D)
    expected = [np.sum(2 * zeta ** (d / 512) * np.cos(d * theta)) for d in dists]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    assert envelopes[0] == pytest.approx(D)  # no decay at distance 0
    assert np.all(np.diff(envelopes) < 0)
    np.testing.assert_allclose(envelopes, [np.sum(2 * zeta ** (d / 512)) for d in dists], rtol=1e-4)
    # Averaged over many distances (the expectation over RoPE's phases), the score falls too.
    window = lambda start: np.mean(
        [np.sum(2 * zeta ** (d / 512) * np.cos(d * theta)) for d in range(start, start + 256)]
    )
    assert window(0) > window(1024) > window(4096) > 0


def test_long_positions_stay_finite(rotate):
    """Centring keeps zeta^(+-(p - c)/gamma) in range far past where zeta_0^(p/512) underflows float32."""
    pos = np.array([[200_000, 200_001, 200_002, 200_003]])
    x = np.ones((1, 4, 1, D), np.float32)
    rq, rk = rotate(x, x, pos, pos)
    assert np.isfinite(rq).all() and np.isfinite(rk).all()
    assert np.abs(rq).max() < 2 and np.abs(rk).max() < 2


def test_bad_options():
    with pytest.raises(ValueError, match="xpos.scale_base"):
        XPosConfig(scale_base=0).validate(DIMS)
    with pytest.raises(ValueError, match="xpos.base"):
        XPosConfig(base=1.0).validate(DIMS)
