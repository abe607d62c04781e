"""Benchmark the training step of every positional scheme at the reference config.

Prints a table (or, with --json, one JSON object per row) and writes results/bench/{table.md,bench.json}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path

from research.bench import REFERENCE, compute_dtype, run_benchmarks
from research.config import TrainConfig
from research.hostmem import reexec_with_huge_pages
from research.metrics import atomic_write_json, atomic_write_text
from research.train import COMPUTE_DTYPES, run_info

SECTIONS = ("steps", "variants", "breakdown", "profile", "compile", "peer", "embedding", "reader")
COMPILE_DEPTHS = (2, 4, 8, 16)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schemes", nargs="*", help="positional schemes (default: all registered)")
    parser.add_argument(
        "--steps",
        type=int,
        default=24,
        help="timed steps per scheme after warm-up, split over the rounds (median)",
    )
    parser.add_argument(
        "--rounds", type=int, default=6,
        help="every scheme is compiled first, then timed in this many interleaved rounds; the ratio to nope is the "
        "median over rounds of the ratio within a round, so drift of the machine's speed cancels",
    )  # fmt: skip
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--out", default="results/bench", help="folder for table.md and bench.json ('' = none)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per measured row")
    parser.add_argument(
        "--no-peer", dest="peer", action="store_false", help="skip the PyTorch x-transformers peer"
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=SECTIONS,
        help="sections to leave out: steps (every scheme), variants (rope with the plain loss, with scanned "
        "layers), breakdown (rope's step split into layers, readout+loss, optimizer), profile (jax.profiler trace of rope's step: the XLA ops that take the time), compile (compile time vs depth, looped vs scanned), peer, embedding (256k x 1024 "
        "gather/scatter), reader (pretrained-vector reader vs gensim, 200k x 300 files written once to the cache)",
    )  # fmt: skip
    parser.add_argument(
        "--loss-chunk", type=int, default=0,
        help="variants: another train.loss_chunk to time (0 = the plain loss on full logits; default 1024 is fused)",
    )  # fmt: skip
    parser.add_argument(
        "--depths", type=int, nargs="*", default=list(COMPILE_DEPTHS), help="compile: depths to compile"
    )
    parser.add_argument(
        "--peer-rounds", type=int, default=3,
        help="peer: rounds of rope and the peer timed alternately (median ratio reported); 0 = none",
    )  # fmt: skip
    parser.add_argument("--reader-words", type=int, default=200_000)
    for key, value in REFERENCE.items():
        parser.add_argument(f"--{key}", type=int, default=value)
    parser.add_argument(
        "--compute_dtype", choices=COMPUTE_DTYPES, default="float32",
        help="the training step's forward/backward dtype (train.compute_dtype); MFU is then against the matmul rate "
        "measured in that dtype. The peer and the breakdown section run in float32 only and are left out otherwise",
    )  # fmt: skip
    args = parser.parse_args(argv)
    ref = {k: getattr(args, k) for k in REFERENCE} | {"compute_dtype": args.compute_dtype}
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    if args.compute_dtype != "float32":
        args.skip = [*args.skip, "breakdown", "peer"]
        log(f"compute_dtype {args.compute_dtype}: the breakdown and the peer (float32 only) are left out")
    schemes = args.schemes if "steps" not in args.skip else (["rope"] if "peer" not in args.skip else [])
    variants = () if "variants" in args.skip else ({"loss_chunk": args.loss_chunk}, {"scan_layers": True})
    result = run_benchmarks(
        schemes, steps=args.steps, warmup=args.warmup, rounds=args.rounds, ref=ref, variants=variants, log=log
    )
    result.update(run_info())
    result["embedding"] = result["reader"] = None
    result["breakdown"] = None
    if not {"breakdown", "embedding"} <= set(
        args.skip
    ):  # measured once: the cost-analysis line, the embedding
        from research.bench import copy_bandwidth

        result["copy_bytes_per_s"] = copy_bandwidth()
    if "breakdown" not in args.skip:
        from research.bench import step_breakdown

        result["breakdown"] = step_breakdown("rope", repeats=args.steps, ref=ref)
        log("breakdown rope: " + ", ".join(f"{k} {v:.1f} ms" for k, v in result["breakdown"].items()))
        from research.bench import layers_cost

        result["layers_cost"] = {
            **layers_cost("rope", ref=ref),
            "copy_bytes_per_s": result["copy_bytes_per_s"],
        }
    result["profile"] = None
    if "profile" not in args.skip:
        from research.bench import profile_ops

        result["profile"] = profile_ops("rope", ref=ref)
        log(f"profile rope: {result['profile']['traced_ms']:.1f} ms of XLA ops per step traced")
    result["compile"] = None
    if "compile" not in args.skip:
        from research.bench import compile_seconds

        result["compile"] = [
            {
                "num_layers": depth,
                **{
                    mode: compile_seconds("rope", num_layers=depth, scan_layers=mode == "scan", ref=ref)
                    for mode in ("loop", "scan")
                },
            }
            for depth in args.depths
        ]
        for c in result["compile"]:
            log(f"compile rope, {c['num_layers']} layers: loop {c['loop']:.1f} s, scan {c['scan']:.1f} s")
    if "embedding" not in args.skip:
        from research.bench import copy_bandwidth, embedding_bandwidth

        result["copy_bytes_per_s_fresh"] = copy_bandwidth(fresh=True)
        result["embedding"] = embedding_bandwidth(copy_bps=result["copy_bytes_per_s"])
        for e in result["embedding"]:
            log(f"{e['name']}: {e['step_ms']:.1f} ms, {e['fraction_of_copy']:.0%} of copy bandwidth")
    if "reader" not in args.skip:
        from research.bench import reader_benchmark

        result["reader"] = reader_benchmark(words=args.reader_words, log=log)
    from research.bench_peer import available, bench_peer_process

    result["peer"] = None
    if args.peer and "peer" not in args.skip and available():
        peer = bench_peer_process(ref=ref, steps=args.steps, warmup=args.warmup)
        ours = next((r for r in result["rows"] if r["scheme"] == "rope"), None)
        peer["ours_over_peer"] = ours["tokens_per_s"] / peer["tokens_per_s"] if ours else None
        log(f"peer x-transformers: {peer['step_ms']:.1f} ms/step, {peer['tokens_per_s']:.0f} tokens/s")
        from research.bench import reference, step_seconds

        rounds = []  # ours and the peer alternately, so that both see the same machine state
        rope = reference("rope", ref)
        run_rope = rope.runner(rope.compile())  # compiled once for every round
        for i in range(args.peer_rounds):
            mine = 1e3 * statistics.median(step_seconds(run_rope, steps=args.steps, warmup=args.warmup))
            theirs = bench_peer_process(ref=ref, steps=args.steps, warmup=args.warmup)["step_ms"]
            rounds.append({"ours_ms": mine, "peer_ms": theirs, "ours_over_peer": theirs / mine})
            log(f"round {i + 1}: rope {mine:.1f} ms, peer {theirs:.1f} ms, ours/peer {theirs / mine:.2f}")
        peer["rounds"] = rounds
        if rounds:
            peer["ours_over_peer_median"] = statistics.median(r["ours_over_peer"] for r in rounds)
        result["peer"] = peer
    elif args.peer and "peer" not in args.skip:  # asked for, not installed
        log("peer skipped: install it with `.venv/bin/pip install -e .[peers]` (torch CPU, x-transformers)")
    if args.json:
        for row in result["rows"]:
            print(
                json.dumps(
                    {
                        k: row[k]
                        for k in ("name", "tokens_per_s", "step_ms", "mfu", "compile_s", "ratio_to_nope")
                    }
                )
            )
        if result["breakdown"]:
            print(json.dumps({"name": "breakdown/rope", "tokens_per_s": None, "step_ms": result["breakdown"]["step"],
                              "mfu": None, "parts_ms": result["breakdown"]}))  # fmt: skip
        if result["profile"]:
            print(json.dumps({"name": "profile/rope", "tokens_per_s": None, "step_ms": result["profile"]["step_ms"],
                              "mfu": None, "by_source_ms": result["profile"]["by_source"]}))  # fmt: skip
        for c in result["compile"] or []:
            print(json.dumps({"name": f"compile/rope/{c['num_layers']}_layers", "tokens_per_s": None,
                              "step_ms": None, "mfu": None, "compile_s_loop": c["loop"],
                              "compile_s_scan": c["scan"]}))  # fmt: skip
        for e in result["embedding"] or []:
            keys = ("name", "step_ms", "fraction_of_copy", "zero_fill_ms")
            print(json.dumps({"tokens_per_s": None, "mfu": None} | {k: e[k] for k in keys if k in e}))
        for r in result["reader"] or []:
            print(json.dumps({"name": r["name"], "tokens_per_s": None, "step_ms": r["ours_s"] * 1e3, "mfu": None,
                              "speedup_vs_gensim": r["speedup_vs_gensim"]}))  # fmt: skip
        if result["peer"]:
            peer = result["peer"]
            print(
                json.dumps(
                    {k: peer[k] for k in ("name", "tokens_per_s", "step_ms", "ours_over_peer")}
                    | {"mfu": None}
                )
            )
    table = render(result, " ".join(["python scripts/bench.py", *(argv or sys.argv[1:])]))
    if not args.json:
        print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "bench.json", result)
        atomic_write_text(out / "table.md", table)
        if result["rows"]:
            plot(result, out / "steps.png")
    return 0


SCHEME_TARGET = 1.10  # issue 7: every positional scheme within 1.10x the step time of nope


def plot(result: dict, path: Path) -> Path:
    """steps.png: each row's step time / nope (bars, min–max whiskers, the 1.10x target dashed) and, with the peer,
    tokens/s of rope against the peer, single runs and the interleaved rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from research.plotting import save_figure

    rows = [r for r in result["rows"] if r["ratio_to_nope"]]
    peer = result.get("peer")
    fig, axes = plt.subplots(
        1, 2 if peer else 1, figsize=(12 if peer else 7, 0.32 * len(rows) + 1.6), squeeze=False,
        gridspec_kw={"width_ratios": [3, 2]} if peer else None,
    )  # fmt: skip
    ax = axes[0][0]
    if rows:
        ratios = [r["ratio_to_nope"] for r in rows]
        spans = [(min(r["ratio_to_nope_rounds"]), max(r["ratio_to_nope_rounds"])) for r in rows]
        lo = [x - a for x, (a, _) in zip(ratios, spans, strict=True)]
        hi = [b - x for x, (_, b) in zip(ratios, spans, strict=True)]
        colors = [  # variants of rope's options (name+option) are not schemes: the target does not apply
            "tab:gray" if "+" in r["scheme"] else "tab:red" if x > SCHEME_TARGET else "tab:blue"
            for r, x in zip(rows, ratios, strict=True)
        ]
        y = range(len(rows))
        ax.barh(y, ratios, xerr=[lo, hi], color=colors, alpha=0.8, error_kw={"lw": 0.8})
        ax.set_yticks(list(y), [r["scheme"] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.axvline(1.0, color="k", lw=0.8)
        ax.axvline(SCHEME_TARGET, color="tab:red", ls="--", lw=0.8, label=f"target {SCHEME_TARGET:.2f}x")
        ax.set_xlim(min(0.9, min(a for a, _ in spans) - 0.02), max(b for _, b in spans) + 0.05)
        ax.set_xlabel(
            f"step time / nope (median over rounds; whiskers: min–max of the {result['rounds']} rounds)"
        )
        ax.legend(fontsize=8, loc="lower right")
    if peer:
        ax = axes[0][1]
        rope = next((r for r in result["rows"] if r["scheme"] == "rope"), None)
        tokens = result["reference"]["batch_size"] * result["reference"]["seq_len"]
        rounds = peer.get("rounds") or []
        labels, ours, theirs = ["single runs"], [rope["tokens_per_s"] if rope else 0], [peer["tokens_per_s"]]
        for i, r in enumerate(rounds):
            labels.append(f"round {i + 1}")
            ours.append(tokens / r["ours_ms"] * 1e3)
            theirs.append(tokens / r["peer_ms"] * 1e3)
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], ours, width=0.4, label="ours (rope)", color="tab:blue")
        ax.bar([i + 0.2 for i in x], theirs, width=0.4, label="x-transformers (PyTorch)", color="tab:gray")
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            if a and b:
                ax.text(i, max(a, b) * 1.01, f"{a / b:.2f}x", ha="center", fontsize=8)
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_ylabel("tokens/s")
        ax.set_ylim(0, max(ours + theirs) * 1.12)
        ax.legend(fontsize=8, loc="lower right")
        ax.set_title("reference config, ours / peer", fontsize=9)
    m = result["machine"]
    pages = ", huge pages for host buffers" if m.get("huge_pages") else ""
    fig.suptitle(f"training step, {m['cpu']}, {m['cores']} cores{pages}", fontsize=10)
    return save_figure(fig, path, dpi=100)


