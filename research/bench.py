"""Training-step benchmark: every registered positional scheme at the reference config, as ratios.

Ratios make numbers from noisy shared machines meaningful: model-FLOPs utilisation (MFU) against the fp32 matmul
rate measured in the same process, and step time against `nope`. Medians over repeated steps after warm-up.

Model FLOPs per token (PaLM appendix B convention, forward + backward = 3x forward):
    6 * (non-embedding parameters + readout V*E) + 12 * L * T * E     (attention scores and mixing, no causal halving)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from research.config import ModelConfig, TrainConfig
from research.model.transformer import Transformer, parameter_counts, resolve_model
from research.positional import POSITIONAL
from research.train import COMPUTE_DTYPES, check_step_options, make_optimizer, make_train_step

REFERENCE = dict(vocab_size=8192, d_model=256, num_layers=4, num_heads=4, seq_len=256, batch_size=16)
"""The reference config. A `ref` dict may also carry "compute_dtype" (a key of train.COMPUTE_DTYPES; default
"float32"): the training step's forward and backward dtype, and the dtype of the matmul rate MFU is taken against."""


def compute_dtype(ref: dict) -> str:
    """The ref's compute dtype name, checked as train.compute_dtype is (`train.check_step_options`)."""
    name = ref.get("compute_dtype", "float32")
    check_step_options(TrainConfig(compute_dtype=name))
    return name


