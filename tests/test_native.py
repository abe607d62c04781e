"""The native CPU kernels (research/runtime/native.py) and CoPE's fused kernel (research/positional/cope_cpu.cc).

The kernel is checked against float64 numpy references of CoPE's equations, piece by piece at its own gates and
counts (its `counts` target runs the code both passes share), so that every comparison is well conditioned: the
interpolation's slope jumps where a count crosses an integer, and two float32 implementations summing in different
orders may floor a count differently (seen: 3 of 4M counts). End to end, it must equal the jnp path, values and gradients, under jit, vmap and data
parallelism over 8 simulated devices.
"""

from __future__ import annotations

import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.positional import cope
from research.runtime import native

from .test_parallel import run_on_eight_devices

EPS = np.finfo(np.float32).eps

pytestmark = pytest.mark.skipif(
    not native.load(cope._KERNEL, cope._TARGETS), reason="no C++ compiler: the jnp path is tested elsewhere"
)


def _inputs(lead, t, s, n, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(*lead, t, s)).astype(np.float32)
    z = rng.normal(size=(*lead, t, n)).astype(np.float32)
    return logits, z


def _visible(t, s):
    return np.arange(s)[None, :] <= (np.arange(t) + s - t)[:, None]  # [T,S]: query i is key i + S - T


def _forward(logits, z, scale):
    """-> bias, and the gates and counts both passes compute (the kernel's `counts` target), as float64."""
    (bias,) = cope._forward((("scale", np.float32(scale)),), logits, z)
    return [np.asarray(a, np.float64) for a in (bias, *cope._counts((), logits, z))]


SHAPES = [  # (leading axes, T, S, N): T < S (a query block), T == S, counts clamped (N small), a long table
    ((2, 3), 8, 24, 25),
    ((5,), 16, 16, 17),
    ((2, 2), 6, 20, 4),
    ((3,), 7, 9, 40),
    ((), 5, 5, 2),
]


@pytest.mark.parametrize("lead, t, s, n", SHAPES)
def test_forward_matches_float64_equations(lead, t, s, n):
    logits, z = _inputs(lead, t, s, n)
    scale = 0.37
    bias, gates, counts = _forward(logits, z, scale)
    visible = _visible(t, s)
    expected_gates = np.where(visible, 1 / (1 + np.exp(-logits.astype(np.float64))), 0.0)
    np.testing.assert_allclose(gates, expected_gates, rtol=0, atol=8 * EPS)
    exact = np.minimum(np.cumsum(expected_gates[..., ::-1], -1)[..., ::-1], n - 1)
    # a sequential float32 sum of S terms in [0, 1]: |error| <= S * eps * (the sum) <= S * eps * S
    np.testing.assert_allclose(counts, exact, rtol=0, atol=s * s * EPS)
    assert counts.max() <= n - 1 and counts.min() >= 0
    # the interpolation, at the kernel's own counts (no floor can differ)
    lo = np.floor(counts).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    z64 = z.astype(np.float64)
    picked = lambda idx: np.take_along_axis(z64, idx, axis=-1)  # noqa: E731
    expected = scale * (picked(lo) + (counts - lo) * (picked(hi) - picked(lo)))
    np.testing.assert_allclose(bias, expected, rtol=0, atol=4 * EPS * np.abs(z).max())


@pytest.mark.parametrize("lead, t, s, n", SHAPES)
def test_backward_matches_float64_equations(lead, t, s, n):
    logits, z = _inputs(lead, t, s, n, seed=1)
    d = np.random.default_rng(2).normal(size=logits.shape).astype(np.float32)
    scale = 0.37
    _, gates, counts = _forward(logits, z, scale)  # what the backward pass recomputes from the logits
    dlogits, dz = (
        np.asarray(a, np.float64) for a in cope._backward((("scale", np.float32(scale)),), d, logits, z)
    )
    lo = np.floor(counts).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = counts - lo
    ds = scale * d.astype(np.float64)
    expected_dz = np.zeros(z.shape)
    rows = np.indices(lo.shape)[:-1]
    np.add.at(expected_dz, (*rows, lo), (1 - w) * ds)
    np.add.at(expected_dz, (*rows, hi), w * ds)
    z64 = z.astype(np.float64)
    step = np.take_along_axis(z64, hi, axis=-1) - np.take_along_axis(z64, lo, axis=-1)  # 0 at the top row
    dgates = np.cumsum(ds * step, axis=-1)  # the transpose of the reverse cumulative sum
    expected_dlogits = np.where(_visible(t, s), dgates * gates * (1 - gates), 0.0)
    scale_dz = s * EPS * np.abs(ds).sum(-1).max()  # float32 sums of at most S terms per row
    np.testing.assert_allclose(dz, expected_dz, rtol=0, atol=scale_dz)
    scale_dl = s * EPS * np.abs(ds * step).sum(-1).max()
    np.testing.assert_allclose(dlogits, expected_dlogits, rtol=0, atol=scale_dl)


