"""How wide should the token embedding be? Test bits-per-byte against the embedding width and the parameter count.

Two sweeps on the default corpus with a 4096-piece BPE vocabulary (where the embedding is a large share of a small
model), 3 seeds each:
- `sweep=width`: a fixed transformer (d_model 128, 3 layers, 4 heads) with a factorized embedding (ALBERT) of width
  E in {16, 32, 64, 128, 256, 512}: a V x E table projected to d_model, tied readout;
- `sweep=dmodel`: plain tied tables with d_model in {64, 128, 256} (E = d_model; the whole model grows).
Each run: 300 steps of 16 x 128 tokens, AdamW 3e-3, RoPE; test bits-per-byte at the training length.

Commands:
  python scripts/sweep.py experiments/embedding_size.py --jobs 2        # 27 runs
  python scripts/report.py experiments/embedding_size.py                # -> results/embedding_size/
  python scripts/sweep.py experiments/embedding_size.py:small --jobs 2  # 1 seed (9 runs)
  python scripts/train.py experiments/embedding_size.py:runlocal --workdir /tmp/run
"""

import statistics
from pathlib import Path

from research.config import Config, DataConfig, EvalConfig, ModelConfig
from research.studies import plotting
from research.studies.experiment import parse_knobs, schedule
from research.studies.figures import evaluation_note

WIDTHS = (16, 32, 64, 128, 256, 512)
D_MODELS = (64, 128, 256)
SEQ_LEN = 128


def knobs(arg):
    return parse_knobs(arg, small=False, runlocal=False, embed_dim=0, d_model=128, seed=0)


def get_config(arg: str = "") -> Config:
    k = knobs(arg)
    steps, eval_bytes, layers, vocab, seq_len, batch = 300, 60_000, 3, 4096, SEQ_LEN, 16
    if k.runlocal:
        steps, eval_bytes, layers, vocab, seq_len, batch = 4, 5_000, 1, 1100, 16, 4
    embedding = {"name": "table"} if not k.embed_dim else {"name": "factorized", "embed_dim": k.embed_dim}
    return Config(
        seed=k.seed,
        data=DataConfig(
            tokenizer={"name": "bpe", "vocab_size": vocab},
            seq_len=seq_len,
            batch_size=batch,
            max_eval_bytes=eval_bytes,
        ),
        model=ModelConfig(d_model=k.d_model, num_layers=layers, num_heads=4, embedding=embedding),
        train=schedule(steps, 3e-3),
        eval=EvalConfig(length_multipliers=(1,), batch_size=16, valid_max_windows=32),
    )


def sweep(add, arg: str = "") -> None:
    k = knobs(arg)
    seeds = (0,) if (k.small or k.runlocal) else (0, 1, 2)
    for seed in seeds:
        for e in WIDTHS:
            add(embed_dim=e, d_model=128, seed=seed)
        for d in D_MODELS:
            add(embed_dim=0, d_model=d, seed=seed)


def metrics() -> list[str]:
    return [f"test/len_{SEQ_LEN}/bpb"]


def figures(groups: dict, folder: Path) -> list[Path]:
    """bpb vs embedding width (factorized) and bpb vs total parameters (both sweeps); band: min-max over seeds."""
    fig, axes = plotting.figure(1, 2, width=5.4, height=3.9)
    left, right = axes[0]
    series = {"factorized, d_model 128": [], "table, E = d_model": []}
    for members in groups.values():
        knob = members[0]["knobs"]
        bpb = [m["summary"]["metrics"][metrics()[0]] for m in members]
        params = members[0]["summary"]["params"]
        label = "factorized, d_model 128" if int(knob["embed_dim"]) else "table, E = d_model"
        width = int(knob["embed_dim"]) or int(knob["d_model"])
        series[label].append((width, params["total"], statistics.fmean(bpb), min(bpb), max(bpb)))
    for label, points in series.items():
        if points:
            w, p, mean, lo, hi = zip(*sorted(points))
            plotting.line(left, w, mean, label, band=(lo, hi), order=list(series))
            plotting.line(right, p, mean, label, band=(lo, hi), order=list(series))
    left.set_xscale("log", base=2)
    left.set_xlabel("embedding width E")
    right.set_xscale("log")
    right.set_xlabel("total parameters")
    left.set_ylabel("test bits per byte")
    plotting.legend(fig)
    plotting.subtitle(
        fig, "Test bits per byte against embedding width and model size", evaluation_note(groups)
    )
    return [plotting.save_figure(fig, folder / "bpb_vs_embedding.png")]
