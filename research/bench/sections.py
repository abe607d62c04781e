"""The benchmark as a table of sections (`SECTIONS`, in run order). Each section takes the shared `Context`, stores
what the report renders under its own key of `ctx.result` (saved as bench.json), and returns its JSON rows, all of
one schema: {"name", "tokens_per_s", "step_ms", "mfu", ...the section's own fields}.

    steps      every scheme's training step at the reference config, in interleaved rounds (and rope's variants)
    breakdown  rope's step in parts, and XLA's cost analysis of its layers
    profile    a jax.profiler trace of rope's step, by XLA op
    compile    compile time against depth, looped and scanned
    embedding  a 256k x 1024 lookup and gradient against the copy bandwidth
    reader     the pretrained-vector reader against gensim
    peer       the same model in x-transformers (PyTorch), single runs and interleaved rounds
    data       preparing a generated 1 GB corpus into token files (MB/s against one process and the Hugging Face
               batch encoder; peak memory for 0.25, 0.5 and 1 GB) and drawing batches from it (research/bench/data.py)
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
from collections.abc import Callable

from research.bench import breakdown, data, embedding, measure, peer, reader, steps
from research.bench.reference import reference
from research.data.tokens import default_workers


@dataclasses.dataclass
class Context:
    args: object
    """The parsed command line (scripts/bench.py)."""
    ref: dict
    log: Callable
    result: dict = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def copy_bytes_per_s(self) -> float:
        """The copy bandwidth, measured once for the sections that compare against it."""
        self.result["copy_bytes_per_s"] = measure.copy_bandwidth()
        return self.result["copy_bytes_per_s"]


def row(name: str, *, tokens_per_s=None, step_ms=None, mfu=None, **fields) -> dict:
    """One JSON row: the four keys every section shares, then the section's own."""
    return {"name": name, "tokens_per_s": tokens_per_s, "step_ms": step_ms, "mfu": mfu, **fields}


def run_steps(ctx: Context) -> list[dict]:
    args = ctx.args
    schemes = args.schemes if "steps" not in args.skip else (["rope"] if "peer" not in args.skip else [])
    variants = () if "variants" in args.skip else ({"loss_chunk": args.loss_chunk}, {"scan_layers": True})
    ctx.result.update(
        steps.run_benchmarks(
            schemes, steps=args.steps, warmup=args.warmup, rounds=args.rounds, ref=ctx.ref, variants=variants,
            log=ctx.log,
        )
    )  # fmt: skip
    keys = ("tokens_per_s", "step_ms", "mfu", "compile_s", "ratio_to_nope")
    return [row(r["name"], **{k: r[k] for k in keys}) for r in ctx.result["rows"]]


def run_breakdown(ctx: Context) -> list[dict]:
    parts = breakdown.step_breakdown("rope", repeats=ctx.args.steps, ref=ctx.ref)
    ctx.log("breakdown rope: " + ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items()))
    ctx.result["breakdown"] = parts
    cost = breakdown.layers_cost("rope", ref=ctx.ref)
    ctx.result["layers_cost"] = {**cost, "copy_bytes_per_s": ctx.copy_bytes_per_s}
    return [row("breakdown/rope", step_ms=parts["step"], parts_ms=parts)]


def run_profile(ctx: Context) -> list[dict]:
    profile = ctx.result["profile"] = breakdown.profile_ops("rope", ref=ctx.ref)
    ctx.log(f"profile rope: {profile['traced_ms']:.1f} ms of XLA ops per step traced")
    return [row("profile/rope", step_ms=profile["step_ms"], by_source_ms=profile["by_source"])]


def run_compile(ctx: Context) -> list[dict]:
    timed = []
    for depth in ctx.args.depths:
        seconds = {
            mode: steps.compile_seconds("rope", num_layers=depth, scan_layers=mode == "scan", ref=ctx.ref)
            for mode in ("loop", "scan")
        }
        timed.append({"num_layers": depth, **seconds})
        ctx.log(f"compile rope, {depth} layers: loop {seconds['loop']:.1f} s, scan {seconds['scan']:.1f} s")
    ctx.result["compile"] = timed
    return [
        row(f"compile/rope/{c['num_layers']}_layers", compile_s_loop=c["loop"], compile_s_scan=c["scan"])
        for c in timed
    ]


