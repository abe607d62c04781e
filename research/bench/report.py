"""The benchmark's report: results/bench/table.md (rendered from bench.json's dict) and steps.png."""

from __future__ import annotations

import datetime
from pathlib import Path

from research.bench.reference import compute_dtype
from research.config import TrainConfig

SCHEME_TARGET = 1.10
"""The goal drawn in steps.png: every positional scheme within 1.10x the step time of nope."""


def plot(result: dict, path: Path) -> Path:
    """steps.png: each row's step time / nope (bars, min–max whiskers, the 1.10x target dashed) and, with the peer,
    tokens/s of rope against the peer, single runs and the interleaved rounds."""
    from research.studies import plotting

    rows = [r for r in result["rows"] if r["ratio_to_nope"]]
    peer = result.get("peer")
    fig, axes = plotting.figure(
        1, 2 if peer else 1, width=6 if peer else 7, height=0.32 * len(rows) + 1.6,
        gridspec_kw={"width_ratios": [3, 2]} if peer else None,
    )  # fmt: skip
    if rows:
        _ratio_panel(axes[0][0], result, rows)
    if peer:
        _peer_panel(axes[0][1], result, peer)
    m = result["machine"]
    pages = ", huge pages for host buffers" if m.get("huge_pages") else ""
    plotting.subtitle(fig, f"training step, {m['cpu']}, {m['cores']} cores{pages}")
    return plotting.save_figure(fig, path, dpi=100)


def _ratio_panel(ax, result: dict, rows: list[dict]) -> None:
    """Each row's step time / nope, min–max whiskers over the rounds, the target dashed."""
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


def _peer_panel(ax, result: dict, peer: dict) -> None:
    """tokens/s of rope against the peer: the single runs and each interleaved round."""
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
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
    ax.set_title("reference config, ours / peer", fontsize=9)


def render(result: dict, command: str) -> str:
    ref = result["reference"]
    lines = [
        "# Benchmark" if not result["rows"] else "# Training-step benchmark",
        "",
        _provenance(result, command),
    ]
    for name, info in sorted(result.get("sections", {}).items()):
        lines += ["", f"Section `{name}`: " + _provenance(info, info["command"])]
    if result["rows"]:  # the step table (left out with --skip steps) and its plot
        lines += _step_table(result, ref) + ["", "![step time / nope, ours / peer](steps.png)"]
    return "\n".join(lines + _other_rows(result)) + "\n"


def _provenance(info: dict, command: str) -> str:
    """`command` on date; machine, device, versions: where and how a set of rows was measured."""
    m = info["machine"]
    return (
        f"`{info.get('command', command)}` on {info.get('date', datetime.date.today().isoformat())}; {m['cpu']}, "
        f"{m['cores']} cores, {info['device']['count']} × {info['device']['kind']}, "
        f"{'huge pages for host buffers' if m.get('huge_pages') else 'default malloc, no huge pages'} "
        f"(research/runtime/hostmem.py), native kernels {m.get('native_kernels', 'n/a')} (research/runtime/native.py); "
        + ", ".join(f"{k} {v}" for k, v in sorted(info["versions"].items()))
    )


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
    """The tables of every section after the step table, in the order the sections ran."""
    return [
        *_breakdown_rows(result),
        *_profile_rows(result.get("profile")),
        *_compile_rows(result.get("compile")),
        *_peer_rows(result),
        *_embedding_rows(result),
        *_reader_rows(result.get("reader")),
        *_data_rows(result.get("data")),
    ]


def _data_rows(data: dict | None) -> list[str]:
    if not data:
        return []
    rows = {r["name"]: r for r in data["rows"]}
    bpe = data["bpe"]
    lines = [
        "",
        f"Data path (research/bench/data.py): a generated corpus of wiki-sample paragraphs prepared into token files "
        f"from scratch, each in a fresh process; {data['workers']} worker processes by default. BPE: SentencePiece, "
        f"{bpe['vocab_size']} pieces; its peer is a byte-level BPE `tokenizer.json` of the same size trained by "
        f"Hugging Face `tokenizers`, run through our pipeline and through the library's own batch encoder (all "
        f"cores, nothing written). Throughput: median (min–max) of interleaved rounds on {data['slice_mb']} MB.",
        "",
        "| prepare | MB/s (min–max) | tokens |",
        "|---|---|---|",
    ]
    for r in (r for r in data["rows"] if "mb_per_s_spread" in r):
        low, high = r["mb_per_s_spread"]
        lines.append(f"| {r['name']} | {r['mb_per_s']:.1f} ({low:.1f}–{high:.1f}) | {r['tokens']:,} |")
    lines += ["", "| peak resident memory | text MB | MB/s | peak RSS MB |", "|---|---|---|---|"]
    for r in (r for r in data["rows"] if r["name"].startswith(("prepare_memory", "train_memory"))):
        speed = f"{r['mb_per_s']:.1f}" if "mb_per_s" in r else f"{r['steps']} steps in {r['seconds']:.0f} s"
        lines.append(f"| {r['name']} | {r.get('text_mb', '')} | {speed} | {r['peak_rss_mb']:.0f} |")
    if (batch := rows.get("batch/byte")) is not None:
        lines += ["", f"Drawing one reference batch from the memory-mapped train split ({batch['train_tokens']:,} "
                  f"tokens): {batch['batch_ms']:.3f} ms median, {batch['fraction_of_step']:.2%} of rope's reference "
                  f"step timed in the same run ({batch['step_ms']:.0f} ms)."]  # fmt: skip
    return lines


def _breakdown_rows(result: dict) -> list[str]:
    parts = result.get("breakdown")
    if not parts:
        return []
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
    lines = [
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
    return lines


def _compile_rows(compiled: list | None) -> list[str]:
    if not compiled:
        return []
    return [
        "",
        "Compile time of the rope training step against depth (`model.scan_layers`: one layer compiled, scanned):",
        "",
        "| layers | loop s | scan s |",
        "|---|---|---|",
        *(f"| {c['num_layers']} | {c['loop']:.2f} | {c['scan']:.2f} |" for c in compiled),
    ]


def _peer_rows(result: dict) -> list[str]:
    peer = result.get("peer")
    if not peer:
        return []
    lines = [
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
    return lines


def _embedding_rows(result: dict) -> list[str]:
    if not result.get("embedding"):
        return []
    sparse, dense = result["embedding"]
    return [
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


def _reader_rows(reader: list | None) -> list[str]:
    if not reader:
        return []
    return [
        "",
        "Pretrained-vector reader, `load_vectors` against gensim's `KeyedVectors.load_word2vec_format` on the "
        "same synthetic file (median of 3 loads each, the two alternating):",
        "",
        "| pretrained-vector reader | ours s | gensim s | speedup vs gensim |",
        "|---|---|---|---|",
        *(
            f"| {r['name']} | {r['ours_s']:.2f} | {r['gensim_s']:.2f} | {r['speedup_vs_gensim']:.2f}x |"
            for r in reader
        ),
    ]


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