def _smooth_z(lead, t, n):
    """z whose steps z[n+1] - z[n] change slowly with n: where the kernel and the jnp path floor a count
    differently, the two gradients then differ by the change of a step (<= 0.05 * 0.05 here), not by a step."""
    phase = np.random.default_rng(3).uniform(0, 6, size=(*lead, t, 1))
    return np.sin(0.05 * np.arange(n) + phase).astype(np.float32)


@pytest.mark.parametrize("lead, t, s, n", SHAPES[:3])
def test_kernel_equals_jnp_path(lead, t, s, n):
    logits, _ = _inputs(lead, t, s, n)
    z = _smooth_z(lead, t, n)
    weights = np.random.default_rng(4).normal(size=logits.shape).astype(np.float32)

    def loss(fn):
        return jax.jit(jax.value_and_grad(lambda x, z: jnp.vdot(fn(x, z, 0.37), weights), argnums=(0, 1)))

    (value, grads), (value_jnp, grads_jnp) = (
        loss(cope.counted_bias)(logits, z),
        loss(cope.counted_bias_jnp)(logits, z),
    )
    bias, bias_jnp = cope.counted_bias(logits, z, 0.37), cope.counted_bias_jnp(logits, z, 0.37)
    np.testing.assert_allclose(bias, bias_jnp, rtol=0, atol=8 * EPS)  # |bias| <= 0.37
    np.testing.assert_allclose(value, value_jnp, rtol=s * EPS)
    for got, want in zip(grads, grads_jnp):  # sums of at most S float32 terms per row, in other orders
        np.testing.assert_allclose(got, want, rtol=0, atol=s * EPS * np.abs(want).max())


def test_kernel_under_vmap_equals_unbatched():
    logits, z = _inputs((3, 2), 8, 12, 13)
    weights = np.random.default_rng(5).normal(size=logits.shape[1:]).astype(np.float32)
    f = jax.grad(lambda x, z: jnp.vdot(cope.counted_bias(x, z, 0.5), weights), argnums=(0, 1))
    batched = jax.jit(jax.vmap(f))(logits, z)
    for i in range(3):
        for a, b in zip(batched, jax.jit(f)(logits[i], z[i])):
            np.testing.assert_array_equal(a[i], b)


def test_kernel_runs_per_device_under_data_parallelism():
    """Sharded over the batch, every device runs the kernel on its own rows: no all-gather in the compiled step,
    and the values and gradients equal the one-device run."""
    out = run_on_eight_devices(
        """
import json
import jax
jax.config.update("jax_num_cpu_devices", 8)
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from research.runtime.mesh import make_mesh
from research.positional import cope

rng = np.random.default_rng(0)
logits = rng.normal(size=(16, 4, 8, 24)).astype(np.float32)
z = rng.normal(size=(16, 4, 8, 25)).astype(np.float32)
f = jax.jit(jax.value_and_grad(lambda l, z: jnp.sum(cope.counted_bias(l, z, 0.5) ** 2), argnums=(0, 1)))
sharding = NamedSharding(make_mesh(), P("data"))
args = [jax.device_put(a, sharding) for a in (logits, z)]
(value, grads), (value1, grads1) = f(*args), f(logits, z)
text = f.lower(*args).compile().as_text()
print(json.dumps({
    "kernel": "research_cope_forward" in text and "research_cope_backward" in text,
    "all_gather": "all-gather" in text,
    "sharded": [str(g.sharding.spec) for g in grads],
    "diff": max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(grads, grads1)),
    "value": [float(value), float(value1)],
}))
"""
    )
    assert out["kernel"] and not out["all_gather"]
    assert out["sharded"] == ["P('data',)"] * 2
    assert out["diff"] == 0.0 and out["value"][0] == pytest.approx(out["value"][1], rel=1e-6)


