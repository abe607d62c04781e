"""How wide should the token embedding be? Test bits-per-byte against the embedding width and the parameter count.

Two sweeps on the default corpus with a 4096-piece BPE vocabulary (where the embedding is a large share of a small
model), 3 seeds each:
- `sweep=width`: a fixed transformer (d_model 128, 3 layers, 4 heads) with a factorized embedding (ALBERT) of width
  E in {16, 32, 64, 128, 256, 512}: a V x E table projected to d_model, tied readout;
- `sweep=dmodel`: plain tied tables with d_model in {64, 128, 256} (E = d_model; the whole model grows).
Each run: 300 steps of 16 x 128 tokens, AdamW 3e-3, RoPE; test bits-per-byte at the training length.

The ALBERT question (Lan et al. 2020, arXiv 1909.11942: factorizing the embedding frees parameters for the rest of
the model) needs equal parameter budgets, not equal widths: `equal_params` trains the factorized widths E in
EQUAL_WIDTHS, each at the d_model (a multiple of 8, so RoPE's head width stays even) whose total parameter count is
closest to the plain d_model-128 table's (1,115,008; `matched_d_model`, within 4%), beside that table. Every run
scores every test document (paired intervals over the 7 documents).

Commands:
  python scripts/sweep.py experiments/embedding_size.py --jobs 2        # 27 runs
  python scripts/report.py experiments/embedding_size.py                # -> results/embedding_size/
  python scripts/sweep.py experiments/embedding_size.py:small --jobs 2  # 1 seed (9 runs)
  python scripts/sweep.py experiments/embedding_size.py:equal_params --jobs 2   # 5 runs, equal parameter budgets
  python scripts/train.py experiments/embedding_size.py:runlocal --workdir /tmp/run
"""

import bisect
import dataclasses
import statistics
from pathlib import Path

from research.config import Config, DataConfig, EvalConfig, ModelConfig
from research.studies import plotting
from research.studies import verdicts as verdicts_lib
from research.studies.experiment import parse_knobs, schedule
from research.studies.figures import evaluation_note

WIDTHS = (16, 32, 64, 128, 256, 512)
EQUAL_WIDTHS = (
    16,
    32,
    64,
    128,
)  # E <= d_model: a wider table is no factorization (more parameters, not fewer)
REFERENCE_D_MODEL = 128  # the budget of `equal_params`: the plain table at this width
D_MODELS = (64, 128, 256)
SEQ_LEN = 128


def knobs(arg):
    return parse_knobs(arg, small=False, runlocal=False, equal_params=False, embed_dim=0, d_model=128, seed=0)


def get_config(arg: str = "") -> Config:
    k = knobs(arg)
    # 300 steps of 16 x 128 tokens, 3 layers: docs/running.md#study-scale; the whole test split (eval_bytes None)
    steps, eval_bytes, layers, vocab, seq_len, batch = 300, None, 3, 4096, SEQ_LEN, 16
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
    if k.equal_params:
        add(embed_dim=0, d_model=REFERENCE_D_MODEL, seed=0)
        for e in EQUAL_WIDTHS:
            add(embed_dim=e, d_model=matched_d_model(e, get_config(arg)), seed=0)
        return
    seeds = (0,) if (k.small or k.runlocal) else (0, 1, 2)
    for seed in seeds:
        for e in WIDTHS:
            add(embed_dim=e, d_model=128, seed=seed)
        for d in D_MODELS:
            add(embed_dim=0, d_model=d, seed=seed)


def parameter_count(config: Config, vocab_size: int) -> int:
    """The total parameter count of `config`'s model, from its abstract shapes (nothing is initialised)."""
    from flax import nnx

    from research.model.build import build_model, resolve_model
    from research.model.transformer import parameter_counts

    resolved = resolve_model(config.model, max_len=config.data.seq_len, vocab_size=vocab_size)
    model = nnx.eval_shape(lambda: build_model(resolved, vocab_size=vocab_size, seed=0))
    return parameter_counts(model)["total"]


def matched_d_model(embed_dim: int, base: Config) -> int:
    """The d_model (a multiple of 8) at which a factorized embedding of width `embed_dim` gives the total parameter
    count closest to the plain table at REFERENCE_D_MODEL (`base`: the sweep's config, for vocabulary and depth)."""
    vocab = base.data.tokenizer["vocab_size"]

    def total(d_model, embedding):
        model = dataclasses.replace(base.model, d_model=d_model, embedding=embedding)
        return parameter_count(dataclasses.replace(base, model=model), vocab)

    budget = total(REFERENCE_D_MODEL, {"name": "table"})
    factorized = {"name": "factorized", "embed_dim": embed_dim}
    candidates = range(
        8, 4 * REFERENCE_D_MODEL + 1, 8
    )  # the count grows with d_model: bisect, then the nearer
    above = bisect.bisect_left(candidates, budget, key=lambda d: total(d, factorized))
    near = candidates[max(above - 1, 0) : above + 1]
    return min(near, key=lambda d: abs(total(d, factorized) - budget))


