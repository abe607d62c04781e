"""The embedding lookup and its gradient on a large table, against the measured copy bandwidth."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from research.bench.measure import copy_bandwidth, median_time


def embedding_bandwidth(
    vocab: int = 262_144,
    dim: int = 1024,
    tokens: int = 16 * 256,
    repeats: int = 10,
    copy_bps: float | None = None,
) -> list[dict]:
    """Embedding lookup and gradient for a V x d float32 table, jitted, as two rows against the measured copy
    bandwidth:

    - `embedding_gather_scatter_{V}x{d}`: the kernels. Gather the tokens' rows, and scatter-add their cotangent into
      a donated [V, d] accumulator, as a row-sparse update does. Both outputs go into buffers already mapped. Bytes:
      the gather reads and writes tokens x d; the scatter-add reads the cotangent and reads and writes its rows.
    - `embedding_dense_grad_{V}x{d}`: what `jax.grad` gives a training step: the dense [V, d] gradient, a new
      buffer each call. Bytes: the gather's, the V x d zeros written, and the scatter-add's. Beside it, the time of
      zero-filling a new V x d buffer alone (`zero_fill_ms`): for V x d >> tokens x d that write is most of the work,
      and a write-only pass does not reach the copy bandwidth (which counts a read and a write)."""
    table = jnp.zeros((vocab, dim), jnp.float32) + 0.01
    ids = jax.random.randint(jax.random.key(0), (tokens,), 0, vocab)
    upstream = jnp.ones((tokens, dim), jnp.float32)
    copy_bps = copy_bps or copy_bandwidth()
    row_bytes = tokens * dim * 4

    def row(name, seconds, moved, compile_s):
        return {
            "name": f"{name}_{vocab}x{dim}",
            "step_ms": seconds * 1e3,
            "bytes": moved,
            "bytes_per_s": moved / seconds,
            "copy_bytes_per_s": copy_bps,
            "fraction_of_copy": moved / seconds / copy_bps,
            "compile_s": compile_s,
            "tokens": tokens,
        }

    @jax.jit
    def lookup_and_grad(table, ids, upstream):
        out, vjp = jax.vjp(lambda t: jnp.take(t, ids, axis=0), table)
        return out, vjp(upstream)[0]

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def gather_scatter(rows, accumulator, table, ids, upstream):
        del rows  # its buffer receives the gathered rows
        return jnp.take(table, ids, axis=0), accumulator.at[ids].add(upstream)

    buffers = [jnp.zeros((tokens, dim), jnp.float32), jnp.zeros((vocab, dim), jnp.float32)]

    def sparse():
        buffers[:] = gather_scatter(*buffers, table, ids, upstream)
        return buffers

    rows = []
    for name, fn, moved in (
        ("embedding_gather_scatter", sparse, 5 * row_bytes),
        (
            "embedding_dense_grad",
            lambda: lookup_and_grad(table, ids, upstream),
            5 * row_bytes + vocab * dim * 4,
        ),
    ):
        compile_start = time.perf_counter()
        jax.block_until_ready(fn())
        rows.append(row(name, median_time(fn, repeats), moved, time.perf_counter() - compile_start))
    # The floor under the dense gradient: writing a new [V, d] buffer alone (a jitted zero-fill of the same shape).
    fill = jax.jit(lambda x: jnp.zeros((vocab, dim), jnp.float32) + x)
    jax.block_until_ready(fill(jnp.float32(0)))
    rows[1]["zero_fill_ms"] = median_time(lambda: fill(jnp.float32(0)), repeats) * 1e3
    return rows
