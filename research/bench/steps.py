"""Training-step timings: every registered positional scheme at the reference config, as ratios.

Ratios make numbers from noisy shared machines meaningful: model-FLOPs utilisation (MFU) against the matmul rate
measured in the same process, and step time against `nope` within interleaved rounds. Compile time against depth,
looped and scanned.
"""

from __future__ import annotations

import statistics
import time

from research.bench.measure import matmul_peak, step_seconds
from research.bench.reference import REFERENCE, compute_dtype, model_flops_per_token, reference
from research.positional import POSITIONAL


def prepare_scheme(
    positional: str,
    *,
    warmup: int = 2,
    ref: dict = REFERENCE,
    loss_chunk: int | None = None,
    scan_layers: bool = False,
) -> tuple:
    """Compile one scheme's training step at the reference config and warm it up -> (runner, row without timings,
    completed by `run_benchmarks`).
    `loss_chunk` (another train.loss_chunk, e.g. 0 for the plain loss) / `scan_layers` make the variant rows."""
    r = reference(positional, ref, loss_chunk=loss_chunk, scan_layers=scan_layers)
    start = time.perf_counter()
    compiled = r.compile()
    compile_s = time.perf_counter() - start
    one = r.runner(compiled)
    step_seconds(one, steps=0, warmup=warmup)
    tokens = r.inputs.shape[0] * r.inputs.shape[1]
    flops = tokens * model_flops_per_token(
        r.counts,
        vocab_size=ref["vocab_size"],
        d_model=ref["d_model"],
        num_layers=ref["num_layers"],
        seq_len=ref["seq_len"],
    )
    variant = "".join(
        [f"+loss_chunk={loss_chunk}" if loss_chunk is not None else "", "+scan_layers" if scan_layers else ""]
    )
    row = {
        "name": f"train_step/{positional}{variant}",
        "scheme": positional + variant,
        "compile_s": compile_s,
        "model_flops_per_step": flops,
        "tokens_per_step": tokens,
        "params": r.counts,
    }
    return one, row


def _with_times(row: dict, times: list[float]) -> dict:
    step_s = statistics.median(times)
    return row | {
        "step_ms": step_s * 1e3,
        "step_ms_spread": [min(times) * 1e3, max(times) * 1e3],
        "tokens_per_s": row["tokens_per_step"] / step_s,
        "achieved_flops": row["model_flops_per_step"] / step_s,
    }


def run_benchmarks(
    schemes=None,
    *,
    steps: int = 12,
    warmup: int = 2,
    rounds: int = 3,
    ref: dict = REFERENCE,
    variants: tuple = (),
    log=print,
) -> dict:
    """Every scheme (and each `variants` entry, options of rope's step such as {"scan_layers": True}) compiled
    first, then timed in `rounds` interleaved rounds of steps // rounds steps each (one untimed step first), so
    that a machine whose speed drifts during the run skews every scheme alike. Each row: median and min–max of all
    its timed steps; `ratio_to_nope` is the median over rounds of (its median / nope's median in the same round)."""
    schemes = POSITIONAL.names() if schemes is None else list(schemes)
    dtype = compute_dtype(ref)  # checked before anything compiles
    peak = matmul_peak(dtype=dtype)
    log(f"measured {dtype} matmul peak: {peak / 1e9:.1f} GFLOP/s")
    jobs = [(name, {}) for name in schemes] + [("rope", dict(options)) for options in variants]
    prepared = []
    for name, options in jobs:
        one, row = prepare_scheme(name, warmup=warmup, ref=ref, **options)
        prepared.append((one, row))
        log(f"{row['scheme']:>12}: compiled in {row['compile_s']:.1f} s")
    per_round = max(1, steps // max(1, rounds))
    times = [[] for _ in prepared]  # [job][round] -> list of step seconds
    for i in range(rounds):
        for j, (one, _) in enumerate(prepared):
            times[j].append(step_seconds(one, steps=per_round, warmup=1))
        log(f"round {i + 1}/{rounds}: {per_round} steps of each of {len(prepared)} rows timed")
    rows = []
    for (_, row), rounds_times in zip(prepared, times, strict=True):
        row = _with_times(row, [t for r in rounds_times for t in r])
        row["mfu"] = row["achieved_flops"] / peak
        row["round_medians_ms"] = [statistics.median(r) * 1e3 for r in rounds_times]
        rows.append(row)
    base = next((r for r in rows if r["scheme"] == "nope"), None)
    for row in rows:
        if base is None:
            row["ratio_to_nope"] = None
            continue
        ratios = [a / b for a, b in zip(row["round_medians_ms"], base["round_medians_ms"], strict=True)]
        row["ratio_to_nope_rounds"] = ratios
        row["ratio_to_nope"] = statistics.median(ratios)
    for row in rows:
        ratio = f", {row['ratio_to_nope']:.3f} x nope" if row["ratio_to_nope"] else ""
        log(
            f"{row['scheme']:>12}: {row['step_ms']:.1f} ms/step, {row['tokens_per_s']:.0f} tokens/s, "
            f"MFU {row['mfu']:.1%}, compile {row['compile_s']:.1f} s{ratio}"
        )
    return {"matmul_peak_flops": peak, "reference": ref, "steps": steps, "rounds": rounds, "rows": rows}


def compile_seconds(positional: str, *, num_layers: int, scan_layers: bool, ref: dict = REFERENCE) -> float:
    """Seconds to lower and compile the reference training step at depth `num_layers` (layers looped or
    scanned), with a fresh compilation cache entry (a new jit per call)."""
    r = reference(positional, {**ref, "num_layers": num_layers}, scan_layers=scan_layers)
    start = time.perf_counter()
    r.compile()
    return time.perf_counter() - start
