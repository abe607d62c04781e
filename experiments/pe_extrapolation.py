"""Do positional encodings extrapolate past the training length in a byte-level causal LM?

Question: train small decoder-only LMs on the default corpus (gensim's Wikipedia sample, byte tokens) at sequence
length 64 with each positional scheme, then measure test bits-per-byte at 1x, 2x, 4x and 8x that length.
Published claim (Press et al. 2022, arXiv 2108.12409): ALiBi and T5 bias stay flat past the training length;
sinusoidal and learned absolute encodings degrade; RoPE degrades too.

Evaluation (research/training/evaluate.py), both modes Press et al. report:
- `mode=windows`: the trained run itself, non-overlapping windows of each length over the whole test split;
- `mode=sliding`: an evaluation-only run of the same parameters (train.init_from, 0 steps), sliding windows 128
  tokens apart (2x the training length: at 512 tokens every scored byte has >= 384 bytes of context; stride 1, as in
  the paper's sliding-window numbers, would cost 512x the non-overlapping evaluation here).
The test split is 21 Wikipedia articles (wiki-sample with test_fraction 0.2, 651 KB), every byte scored; each run's
summary keeps per-document totals, so the report gives 95% bootstrap intervals over documents and every scheme's
difference to ALiBi, paired over the same documents. The loss by position in the window shows where a scheme breaks.

Schemes: the six of Press et al.'s comparison (SCHEMES) and every other registered scheme (EXTRA_SCHEMES;
`per_layer` is RoPE in two layers of three and none in the third, Llama 4's pattern scaled to 3 layers).

Commands:
  python scripts/sweep.py experiments/pe_extrapolation.py --jobs 2     # the six classic schemes x 3 seeds, 2 modes
  python scripts/report.py experiments/pe_extrapolation.py             # -> results/pe_extrapolation/
  python scripts/sweep.py experiments/pe_extrapolation.py:small        # every scheme x 1 seed
  python scripts/sweep.py experiments/pe_extrapolation.py:all          # every scheme x 3 seeds
  python scripts/sweep.py experiments/pe_extrapolation.py:demo         # make demo: 6 schemes x 1 seed, short
  python scripts/sweep.py experiments/pe_extrapolation.py:lr_grid --jobs 2   # fair budgets: 6 schemes x 3 rates
  python scripts/sweep.py experiments/pe_extrapolation.py:long --jobs 2 --reuse results/pe_extrapolation/runs
                                                                       # 6 schemes at 4x the steps (and at 1x)
  python scripts/train.py experiments/pe_extrapolation.py:runlocal,positional=alibi --workdir /tmp/run  # seconds

Fair budgets (two knobs, seed 0, non-overlapping windows; the report's headline says what they show):
- `lr_grid`: every classic scheme at each rate of LR_GRID (the main study's 6e-3 was tuned on RoPE alone); each
  scheme's rate is picked on the valid split (summary `valid/loss` after the last step), and the test is reported
  at that rate, beside the test at 6e-3.
- `long`: the six at 4x the steps (2000, ~4.1M training tokens, ~1.4 epochs of the train split; same peak rate and
  cosine schedule stretched), beside their 500-step runs: does the ranking at the training length and at 8x hold?

Runtime on 2 CPU cores: see the table header of results/pe_extrapolation/table.md (measured wall time).
"""

import math
import statistics
from pathlib import Path

from research.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig
from research.studies import intervals, plotting
from research.studies import verdicts as verdicts_lib
from research.studies.experiment import parse_knobs
from research.studies.figures import by_position, evaluation_note, extrapolation

SCHEMES = ("nope", "learned", "sinusoidal", "rope", "alibi", "t5_bias")
EXTRA_SCHEMES = (
    "scaled_sinusoidal",
    "xpos",
    "kerple",
    "sandwich",
    "fire",
    "cope",
    "xl_relative",
    "dynamic_bias",
    "data_dependent_alibi",
    "per_layer",
)
SPECS = {"per_layer": {"name": "per_layer", "pattern": ["rope", "rope", "nope"]}}
SEQ_LEN = 64  # short, so that the study fits in about an hour on 2 CPU cores
MULTIPLIERS = (1, 2, 4, 8)
SLIDING_STRIDE = 128
LEARNING_RATE = 6e-3  # best of LR_GRID for rope at 400 steps (the demo's); `lr_grid` picks per scheme at 500
LR_GRID = (2e-3, 6e-3, 1.2e-2)  # x1/3, x1, x2 around it: a divergence at 1.2e-2 shows on the valid split
STEPS = 500  # ~1M training bytes (32 x 64 per step), ~0.4 epochs: Press et al.'s regime is far longer; `long` is 4x
CORPUS = {"name": "wiki-sample", "test_fraction": 0.2}  # 21 test articles: enough documents for an interval


