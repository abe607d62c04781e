"""The machine's measured limits and the timing helpers every benchmark section uses.

A measurement writes into buffers that are already mapped (a donated output), so that it times the kernel and not
the allocator's fresh pages (research/runtime/hostmem.py); medians over repeats after a warm-up call.
"""

from __future__ import annotations

import itertools
import statistics
import time

import jax
import jax.numpy as jnp

from research.training.step import COMPUTE_DTYPES


def times(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def median_time(fn, repeats: int) -> float:
    return statistics.median(times(fn, repeats))


def into_donated(fn, *args):
    """A no-argument callable: `fn(*args)` jitted, its output written into a donated buffer of its shape that is
    already mapped, so that a measurement times the kernel, not the allocator's fresh pages (see research.runtime.hostmem)."""
    f = jax.jit(lambda out, *a: fn(*a), donate_argnums=0, keep_unused=True)
    shape = jax.eval_shape(fn, *args)
    out = [jnp.zeros(shape.shape, shape.dtype)]

    def call():
        out[0] = f(out[0], *args)
        return out[0]

    jax.block_until_ready(call())
    return call


def matmul_peak(n: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    """Measured matmul FLOP/s of the default device (n x n @ n x n) in `dtype` (a key of train.COMPUTE_DTYPES)."""
    a = jax.random.normal(jax.random.key(0), (n, n), COMPUTE_DTYPES[dtype])
    b = jax.random.normal(jax.random.key(1), (n, n), COMPUTE_DTYPES[dtype])
    call = into_donated(jnp.matmul, a, b)
    return 2 * n**3 / median_time(call, repeats)


def copy_bandwidth(mbytes: int = 256, repeats: int = 10, *, fresh: bool = False) -> float:
    """Measured device copy bandwidth in bytes/s: read an fp32 buffer, write another (counted as read + write).
    The output goes into a donated buffer that is already mapped (STREAM's copy); with `fresh`, into a new
    allocation each call, which on CPU adds the kernel's page faults (3x slower on a 2-core machine without huge
    pages)."""
    x = jnp.ones((mbytes * 2**20 // 4,), jnp.float32)
    if fresh:
        f = jax.jit(lambda x: x + 1.0)
        call = lambda: f(x)  # noqa: E731
        jax.block_until_ready(call())
    else:
        call = into_donated(lambda x: x + 1.0, x)
    return 2 * x.nbytes / median_time(call, repeats)


def step_seconds(one, *, steps: int, warmup: int) -> list[float]:
    """Wall times of `steps` calls one(i) after `warmup` untimed ones (`one` from Reference.runner; i counts up)."""
    index = itertools.count()
    for _ in range(warmup):
        jax.block_until_ready(one(next(index)))
    return times(lambda: one(next(index)), steps)