def _times(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def _median_time(fn, repeats: int) -> float:
    return statistics.median(_times(fn, repeats))


def _into_donated(fn, *args):
    """A no-argument callable: `fn(*args)` jitted, its output written into a donated buffer of its shape that is
    already mapped, so that a measurement times the kernel, not the allocator's fresh pages (see research.hostmem)."""
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
    call = _into_donated(jnp.matmul, a, b)
    return 2 * n**3 / _median_time(call, repeats)


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
        call = _into_donated(lambda x: x + 1.0, x)
    return 2 * x.nbytes / _median_time(call, repeats)


def model_flops_per_token(
    counts: dict, *, vocab_size: int, d_model: int, num_layers: int, seq_len: int
) -> float:
    readout = vocab_size * d_model
    return 6 * (counts["rest"] + counts["positional"] + readout) + 12 * num_layers * seq_len * d_model


@dataclasses.dataclass
class Reference:
    """The reference model and its jitted training step (donating), with one fixed random batch."""

    resolved: object
    graphdef: object
    params: object
    counts: dict
    tx: optax.GradientTransformation
    opt_state: object
    step_fn: object
    inputs: jax.Array
    targets: jax.Array

    def compile(self):
        """The training step lowered and compiled for this batch (timed by `compile_seconds`)."""
        return self.step_fn.lower(
            self.params, self.opt_state, self.inputs, self.targets, jnp.int32(0)
        ).compile()

    def runner(self, compiled):
        """i -> loss of step i: `compiled` applied to this reference's own state, which it donates and replaces."""
        state = [self.params, self.opt_state]

        def one(i):
            state[0], state[1], loss = compiled(state[0], state[1], self.inputs, self.targets, jnp.int32(i))
            return loss

        return one


def reference(
    positional: str, ref: dict = REFERENCE, *, loss_chunk: int | None = None, scan_layers: bool = False
):
    """The reference config with `positional` (optionally another train.loss_chunk than the default, or scanned
    layers) -> Reference."""
    model_config = ModelConfig(
        d_model=ref["d_model"],
        num_layers=ref["num_layers"],
        num_heads=ref["num_heads"],
        positional={"name": positional},
        scan_layers=scan_layers,
    )
    resolved = resolve_model(model_config, max_len=ref["seq_len"], vocab_size=ref["vocab_size"])
    model = Transformer(resolved, vocab_size=ref["vocab_size"], rngs=nnx.Rngs(0))
    counts = parameter_counts(model)
    graphdef, params = nnx.split(model)
    train = TrainConfig(steps=1000, warmup_steps=10)
    tx = make_optimizer(train)
    loss_chunk = train.loss_chunk if loss_chunk is None else loss_chunk
    dtype = COMPUTE_DTYPES[compute_dtype(ref)]
    step_fn = make_train_step(
        graphdef, tx, resolved.positions, seed=0, compute_dtype=dtype, loss_chunk=loss_chunk
    )
    rng = np.random.default_rng(0)
    shape = (ref["batch_size"], ref["seq_len"])
    inputs = jnp.asarray(rng.integers(0, ref["vocab_size"], shape), jnp.int32)
    targets = jnp.asarray(rng.integers(0, ref["vocab_size"], shape), jnp.int32)
    return Reference(resolved, graphdef, params, counts, tx, tx.init(params), step_fn, inputs, targets)


def _layers_grad(r: Reference):
    """Jitted params -> gradient of <features(inputs), fixed cotangent>: the layers' forward and backward (embedding
    lookup, positional encoding, every block, final norm) without the readout and loss."""
    b, t = r.inputs.shape
    pos = r.resolved.positions.sample(b, t, key=jax.random.key(0), train=True)
    cotangent = jnp.asarray(
        np.random.default_rng(1).normal(size=(b, t, r.resolved.config.d_model)), jnp.float32
    )
    features = lambda p: nnx.merge(r.graphdef, p).features(r.inputs, pos)  # noqa: E731
    return jax.jit(jax.grad(lambda p: jnp.vdot(features(p), cotangent)))


def step_breakdown(positional: str = "rope", *, repeats: int = 5, ref: dict = REFERENCE) -> dict:
    """Where a training step's time goes: medians (ms) of separately jitted parts at the reference config.

    - `layers`: embedding lookup + positional + every block, forward and backward (to a fixed cotangent);
    - `readout_loss`: readout matmul + softmax cross-entropy, forward and backward, as the default train.loss_chunk
      computes them (fused and chunked, research/loss.py);
    - `readout_loss_plain`: the same on the full [B,T,V] logits (train.loss_chunk = 0);
    - `optimizer`: the AdamW update and its application to every parameter;
    - `step`: the whole jitted training step. `step` minus the sum of the parts is what fusion across the parts
      saves (negative) or what the glue costs (positive)."""
    from research.loss import fused_mean_nll, mean_nll

    r = reference(positional, ref)
    params = r.params
    hidden = jnp.asarray(np.random.default_rng(2).normal(size=(*r.inputs.shape, ref["d_model"])), jnp.float32)
    layers = _layers_grad(r)

    def readout(fused: bool):
        def loss(p, h):
            embedding = nnx.merge(r.graphdef, p).embedding
            if fused:
                return fused_mean_nll(embedding, h, r.targets, chunk=TrainConfig().loss_chunk)
            return mean_nll(embedding.unembed(h), r.targets)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

    @jax.jit
    def optimizer(p, state, g):
        updates, state = r.tx.update(g, state, p)
        return optax.apply_updates(p, updates), state

    plain, fused = readout(False), readout(True)
    grads = jax.tree.map(jnp.ones_like, params)
    state = [jax.tree.map(jnp.copy, params), r.tx.init(params)]  # the step donates its own copies

    def step():
        state[0], state[1], loss = r.step_fn(state[0], state[1], r.inputs, r.targets, jnp.int32(0))
        return loss

    parts = {
        "layers": lambda: layers(params),
        "readout_loss": lambda: fused(params, hidden),
        "readout_loss_plain": lambda: plain(params, hidden),
        "optimizer": lambda: optimizer(params, r.opt_state, grads),
        "step": step,
    }
    out = {}
    for name, fn in parts.items():
        jax.block_until_ready(fn())  # compile and warm up
        out[name] = _median_time(fn, repeats) * 1e3
    return out


_CONTROL_FLOW = ("while", "call", "conditional")
"""HLO ops whose traced intervals contain their bodies' ops: left out of the per-op times (no double counting)."""


def profile_ops(
    positional: str = "rope",
    *,
    steps: int = 3,
    top: int = 20,
    ref: dict = REFERENCE,
    scan_layers: bool = False,
) -> dict:
    """Trace `steps` training steps with jax.profiler and attribute the time to XLA's compiled ops.

    -> {"step_ms", "traced_ms", "ops": the `top` ops by ms per step, each with its HLO name, output shape and the
    jax operation it came from (its metadata op_name), "by_source": ms per step summed by that jax operation and
    output shape}. Durations are the executor's per-op intervals: ops the CPU runtime runs concurrently (some
    matmuls) overlap, so `traced_ms` need not equal `step_ms`."""
    import collections
    import gzip
    import json
    import re
    import tempfile

    r = reference(positional, ref, scan_layers=scan_layers)
    compiled = r.compile()
    one = r.runner(compiled)
    for i in range(2):
        jax.block_until_ready(one(i))
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for i in range(steps):
                jax.block_until_ready(one(i))
        step_ms = (time.perf_counter() - start) / steps * 1e3  # includes the tracer's own overhead
        (trace,) = Path(folder).rglob("*.trace.json.gz")
        events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    instructions = {}  # HLO name -> (output shape, jax op)
    for line in compiled.as_text().splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (.*?) ([\w\-]+)\(", line)
        if m and m.group(3) not in _CONTROL_FLOW:
            source = re.search(r'op_name="([^"]+)"', line)
            instructions[m.group(1)] = (m.group(2), source.group(1) if source else "")
    total = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in instructions:
            total[e["name"]] += e["dur"] / 1e3 / steps  # microseconds -> ms per step
    ops = [
        {"op": name, "ms": ms, "shape": instructions[name][0], "source": instructions[name][1]}
        for name, ms in total.most_common()
    ]
    by_source = collections.Counter()
    for o in ops:
        by_source[f"{o['source'].rsplit('/', 1)[-1] or '?'} -> {o['shape'].split('{')[0]}"] += o["ms"]
    return {
        "step_ms": step_ms,
        "traced_ms": sum(total.values()),
        "ops": ops[:top],
        "by_source": dict(by_source.most_common(top)),
    }


def layers_cost(positional: str = "rope", *, ref: dict = REFERENCE) -> dict:
    """XLA's own cost analysis of the layers' forward and backward (the `layers` part of `step_breakdown`):
    {"flops", "bytes"} = floating-point operations and bytes read + written by the compiled program. With the
    measured matmul rate and copy bandwidth they bound the time from below (compute-bound vs bandwidth-bound)."""
    r = reference(positional, ref)
    cost = _layers_grad(r).lower(r.params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost  # older jax returned one dict per device
    return {"flops": float(cost["flops"]), "bytes": float(cost["bytes accessed"])}


def compile_seconds(positional: str, *, num_layers: int, scan_layers: bool, ref: dict = REFERENCE) -> float:
    """Seconds to lower and compile the reference training step at depth `num_layers` (layers looped or
    scanned), with a fresh compilation cache entry (a new jit per call)."""
    r = reference(positional, {**ref, "num_layers": num_layers}, scan_layers=scan_layers)
    start = time.perf_counter()
    r.compile()
    return time.perf_counter() - start


def step_seconds(one, *, steps: int, warmup: int) -> list[float]:
    """Wall times of `steps` calls one(i) after `warmup` untimed ones (`one` from Reference.runner; i counts up)."""
    index = itertools.count()
    for _ in range(warmup):
        jax.block_until_ready(one(next(index)))
    return _times(lambda: one(next(index)), steps)


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
        rows.append(row(name, _median_time(fn, repeats), moved, time.perf_counter() - compile_start))
    # The floor under the dense gradient: writing a new [V, d] buffer alone (a jitted zero-fill of the same shape).
    fill = jax.jit(lambda x: jnp.zeros((vocab, dim), jnp.float32) + x)
    jax.block_until_ready(fill(jnp.float32(0)))
    rows[1]["zero_fill_ms"] = _median_time(lambda: fill(jnp.float32(0)), repeats) * 1e3
    return rows


def reader_benchmark(words: int = 200_000, dim: int = 300, repeats: int = 3, log=print) -> list[dict]:
    """research.embedding.pretrained.load_vectors against gensim's KeyedVectors.load_word2vec_format on a
    synthetic words x dim file (values %.6f, cached under the cache folder), text and binary; medians."""
    from gensim.models import KeyedVectors

    from research.data.corpora import cache_dir
    from research.embedding.pretrained import load_vectors

    folder = cache_dir() / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    text, binary = folder / f"synthetic_{words}x{dim}.txt", folder / f"synthetic_{words}x{dim}.bin"
    if not (text.exists() and binary.exists()):
        log(f"writing synthetic {words} x {dim} vector files to {folder} (once)")
        matrix = np.random.default_rng(0).standard_normal((words, dim)).astype(np.float32)
        with open(str(text) + ".tmp", "w") as f:
            f.write(f"{words} {dim}\n")
            for start in range(0, words, 10_000):
                block = matrix[start : start + 10_000].tolist()
                f.writelines(
                    f"w{start + i} " + " ".join(f"{x:.6f}" for x in row) + "\n" for i, row in enumerate(block)
                )
        with open(str(binary) + ".tmp", "wb") as f:
            f.write(f"{words} {dim}\n".encode())
            for i, row in enumerate(matrix):
                f.write(f"w{i} ".encode() + row.astype("<f4").tobytes() + b"\n")
        Path(str(text) + ".tmp").replace(text)
        Path(str(binary) + ".tmp").replace(binary)
    rows = []
    for kind, path in (("text", text), ("binary", binary)):
        times = {"ours": [], "gensim": []}
        for _ in range(repeats):  # alternately, so that both see the same machine state
            times["ours"] += _times(lambda p=path: load_vectors(p), 1)
            times["gensim"] += _times(
                lambda p=path, b=kind == "binary": KeyedVectors.load_word2vec_format(p, binary=b), 1
            )
        ours, theirs = (statistics.median(times[who]) for who in ("ours", "gensim"))
        rows.append({
            "name": f"reader_word2vec_{kind}_{words}x{dim}", "ours_s": ours, "gensim_s": theirs,
            "speedup_vs_gensim": theirs / ours,
        })  # fmt: skip
        log(
            f"reader word2vec {kind} {words} x {dim}: ours {ours:.2f} s, gensim {theirs:.2f} s -> {theirs / ours:.2f}x"
        )
    return rows