def render(result: dict, command: str) -> str:
    ref = result["reference"]
    m = result["machine"]
    lines = [
        "# Benchmark" if not result["rows"] else "# Training-step benchmark",
        "",
        f"`{command}` on {datetime.date.today().isoformat()}; {m['cpu']}, {m['cores']} cores, "
        f"{result['device']['count']} × {result['device']['kind']}, "
        f"{'huge pages for host buffers' if m.get('huge_pages') else 'default malloc, no huge pages'} "
        f"(research/hostmem.py), native kernels {m.get('native_kernels', 'n/a')} (research/native.py); "
        + ", ".join(f"{k} {v}" for k, v in sorted(result["versions"].items())),
    ]
    if result["rows"]:  # the step table (left out with --skip steps) and its plot
        lines += _step_table(result, ref) + ["", "![step time / nope, ours / peer](steps.png)"]
    return "\n".join(lines + _other_rows(result)) + "\n"


def _timing(result: dict) -> str:
    rounds = result["rounds"]
    per_round = max(1, result["steps"] // rounds)
    return (
        f"Every row compiled first, then timed in {rounds} interleaved rounds of {per_round} steps (one untimed "
        "step before each); step ms: median (min–max) of all its timed steps; step time / nope: median over the "
        "rounds of the ratio within a round, so drift of the machine's speed during the run cancels."
    )


def _step_table(result: dict, ref: dict) -> list[str]:
    lines = [
        "",
        f"Reference config: vocab {ref['vocab_size']}, d_model {ref['d_model']}, {ref['num_layers']} layers, "
        f"{ref['num_heads']} heads, sequence {ref['seq_len']}, batch {ref['batch_size']}, AdamW, "
        f"{compute_dtype(ref)}. {_timing(result)} MFU = model FLOPs/s ÷ measured "
        f"{compute_dtype(ref)} matmul rate "
        f"({result['matmul_peak_flops'] / 1e9:.1f} GFLOP/s in the same run).",
        "",
        "| scheme | step ms (min–max) | tokens/s | MFU | compile s | step time / nope |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ratio = f"{r['ratio_to_nope']:.3f}" if r["ratio_to_nope"] else "–"
        lines.append(
            f"| {r['scheme']} | {r['step_ms']:.1f} ({r['step_ms_spread'][0]:.1f}–{r['step_ms_spread'][1]:.1f}) "
            f"| {r['tokens_per_s']:.0f} | {r['mfu']:.1%} | {r['compile_s']:.2f} | {ratio} |"
        )
    return lines


def _other_rows(result: dict) -> list[str]:
    lines = []
    parts = result.get("breakdown")
    if parts:
        step = parts["step"]
        rows = [
            ("embedding + positional + layers, forward and backward", parts["layers"]),
            (
                f"readout + cross-entropy, forward and backward (fused, train.loss_chunk={TrainConfig().loss_chunk})",
                parts["readout_loss"],
            ),
            ("optimizer (AdamW update + apply)", parts["optimizer"]),
        ]
        rest = step - sum(ms for _, ms in rows)
        lines += [
            "",
            "Where rope's training step goes (each part jitted and timed alone, median; the readout on the full "
            f"logits, `train.loss_chunk=0`, takes {parts['readout_loss_plain']:.1f} ms instead):",
            "",
            "| part | ms | share of the step |",
            "|---|---|---|",
            *(f"| {name} | {ms:.1f} | {ms / step:.0%} |" for name, ms in rows),
            f"| the rest (step − parts: batch sampling, glue; negative = fusion across parts) | {rest:.1f} | "
            f"{rest / step:.0%} |",
            f"| whole step | {step:.1f} | 100% |",
        ]
        cost = result.get("layers_cost")
        if cost:
            compute_ms = cost["flops"] / result["matmul_peak_flops"] * 1e3
            memory_ms = cost["bytes"] / cost["copy_bytes_per_s"] * 1e3
            lines += [
                "",
                f"XLA's cost analysis of the layers' forward and backward: {cost['flops'] / 1e9:.1f} GFLOP and "
                f"{cost['bytes'] / 1e9:.2f} GB read + written: {compute_ms:.0f} ms at the measured matmul rate, "
                f"{memory_ms:.0f} ms at the measured copy bandwidth ({cost['copy_bytes_per_s'] / 1e9:.2f} GB/s), "
                f"against {parts['layers']:.0f} ms measured.",
            ]
    lines += _profile_rows(result.get("profile"))
    if result.get("compile"):
        lines += [
            "",
            "Compile time of the rope training step against depth (`model.scan_layers`: one layer compiled, "
            "scanned):",
            "",
            "| layers | loop s | scan s |",
            "|---|---|---|",
        ]
        lines += [f"| {c['num_layers']} | {c['loop']:.2f} | {c['scan']:.2f} |" for c in result["compile"]]
    peer = result.get("peer")
    if peer:
        lines += [
            "",
            f"Peer: the same model in x-transformers {peer['versions']['x_transformers']} (PyTorch "
            f"{peer['versions']['torch']}, {peer['torch_threads']} threads, {peer['params_total']:,} parameters), "
            "AdamW, same batch, in its own process with the C library's default malloc (huge pages made it slower): "
            f"{peer['step_ms']:.1f} ms/step ({peer['step_ms_spread'][0]:.1f}–"
            f"{peer['step_ms_spread'][1]:.1f}), {peer['tokens_per_s']:.0f} tokens/s. "
            f"**tokens/s ours (rope) / peer = {peer['ours_over_peer']:.2f}**.",
        ]
        if peer.get("rounds"):
            ratios = ", ".join(f"{r['ours_over_peer']:.2f}" for r in peer["rounds"])
            lines += [
                "",
                f"Interleaved: {len(peer['rounds'])} rounds of rope then the peer, {result['steps']} steps each: "
                f"ours/peer {ratios}; **median {peer['ours_over_peer_median']:.2f}**.",
            ]
    embedding = result.get("embedding")
    if embedding:
        sparse, dense = embedding
        lines += [
            "",
            f"Embedding lookup + gradient, {sparse['name'].rsplit('_', 1)[-1]} float32 table, "
            f"{sparse['tokens']} tokens, jitted. Against the measured copy "
            f"bandwidth: {result['copy_bytes_per_s'] / 1e9:.1f} GB/s into an already-mapped buffer "
            f"({result['copy_bytes_per_s_fresh'] / 1e9:.1f} GB/s into a new allocation each call).",
            "",
            "| embedding | ms | GB/s | of copy bandwidth |",
            "|---|---|---|---|",
            f"| gather + scatter-add into a donated accumulator (the kernels; a row-sparse update) | "
            f"{sparse['step_ms']:.2f} | {sparse['bytes_per_s'] / 1e9:.1f} | **{sparse['fraction_of_copy']:.0%}** |",
            f"| lookup + dense gradient (`jax.grad`: a new [V, d] buffer each call, as a training step gets) | "
            f"{dense['step_ms']:.1f} | {dense['bytes_per_s'] / 1e9:.1f} | {dense['fraction_of_copy']:.0%} |",
            f"| zero-filling a new [V, d] buffer alone (the floor under the dense gradient) | "
            f"{dense['zero_fill_ms']:.1f} | {dense['bytes'] / dense['zero_fill_ms'] / 1e6:.1f}* | – |",
            "",
            "\\* the dense gradient's bytes over the zero-fill's time: the rate the dense row would reach if only the "
            "write cost.",
        ]
    if result.get("reader"):
        lines += [
            "",
            "Pretrained-vector reader, `load_vectors` against gensim's `KeyedVectors.load_word2vec_format` on the "
            "same synthetic file (median of 3 loads each, the two alternating):",
            "",
            "| pretrained-vector reader | ours s | gensim s | speedup vs gensim |",
            "|---|---|---|---|",
        ]
        for r in result["reader"]:
            lines.append(
                f"| {r['name']} | {r['ours_s']:.2f} | {r['gensim_s']:.2f} | {r['speedup_vs_gensim']:.2f}x |"
            )
    return lines


def _profile_rows(profile: dict | None) -> list[str]:
    if not profile:
        return []
    step = profile["step_ms"]
    return [
        "",
        f"jax.profiler trace of rope's training step ({step:.0f} ms per step while traced; "
        f"{profile['traced_ms']:.0f} ms of XLA op intervals, which overlap where the CPU runtime runs ops "
        "concurrently). Time per step by the jax operation each compiled op came from and its output shape:",
        "",
        "| jax operation -> output | ms per step | share of the step |",
        "|---|---|---|",
        *(
            f"| `{name}` | {ms:.1f} | {ms / step:.0%} |"
            for name, ms in sorted(profile["by_source"].items(), key=lambda kv: -kv[1])
        ),
    ]


if __name__ == "__main__":
    reexec_with_huge_pages()  # before any work: glibc reads the tunable at start (research/hostmem.py)
    sys.exit(main())
