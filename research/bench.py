"""Training-step benchmark: every registered positional scheme at the reference config, as ratios.

Ratios make numbers from noisy shared machines meaningful: model-FLOPs utilisation (MFU) against the fp32 matmul
rate measured in the same process, and step time against `nope`. Medians over repeated steps after warm-up.

Model FLOPs per token (PaLM appendix B convention, forward + backward = 3x forward):
    6 * (non-embedding parameters + readout V*E) + 12 * L * T * E     (attention scores and mixing, no causal halving)
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research.config import ModelConfig, TrainConfig
from research.model.transformer import Transformer, parameter_counts, resolve_model
from research.positional import POSITIONAL
from research.train import make_optimizer, make_train_step

REFERENCE = dict(vocab_size=8192, d_model=256, num_layers=4, num_heads=4, seq_len=256, batch_size=16)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Measured fp32 matmul FLOP/s of the default device (n x n @ n x n)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    jax.block_until_ready(f(a, b))
    return 2 * n**3 / _median_time(lambda: f(a, b), repeats)


def copy_bandwidth(mbytes: int = 256, repeats: int = 10) -> float:
    """Measured device copy bandwidth in bytes/s (read + write of an fp32 buffer)."""
    x = jnp.ones((mbytes * 2**20 // 4,), jnp.float32)
    f = jax.jit(lambda x: x + 1.0)
    jax.block_until_ready(f(x))
    return 2 * x.nbytes / _median_time(lambda: f(x), repeats)


def model_flops_per_token(
    counts: dict, *, vocab_size: int, d_model: int, num_layers: int, seq_len: int
) -> float:
    readout = vocab_size * d_model
    return 6 * (counts["rest"] + counts["positional"] + readout) + 12 * num_layers * seq_len * d_model


def bench_scheme(positional: str, *, steps: int = 10, warmup: int = 2, ref: dict = REFERENCE) -> dict:
    model_config = ModelConfig(
        d_model=ref["d_model"],
        num_layers=ref["num_layers"],
        num_heads=ref["num_heads"],
        positional={"name": positional},
    )
    resolved = resolve_model(model_config, max_len=ref["seq_len"], vocab_size=ref["vocab_size"])
    model = Transformer(resolved, vocab_size=ref["vocab_size"], rngs=nnx.Rngs(0))
    counts = parameter_counts(model)
    graphdef, params = nnx.split(model)
    tx = make_optimizer(TrainConfig(steps=1000, warmup_steps=10))
    opt_state = tx.init(params)
    step_fn = make_train_step(graphdef, tx, resolved.positions, seed=0)
    rng = np.random.default_rng(0)
    shape = (ref["batch_size"], ref["seq_len"])
    inputs = jnp.asarray(rng.integers(0, ref["vocab_size"], shape), jnp.int32)
    targets = jnp.asarray(rng.integers(0, ref["vocab_size"], shape), jnp.int32)

    start = time.perf_counter()
    compiled = step_fn.lower(params, opt_state, inputs, targets, jnp.int32(0)).compile()
    compile_s = time.perf_counter() - start
    state = [params, opt_state]

    def one(i):
        state[0], state[1], loss = compiled(state[0], state[1], inputs, targets, jnp.int32(i))
        return loss

    for i in range(warmup):
        jax.block_until_ready(one(i))
    times = []
    for i in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(one(warmup + i))
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    tokens = shape[0] * shape[1]
    flops = (
        model_flops_per_token(
            counts,
            vocab_size=ref["vocab_size"],
            d_model=ref["d_model"],
            num_layers=ref["num_layers"],
            seq_len=ref["seq_len"],
        )
        * tokens
    )
    return {
        "name": f"train_step/{positional}",
        "scheme": positional,
        "step_ms": step_s * 1e3,
        "step_ms_spread": [min(times) * 1e3, max(times) * 1e3],
        "tokens_per_s": tokens / step_s,
        "compile_s": compile_s,
        "model_flops_per_step": flops,
        "achieved_flops": flops / step_s,
        "params": counts,
    }


def run_benchmarks(
    schemes=None, *, steps: int = 10, warmup: int = 2, ref: dict = REFERENCE, log=print
) -> dict:
    schemes = list(schemes or POSITIONAL.names())
    peak = matmul_peak()
    log(f"measured fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    rows = []
    for name in schemes:
        row = bench_scheme(name, steps=steps, warmup=warmup, ref=ref)
        row["mfu"] = row["achieved_flops"] / peak
        rows.append(row)
        log(
            f"{name:>12}: {row['step_ms']:.1f} ms/step, {row['tokens_per_s']:.0f} tokens/s, "
            f"MFU {row['mfu']:.1%}, compile {row['compile_s']:.1f} s"
        )
    base = next((r for r in rows if r["scheme"] == "nope"), None)
    for row in rows:
        row["ratio_to_nope"] = row["step_ms"] / base["step_ms"] if base else None
    return {"matmul_peak_flops": peak, "reference": ref, "steps": steps, "rows": rows}