def metrics() -> list[str]:
    return [f"test/len_{SEQ_LEN}/bpb"]


def baseline() -> dict:
    """The plain tied table at d_model 128: every other row as a paired difference to it."""
    return {"d_model": REFERENCE_D_MODEL, "embed_dim": 0}


def headline(groups: dict) -> list[str]:
    """The `equal_params` study (a factorized width at a d_model other than 128): each factorized width against the
    plain table at (nearly) the same total parameter count, paired over test documents."""
    knobs = {
        key: (int(m[0]["knobs"]["embed_dim"]), int(m[0]["knobs"]["d_model"])) for key, m in groups.items()
    }
    table = next((key for key, kd in knobs.items() if kd == (0, REFERENCE_D_MODEL)), None)
    if table is None or all(d == REFERENCE_D_MODEL for e, d in knobs.values() if e):
        return []
    metric, rows = metrics()[0], []
    for key, (e, d) in sorted(knobs.items(), key=lambda item: item[1]):
        if e and (est := verdicts_lib.paired(groups, (key, metric), (table, metric))):
            params = groups[key][0]["summary"]["params"]["total"]
            ci = f" [{est.lo:+.3f}, {est.hi:+.3f}]" if est.lo is not None else ""
            rows.append(f"E={e} at d_model {d} ({params:,} parameters) {est.mean:+.3f}{ci}")
    reference = groups[table][0]["summary"]["params"]["total"]
    return [
        f"- **Equal parameter budgets** (the ALBERT question): factorized embedding minus the plain d_model-"
        f"{REFERENCE_D_MODEL} table ({reference:,} parameters), test bpb [95% interval over documents]: "
        + "; ".join(rows)
        + "."
    ]


def figures(groups: dict, folder: Path) -> list[Path]:
    """bpb vs embedding width (factorized) and bpb vs total parameters (both sweeps); band: min-max over seeds."""
    fig, axes = plotting.figure(1, 2, width=5.4, height=3.9)
    left, right = axes[0]
    series = {"factorized, d_model 128": [], "factorized, equal parameters": [], "table, E = d_model": []}
    for members in groups.values():
        knob = members[0]["knobs"]
        bpb = [m["summary"]["metrics"][metrics()[0]] for m in members]
        params = members[0]["summary"]["params"]
        label = "table, E = d_model"
        if int(knob["embed_dim"]):
            label = (
                "factorized, d_model 128" if int(knob["d_model"]) == 128 else "factorized, equal parameters"
            )
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


ALBERT = "Lan et al. 2020 (ICLR, arXiv 1909.11942), Sec. 3.1"
ALBERT_WIDTH = 16
"""ALBERT's ratio E = H/6 (128 of 768) at our d_model 128 is ~21; of EQUAL_WIDTHS, 16 is the nearest."""


def verdicts(groups: dict) -> list:
    """ALBERT's factorization claim at an equal parameter budget (`equal_params` runs only): the factorized
    embedding at its matched d_model minus the plain table, paired over test documents."""
    table = verdicts_lib.group_key(groups, d_model=REFERENCE_D_MODEL, embed_dim=0)
    factorized = [
        key for key, m in groups.items()
        if int(m[0]["knobs"]["embed_dim"]) == ALBERT_WIDTH and int(m[0]["knobs"]["d_model"]) != REFERENCE_D_MODEL
    ]  # fmt: skip
    if table is None or len(factorized) != 1:
        return []
    metric = metrics()[0]
    if (est := verdicts_lib.paired(groups, (factorized[0], metric), (table, metric))) is None:
        return []
    d_model = groups[factorized[0]][0]["knobs"]["d_model"]
    claim = verdicts_lib.Claim(
        "Factorizing the embedding (E ~ H/6) and spending the freed parameters on the rest of the model lowers the "
        "loss at an equal parameter budget",
        ALBERT,
        f"embedding_size:equal_params: BPE-4k LM, 300 steps, {len(groups[table])} seed(s); E={ALBERT_WIDTH} at "
        f"d_model {d_model} vs the plain table at d_model {REFERENCE_D_MODEL}, parameters within 4%",
        "factorized minus plain table, test bpb",
        "<",
        command="python scripts/sweep.py experiments/embedding_size.py:equal_params --jobs 2",
    )
    return [(claim, est)]