def test_build_is_cached_and_rebuilt_when_the_source_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("RESEARCH_NATIVE_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "kernel.cc"
    source.write_text(cope._KERNEL.read_text())
    cxx = native.compiler()
    first = native.build(source, cxx)
    stamp = first.stat().st_mtime_ns
    assert native.build(source, cxx) == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    source.write_text(source.read_text() + "\n// changed\n")
    second = native.build(source, cxx)
    assert second != first and second.exists()
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.so")) == sorted([first.name, second.name])


def test_a_library_is_loaded_only_from_a_private_cache_with_its_recorded_hash(tmp_path, monkeypatch):
    """A library whose bytes differ from the hash its build recorded (planted, or damaged) is rebuilt; a cache
    folder writable by others is never loaded from: the build goes to a private temporary folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RESEARCH_NATIVE_CACHE", str(cache))
    source = tmp_path / "kernel.cc"
    source.write_text(cope._KERNEL.read_text())
    cxx = native.compiler()
    built = native.build(source, cxx)
    assert built.with_name(built.name + ".sha256").read_text().strip() == native._sha256(built)
    built.write_bytes(b"planted")  # same name, other bytes
    again = native.build(source, cxx)
    assert again == built and again.read_bytes() != b"planted"  # rebuilt, not loaded
    cache.chmod(0o777)  # a shared, world-writable cache
    planted = native.library_path(source, cxx)
    private = native.build(source, cxx)
    assert private.parent != cache and (private.parent.stat().st_mode & 0o077) == 0
    assert planted.exists()  # left alone, never loaded


def test_a_failed_build_falls_back_with_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RESEARCH_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_failed", set())
    assert native.state().startswith("on (")
    source = tmp_path / "broken.cc"
    source.write_text("this is not C++\n")
    with caplog.at_level(logging.WARNING, logger="research.runtime.native"):
        assert native.load(source, ("research_broken",)) is False
    (record,) = caplog.records
    assert "broken.cc" in record.getMessage() and "jnp path" in record.getMessage()
    assert "error" in record.getMessage()  # the compiler's own message
    assert native.state() == "failed: broken.cc"  # what the run records say


def test_switched_off_or_without_a_compiler_nothing_is_built(tmp_path, monkeypatch):
    monkeypatch.setenv("RESEARCH_NATIVE_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "kernel.cc"
    shutil.copy(cope._KERNEL, source)
    monkeypatch.setenv("RESEARCH_NATIVE", "0")
    assert native.load(source, cope._TARGETS) is False
    assert native.state() == "off: RESEARCH_NATIVE=0"
    monkeypatch.delenv("RESEARCH_NATIVE")
    monkeypatch.setenv("CXX", str(tmp_path / "missing-compiler"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no c++ or g++ either
    assert native.compiler() is None
    assert native.state() == "off: no C++ compiler"
    assert native.load(source, cope._TARGETS) is False
    assert not (tmp_path / "cache").exists()


def test_a_nan_row_neither_crashes_nor_touches_other_rows():
    """A diverged run's NaN or infinite gate logits must not read outside the table (a crash, not a NaN loss);
    rows without them are computed as before."""
    logits, z = _inputs((2, 3), 8, 16, 17)
    bad = logits.copy()
    bad[0, 1, 5, :7] = np.nan
    bad[1, 2, 3, 2] = np.inf
    bad[1, 0, 7, 4] = -np.inf
    grad = jax.jit(jax.grad(lambda x, z: jnp.sum(cope.counted_bias(x, z, 0.5) ** 2), argnums=(0, 1)))
    clean, broken = grad(logits, z), grad(bad, z)
    rows = np.ones(logits.shape[:-1], bool)
    rows[0, 1, 5] = rows[1, 2, 3] = rows[1, 0, 7] = False
    np.testing.assert_array_equal(broken[0][rows], clean[0][rows])
    np.testing.assert_array_equal(broken[1][rows], clean[1][rows])