def run_embedding(ctx: Context) -> list[dict]:
    copy = ctx.copy_bytes_per_s
    ctx.result["copy_bytes_per_s_fresh"] = measure.copy_bandwidth(fresh=True)
    rows = ctx.result["embedding"] = embedding.embedding_bandwidth(copy_bps=copy)
    for e in rows:
        ctx.log(f"{e['name']}: {e['step_ms']:.1f} ms, {e['fraction_of_copy']:.0%} of copy bandwidth")
    keys = ("step_ms", "fraction_of_copy", "zero_fill_ms")
    return [row(e["name"], **{k: e[k] for k in keys if k in e}) for e in rows]


def run_reader(ctx: Context) -> list[dict]:
    rows = ctx.result["reader"] = reader.reader_benchmark(words=ctx.args.reader_words, log=ctx.log)
    return [row(r["name"], step_ms=r["ours_s"] * 1e3, speedup_vs_gensim=r["speedup_vs_gensim"]) for r in rows]


def run_peer(ctx: Context) -> list[dict]:
    if not ctx.args.peer:
        return []
    if not peer.available():
        ctx.log(
            "peer skipped: install it with `.venv/bin/pip install -e .[peers]` (torch CPU, x-transformers)"
        )
        return []
    args = ctx.args
    theirs = peer.bench_peer_process(ref=ctx.ref, steps=args.steps, warmup=args.warmup)
    ours = next((r for r in ctx.result["rows"] if r["scheme"] == "rope"), None)
    theirs["ours_over_peer"] = ours["tokens_per_s"] / theirs["tokens_per_s"] if ours else None
    ctx.log(f"peer x-transformers: {theirs['step_ms']:.1f} ms/step, {theirs['tokens_per_s']:.0f} tokens/s")
    theirs["rounds"] = peer_rounds(ctx)
    if theirs["rounds"]:
        theirs["ours_over_peer_median"] = statistics.median(r["ours_over_peer"] for r in theirs["rounds"])
    ctx.result["peer"] = theirs
    keys = ("tokens_per_s", "step_ms", "ours_over_peer")
    return [row(theirs["name"], **{k: theirs[k] for k in keys})]


def peer_rounds(ctx: Context) -> list[dict]:
    """Rope and the peer timed alternately, so that both see the same machine state."""
    args, rounds = ctx.args, []
    rope = reference("rope", ctx.ref)
    run_rope = rope.runner(rope.compile())  # compiled once for every round
    for i in range(args.peer_rounds):
        mine = 1e3 * statistics.median(measure.step_seconds(run_rope, steps=args.steps, warmup=args.warmup))
        theirs = peer.bench_peer_process(ref=ctx.ref, steps=args.steps, warmup=args.warmup)["step_ms"]
        rounds.append({"ours_ms": mine, "peer_ms": theirs, "ours_over_peer": theirs / mine})
        ctx.log(f"round {i + 1}: rope {mine:.1f} ms, peer {theirs:.1f} ms, ours/peer {theirs / mine:.2f}")
    return rounds


def run_data(ctx: Context) -> list[dict]:
    args, log = ctx.args, ctx.log
    corpus = data.generate_corpus(max(args.data_mb))
    workers = default_workers()
    rows = data.throughput(
        data.subset(corpus, args.data_slice_mb), rounds=args.data_rounds, workers=workers, log=log
    )
    rows += data.memory(corpus, sorted(args.data_mb), workers=workers, log=log)
    biggest = data.subset(corpus, max(args.data_mb))
    rows.append(data.training_memory(biggest, ctx.ref))
    log(f"training on {max(args.data_mb)} MB: peak RSS {rows[-1]['peak_rss_mb']:.0f} MB")
    batch = data.batch_time(biggest, ctx.ref)
    one, _ = steps.prepare_scheme("rope", ref=ctx.ref)  # the reference step, timed in this run
    batch["step_ms"] = 1e3 * statistics.median(measure.step_seconds(one, steps=6, warmup=1))
    batch["fraction_of_step"] = batch["batch_ms"] / batch["step_ms"]
    rows.append(batch)
    ctx.result["data"] = {"rows": rows, "workers": workers, "slice_mb": args.data_slice_mb, "bpe": data.BPE}
    return [row(r["name"], **{k: v for k, v in r.items() if k != "name"}) for r in rows]


SECTIONS: dict[str, Callable[[Context], list[dict]]] = {
    "steps": run_steps,
    "breakdown": run_breakdown,
    "profile": run_profile,
    "compile": run_compile,
    "embedding": run_embedding,
    "reader": run_reader,
    "peer": run_peer,
    "data": run_data,
}
"""Section name -> runner, in run order. `steps` always runs (it measures the matmul rate every MFU is taken
against); with `--skip steps` it times only what the peer needs (rope), or nothing."""