def knobs(arg):
    return parse_knobs(
        arg, demo=False, runlocal=False, small=False, all=False, lr_grid=False, long=False, positional="rope",
        seed=0, mode="windows", lr=LEARNING_RATE, budget=1,
    )  # fmt: skip


def get_config(arg: str = "") -> Config:
    k = knobs(arg)
    # d_model 128, 3 layers: the study scale (docs/running.md#study-scale); every test document (intervals)
    steps, d_model, layers, eval_bytes = STEPS * int(k.budget), 128, 3, None
    if k.demo:  # make demo: the phenomenon in <= 10 minutes of runs on 2 CPU cores (the table header says)
        steps, eval_bytes = 400, 100_000
    if k.runlocal:
        steps, d_model, layers, eval_bytes = 4, 32, 2, 5_000
    sliding = k.mode == "sliding"
    return Config(
        seed=k.seed,
        data=DataConfig(
            corpus=CORPUS,
            tokenizer={"name": "byte"},
            seq_len=SEQ_LEN,
            batch_size=32 if not k.runlocal else 4,
            max_eval_bytes=eval_bytes,
        ),
        model=ModelConfig(
            d_model=d_model,
            num_layers=layers,
            num_heads=4,
            positional=SPECS.get(k.positional, {"name": k.positional}),
        ),
        train=TrainConfig(
            steps=0 if sliding else steps,
            learning_rate=float(k.lr),
            warmup_steps=0 if sliding else max(1, steps // 10),
            log_every=max(1, min(50, steps // 4)),
            eval_every=max(1, steps // 3),
            checkpoint_every=max(1, steps // 3),
            init_from=f"mode=windows,positional={k.positional},seed={k.seed}" if sliding else None,
        ),
        eval=EvalConfig(
            length_multipliers=MULTIPLIERS,
            batch_size=16,
            valid_max_windows=64,
            stride=SLIDING_STRIDE if sliding else None,
        ),  # fmt: skip
    )


def sweep(add, arg: str = "") -> None:
    k = knobs(arg)
    # Fair budgets: seed 0, non-overlapping windows; the 1x runs of `long` are named as the main study's seed-0
    # runs, so that --reuse results/pe_extrapolation/runs adopts them.
    if k.lr_grid or k.long:
        for positional in SCHEMES:
            for option in (
                [{"lr": lr} for lr in LR_GRID] if k.lr_grid else [{"mode": "windows"}, {"budget": 4}]
            ):
                add(positional=positional, seed=0, **option)
        return
    seeds = (0,) if (k.demo or k.runlocal or k.small) else (0, 1, 2)
    schemes = SCHEMES + EXTRA_SCHEMES if (k.small or k.all) else SCHEMES
    modes = ("windows",) if (k.demo or k.runlocal) else ("windows", "sliding")
    for mode in modes:
        for positional in schemes:
            for seed in seeds:
                add(mode=mode, positional=positional, seed=seed)


def metrics() -> list[str]:
    return [f"test/len_{m * SEQ_LEN}/bpb" for m in MULTIPLIERS]


def baseline() -> dict:
    return {"positional": "alibi"}


def headline(groups: dict) -> list[str]:
    """The phenomenon measured (`extrapolation_lines`), or for the fair-budget knobs what they show."""
    knobs = _knob_names(groups)
    if "lr" in knobs:
        return lr_grid_lines(groups)
    if "budget" in knobs:
        return budget_lines(groups)
    return extrapolation_lines(groups)


def chosen_rates(groups: dict) -> dict[str, tuple[str, str | None, dict]]:
    """{scheme: (group at its rate picked on the valid split, group at the shared rate, {group: valid loss})} of a
    learning-rate grid."""
    out = {}
    for scheme in SCHEMES:
        cells = [key for key, members in groups.items() if members[0]["knobs"]["positional"] == scheme]
        valid = {key: statistics.fmean(_valid_loss(m) for m in groups[key]) for key in cells}
        if valid:
            shared = next((key for key in cells if math.isclose(_rate(groups[key]), LEARNING_RATE)), None)
            out[scheme] = (min(valid, key=valid.get), shared, valid)
    return out


def _rate(members: list) -> float:
    return float(members[0]["knobs"].get("lr", LEARNING_RATE))


def _budget(members: list) -> int:
    return int(members[0]["knobs"].get("budget", 1))


def _knob_names(groups: dict) -> set[str]:
    """The knobs the study's runs were named by: which knob (lr_grid's `lr`, long's `budget`) the study is."""
    return {name for members in groups.values() for name in members[0]["knobs"]}


def lr_grid_lines(groups: dict) -> list[str]:
    """Each scheme's rate picked on the valid split, its test bpb at L and 8L there, and the ranking at 8L at the
    picked rates and at the shared 6e-3."""
    first, last = metrics()[0], metrics()[-1]
    at = {m: intervals.estimate(groups, m) for m in (first, last)}
    chosen, parts = chosen_rates(groups), []
    for scheme, (best, _, valid) in chosen.items():
        grid = ", ".join(
            f"{_rate(groups[k]):g}: {valid[k]:.3f}" for k in sorted(valid, key=lambda k: _rate(groups[k]))
        )
        parts.append(
            f"{scheme} {_rate(groups[best]):g} (valid loss {grid}; test bpb there {_cell(at, best)})"
        )
    lines = [
        "- **Learning rate picked on the valid split** per scheme (test bpb at 64 / 512 tokens [95% interval over "
        "documents]): " + "; ".join(parts) + "."
    ]
    for label, index in (("each scheme's own rate", 0), (f"the shared {LEARNING_RATE:g}", 1)):
        keys = [c[index] for c in chosen.values() if c[index] in at[last]]
        ranked = sorted(keys, key=lambda k: at[last][k].mean)
        lines.append(
            f"- **Ranking at 512 tokens at {label}**: "
            + " < ".join(f"{groups[k][0]['knobs']['positional']} {at[last][k].mean:.3f}" for k in ranked)
            + "."
        )
    return lines


def budget_lines(groups: dict) -> list[str]:
    """Test bpb at L and 8L of the six at 1x and 4x the steps, and the ranking at each budget."""
    first, last = metrics()[0], metrics()[-1]
    at = {m: intervals.estimate(groups, m) for m in (first, last)}
    lines = []
    for budget in sorted({_budget(m) for m in groups.values()}):
        keys = [k for k, m in groups.items() if _budget(m) == budget and k in at[last]]
        for metric, length in ((first, SEQ_LEN), (last, MULTIPLIERS[-1] * SEQ_LEN)):
            ranked = sorted(keys, key=lambda k: at[metric][k].mean)
            lines.append(
                f"- **{budget * STEPS} steps, ranking at {length} tokens** (test bpb [95% interval over documents]): "
                + " < ".join(
                    f"{groups[k][0]['knobs']['positional']} {_cell(at, k, (metric,))}" for k in ranked
                )
                + "."
            )
    return lines


def _valid_loss(member: dict) -> float:
    """The valid loss after the last step (summary `valid`), inf when the run diverged or predates the entry."""
    value = (member["summary"].get("valid") or {}).get("valid/loss")
    return float(value) if value is not None and math.isfinite(float(value)) else math.inf


def _cell(at: dict, key: str, which: tuple[str, ...] | None = None) -> str:
    """'3.941 [3.90, 3.98] / 4.10 [...]' of `key` at each metric of `which` (default: L and 8L)."""
    out = []
    for metric in which or tuple(at):
        e = at[metric].get(key)
        if e is not None:
            out.append(f"{e.mean:.3f}" + (f" [{e.lo:.3f}, {e.hi:.3f}]" if e.lo is not None else ""))
    return " / ".join(out)


def extrapolation_lines(groups: dict) -> list[str]:
    """Each scheme's change in test bits per byte from the training length to 8x it, with its 95% interval (paired
    over the same documents), per window mode: the phenomenon the study is about, measured."""
    first, last = metrics()[0], metrics()[-1]
    at_first, at_last = intervals.estimate(groups, first), intervals.estimate(groups, last)
    lines = []
    for mode in ("windows", "sliding"):
        keys = [k for k, members in groups.items() if members[0]["knobs"].get("mode", "windows") == mode]
        if not keys:
            continue
        parts = []
        for key in sorted(keys, key=lambda k: at_last[k].mean - at_first[k].mean if k in at_last else 0):
            if key in at_first and key in at_last:
                change = intervals.difference(at_last[key], at_first[key])
                ci = f" [{change.lo:+.2f}, {change.hi:+.2f}]" if change.lo is not None else ""
                parts.append(f"{groups[key][0]['knobs']['positional']} {change.mean:+.2f}{ci}")
        label = (
            "non-overlapping windows" if mode == "windows" else f"sliding windows (stride {SLIDING_STRIDE})"
        )
        lines.append(
            f"- **From {SEQ_LEN} to {MULTIPLIERS[-1] * SEQ_LEN} tokens** ({label}), change in test bits per byte, "
            f"mean over seeds [95% interval over documents]: " + "; ".join(parts) + "."
        )
    return lines


def figures(groups: dict, folder):
    """The two window modes side by side (bands: 95% bootstrap over test documents), and the loss by position in
    the window of the non-overlapping mode; for the fair-budget knobs, their own figures."""
    knobs = _knob_names(groups)
    if "lr" in knobs:
        return [lr_figure(groups, folder)]
    if "budget" in knobs:
        panels = {f"{b * STEPS} steps": {k: m for k, m in groups.items() if _budget(m) == b} for b in (1, 4)}
        name = lambda knob: knob["positional"]  # noqa: E731
        return [extrapolation(groups, metrics(), folder, panels=panels, label=name, order=list(SCHEMES))]
    modes = {
        "non-overlapping windows": "windows",
        f"sliding windows, stride {SLIDING_STRIDE}": "sliding",
    }
    panels = {
        title: {key: members for key, members in groups.items() if members[0]["knobs"].get("mode") == mode}
        for title, mode in modes.items()
    }
    panels = {title: subset for title, subset in panels.items() if subset}
    paths = [extrapolation(groups, metrics(), folder, panels=panels)]
    windows = panels.get("non-overlapping windows")
    if windows:
        paths.append(by_position(windows, folder))
    return [p for p in paths if p is not None]


def lr_figure(groups: dict, folder) -> Path:
    """Valid loss (what picks the rate) and test bpb at 8L against the learning rate, one line per scheme."""
    at = intervals.estimate(groups, metrics()[-1])
    fig, axes = plotting.figure(1, 2, width=5.2, height=3.9)
    for scheme, (best, _, valid) in chosen_rates(groups).items():
        keys = sorted(valid, key=lambda k: _rate(groups[k]))
        rates = [_rate(groups[k]) for k in keys]
        plotting.line(axes[0][0], rates, [valid[k] for k in keys], scheme, order=list(SCHEMES))
        plotting.line(axes[0][1], rates, [at[k].mean for k in keys], scheme, order=list(SCHEMES))
        axes[0][0].plot(
            [_rate(groups[best])], [valid[best]], marker="*", markersize=11, color="black", zorder=5
        )
    for ax, ylabel in zip(
        axes[0], ("valid loss after the last step (star: picked)", "test bpb at 512 tokens")
    ):
        ax.set_xscale("log")
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel(ylabel)
    plotting.legend(fig)
    plotting.subtitle(
        fig, "Learning rate per scheme: picked on the valid split", evaluation_note(groups, bands="")
    )
    return plotting.save_figure(fig, Path(folder) / "learning_rate.png")


PRESS = "Press et al. 2022 (arXiv 2108.12409), Fig. 1"
CLAIMS = {
    "alibi": ("<", "ALiBi extrapolates: no worse at 8× the training length than at it"),
    "t5_bias": ("<", "T5 bias extrapolates: no worse at 8× the training length than at it"),
    "rope": (">", "Rotary degrades past the training length"),
    "sinusoidal": (">", "Sinusoidal degrades past the training length"),
}
"""Press et al.'s comparison as measurable claims: the change from L to 8L, against 0."""


def verdicts(groups: dict) -> list:
    """Each claim of CLAIMS judged on the non-overlapping windows (research/studies/verdicts.py): of the 3-seed main
    study, of the learning-rate grid at each scheme's rate picked on the valid split, and of the 4x-budget runs."""
    first, last = metrics()[0], metrics()[-1]
    knobs = _knob_names(groups)
    chosen = chosen_rates(groups) if "lr" in knobs else {}
    out = []
    for scheme, (expect, claim) in CLAIMS.items():
        if "lr" in knobs:
            key = chosen.get(scheme, (None,))[0]
            setup = (
                f"pe_extrapolation:lr_grid: {scheme} at its learning rate picked on the valid split, 1 seed"
            )
            command = "python scripts/sweep.py experiments/pe_extrapolation.py:lr_grid --jobs 2"
        elif "budget" in knobs:
            key = verdicts_lib.group_key(groups, budget=4, positional=scheme)
            setup = f"pe_extrapolation:long: {scheme} at 4x the steps ({4 * STEPS}), 1 seed"
            command = "python scripts/sweep.py experiments/pe_extrapolation.py:long --jobs 2"
        else:
            key = verdicts_lib.group_key(groups, mode="windows", positional=scheme)
            if key is not None and len(groups[key]) < 3:  # the 3-seed study only (not :small or :demo)
                key = None
            setup, command = (
                f"pe_extrapolation: {scheme}, byte LM trained at L = {SEQ_LEN}, 3 seeds",
                "make study",
            )
        if key is not None and (est := verdicts_lib.paired(groups, (key, last), (key, first))):
            quantity = f"bpb at {MULTIPLIERS[-1] * SEQ_LEN} minus at {SEQ_LEN}"
            out.append((verdicts_lib.Claim(claim, PRESS, setup, quantity, expect, command=command), est))
    return out
