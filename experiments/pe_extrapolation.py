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
  python scripts/train.py experiments/pe_extrapolation.py:runlocal,positional=alibi --workdir /tmp/run  # seconds

Runtime on 2 CPU cores: see the table header of results/pe_extrapolation/table.md (measured wall time).
"""

from research.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig
from research.studies import intervals
from research.studies import verdicts as verdicts_lib
from research.studies.experiment import parse_knobs
from research.studies.figures import by_position, extrapolation

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
CORPUS = {"name": "wiki-sample", "test_fraction": 0.2}  # 21 test articles: enough documents for an interval


def knobs(arg):
    return parse_knobs(
        arg, demo=False, runlocal=False, small=False, all=False, positional="rope", seed=0, mode="windows"
    )


def get_config(arg: str = "") -> Config:
    k = knobs(arg)
    steps, d_model, layers, eval_bytes = 500, 128, 3, None
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
            learning_rate=6e-3,  # best of {2e-3, 6e-3, 1.2e-2} for rope at 400 steps
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
    the window of the non-overlapping mode."""
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


PRESS = "Press et al. 2022 (arXiv 2108.12409), Fig. 1"
CLAIMS = {
    "alibi": ("<", "ALiBi extrapolates: no worse at 8× the training length than at it"),
    "t5_bias": ("<", "T5 bias extrapolates: no worse at 8× the training length than at it"),
    "rope": (">", "Rotary degrades past the training length"),
    "sinusoidal": (">", "Sinusoidal degrades past the training length"),
}
"""Press et al.'s comparison as measurable claims: the change from L to 8L, against 0."""


def verdicts(groups: dict) -> list:
    """Each claim of CLAIMS judged on the non-overlapping windows of the 3-seed runs (research/studies/verdicts.py)."""
    first, last = metrics()[0], metrics()[-1]
    out = []
    for scheme, (expect, claim) in CLAIMS.items():
        key = verdicts_lib.group_key(groups, mode="windows", positional=scheme)
        if key is None or len(groups[key]) < 3:  # the 3-seed study only (not :small or :demo)
            continue
        if est := verdicts_lib.paired(groups, (key, last), (key, first)):
            out.append((verdicts_lib.Claim(
                claim, PRESS, f"pe_extrapolation: {scheme}, byte LM trained at L = {SEQ_LEN}, 3 seeds",
                f"bpb at {MULTIPLIERS[-1] * SEQ_LEN} minus at {SEQ_LEN}", expect,
                command="make study",
            ), est))  # fmt: skip
    return out
