"""Each scheme's functional core against an independent numpy transcription of its paper's formula."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.positional import Dims
from research.positional.alibi import alibi_slopes
from research.positional.learned import LearnedConfig
from research.positional.rope import apply_rope, rope_frequencies
from research.positional.sinusoidal import sinusoidal_table
from research.positional.t5_bias import relative_position_bucket

# Jitted once per static configuration: run eagerly, every primitive would compile separately and dominate the
# run time of these tests. The functions themselves are unchanged.
sinusoidal_table = jax.jit(sinusoidal_table, static_argnums=(1, 2))
apply_rope = jax.jit(apply_rope, static_argnums=3)
relative_position_bucket = jax.jit(relative_position_bucket, static_argnums=(1, 2, 3))

# ------------------------------------------------------------------------------------------- sinusoidal


def test_sinusoidal_matches_vaswani_formula():
    pos, dim = np.arange(50), 16
    expected = np.zeros((50, dim))
    for p in pos:
        for i in range(dim // 2):
            expected[p, 2 * i] = np.sin(p / 10000 ** (2 * i / dim))
            expected[p, 2 * i + 1] = np.cos(p / 10000 ** (2 * i / dim))
    got = sinusoidal_table(jnp.asarray(pos), dim)
    assert got.dtype == jnp.float32 and got.shape == (50, dim)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_sinusoidal_hand_values_and_any_shape():
    table = np.asarray(sinusoidal_table(jnp.array([[0, 1]]), 8))  # [1,2,8]
    assert table.shape == (1, 2, 8)
    np.testing.assert_allclose(table[0, 0], [0, 1] * 4, atol=1e-7)  # position 0: sin 0, cos 0
    assert table[0, 1, 0] == pytest.approx(math.sin(1.0), abs=1e-6)
    assert table[0, 1, 1] == pytest.approx(math.cos(1.0), abs=1e-6)
    assert table[0, 1, 2] == pytest.approx(math.sin(1.0 / 10000 ** (2 / 8)), abs=1e-6)


def test_scaled_sinusoidal_is_a_learned_multiple_of_the_table():
    """x + g PE[pos] with g = d^-1/2 at initialisation (numpy Vaswani formula); g is a trainable scalar."""
    from research.config import resolve_spec
    from research.positional import POSITIONAL

    d = 16
    dims = Dims(d_model=d, num_heads=2, head_dim=8, num_layers=1, max_len=32)
    pe = resolve_spec(POSITIONAL, "scaled_sinusoidal", field="p").build(dims, rngs=nnx.Rngs(0))
    pos = np.arange(20)
    table = np.array(
        [[f(p / 10000 ** (2 * (i // 2) / d)) for i, f in zip(range(d), [np.sin, np.cos] * d)] for p in pos]
    )
    x = jnp.ones((1, 20, d))
    np.testing.assert_allclose(pe.embed(x, jnp.asarray(pos)[None])[0], 1 + table / math.sqrt(d), atol=2e-5)
    params = nnx.state(pe, nnx.Param)
    assert [v.shape for v in jax.tree.leaves(params)] == [()]

    graphdef, state = nnx.split(pe)
    grad = jax.grad(lambda st: jnp.sum(nnx.merge(graphdef, st).embed(x, jnp.asarray(pos)[None]) ** 2))(state)
    assert abs(float(jax.tree.leaves(grad)[0])) > 0  # the scale learns
    unit = resolve_spec(POSITIONAL, {"name": "scaled_sinusoidal", "init_scale": 1.0}, field="p").build(
        dims, rngs=nnx.Rngs(0)
    )
    np.testing.assert_allclose(unit.embed(x, jnp.asarray(pos)[None])[0], 1 + table, atol=2e-5)


# ------------------------------------------------------------------------------------------------- rope


def _np_rope(x, pos, base, interleaved):
    """Rotation of each (a, b) pair by pos * base^(-2k/D), written pair by pair."""
    out = np.array(x, dtype=np.float64)
    d = x.shape[-1]
    for k in range(d // 2):
        ang = pos[:, :, None] * base ** (-2 * k / d)  # [B,T,1]
        ia, ib = (2 * k, 2 * k + 1) if interleaved else (k, k + d // 2)
        a, b = x[..., ia], x[..., ib]
        out[..., ia] = a * np.cos(ang) - b * np.sin(ang)
        out[..., ib] = b * np.cos(ang) + a * np.sin(ang)
    return out


def test_rope_frequencies():
    np.testing.assert_allclose(rope_frequencies(8, 100.0), 100.0 ** (-np.arange(0, 8, 2) / 8), rtol=1e-6)
    with pytest.raises(ValueError):
        rope_frequencies(8, scaling={"name": "linear"})


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_matches_numpy_reference(interleaved):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3, 8)).astype(np.float32)
    pos = rng.integers(0, 100, size=(2, 5))
    got = apply_rope(jnp.asarray(x), jnp.asarray(pos), rope_frequencies(8), interleaved)
    np.testing.assert_allclose(got, _np_rope(x, pos, 10000.0, interleaved), atol=1e-4)


def test_rope_conventions_differ_by_a_fixed_permutation():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(1, 6, 2, 8)), jnp.float32)
    pos = jnp.asarray(rng.integers(0, 50, size=(1, 6)))
    perm = np.concatenate([np.arange(0, 8, 2), np.arange(1, 8, 2)])  # interleaved layout -> half-split layout
    inv = rope_frequencies(8)
    half = apply_rope(x[..., perm], pos, inv, False)
    inter = apply_rope(x, pos, inv, True)
    np.testing.assert_allclose(half, inter[..., perm], atol=1e-6)
    assert not np.allclose(apply_rope(x, pos, inv, False), inter, atol=1e-3)  # mixing them is not harmless


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_dot_product_depends_only_on_offset(interleaved):
    rng = np.random.default_rng(2)
    q, k = (jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32) for _ in range(2))
    inv = rope_frequencies(16)

    def score(m, n):
        rq = apply_rope(q, jnp.array([[m]]), inv, interleaved)
        rk = apply_rope(k, jnp.array([[n]]), inv, interleaved)
        return float(jnp.sum(rq * rk))

    for m, n in [(5, 2), (40, 10), (0, 9)]:
        assert score(m, n) == pytest.approx(score(m + 113, n + 113), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(9, 2), abs=1e-3)


# ------------------------------------------------------------------------------------------------ alibi


@pytest.mark.parametrize(
    "heads, exponents",
    [
        (8, [-1, -2, -3, -4, -5, -6, -7, -8]),
        (12, [-1, -2, -3, -4, -5, -6, -7, -8, -0.5, -1.5, -2.5, -3.5]),
        (6, [-2, -4, -6, -8, -1, -3]),  # deliberately not sorted
    ],
)
def test_alibi_slopes_official_values(heads, exponents):
    slopes = alibi_slopes(heads)
    assert slopes.dtype == jnp.float32
    np.testing.assert_allclose(slopes, 2.0 ** np.array(exponents), rtol=1e-6)


# ------------------------------------------------------------------------------------------ t5 buckets


def _np_bucket(rel, bidirectional, nb=32, max_distance=128):
    """The Mesh TensorFlow rule, one integer at a time."""
    ret = 0
    if bidirectional:
        nb //= 2
        ret += nb if rel > 0 else 0
        n = abs(rel)
    else:
        n = max(-rel, 0)
    max_exact = nb // 2
    if n < max_exact:
        return ret + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (nb - max_exact))
    return ret + min(large, nb - 1)


def test_t5_bucket_check_values():
    bidir = relative_position_bucket(jnp.array([-12, -91, 1, 8, 91]), True)
    causal = relative_position_bucket(jnp.array([-113, -46, -23]), False)
    assert bidir.tolist() == [9, 15, 17, 24, 31]
    assert causal.tolist() == [31, 24, 18]


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("nb, max_distance", [(32, 128), (8, 20)])
def test_t5_bucket_matches_reference_rule(bidirectional, nb, max_distance):
    rel = np.arange(-400, 401)
    got = relative_position_bucket(jnp.asarray(rel), bidirectional, nb, max_distance)
    assert got.dtype == jnp.int32
    assert got.tolist() == [_np_bucket(int(r), bidirectional, nb, max_distance) for r in rel]


# ---------------------------------------------------------------------------------------------- learned


def test_learned_clamps_beyond_the_table():
    dims = Dims(d_model=8, num_heads=2, head_dim=4, num_layers=1, max_len=4)
    module = LearnedConfig().build(dims, rngs=nnx.Rngs(0))
    table = np.asarray(module.table[...])  # [4,8]
    assert table.shape == (4, 8)
    x = jnp.zeros((1, 7, 8))
    got = np.asarray(jax.jit(module.embed)(x, jnp.array([[0, 1, 3, 4, 5, 100, -2]])))
    np.testing.assert_allclose(got, table[[0, 1, 3, 3, 3, 3, 0]][None])
    assert np.isfinite(got).all()
