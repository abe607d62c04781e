"""RoPE context scaling: which method lets a model trained at length L read 2-8x L, with and without fine-tuning?

Question: train one RoPE byte-level LM at L = 64 (the pe_extrapolation recipe, seed 0), then measure test
bits-per-byte at 64, 128, 256 and 512 tokens
- `stage=eval`: with each scaling method switched on at evaluation only (the trained parameters, no update);
- `stage=finetune`: after a short fine-tune (100 steps of 8 x 256 tokens, the same tokens per step as pre-training,
  a fifth of its steps) at 4L with the method on during the fine-tune and the evaluation.
Methods (research/positional/rope_scaling.py): none (plain RoPE), linear (position interpolation, Chen et al. 2023),
ntk (NTK-aware base change), dynamic_ntk, yarn (Peng et al. 2023, with its attention temperature), llama3; each with
factor s = 4 over original length 64, so 256 tokens is the length each is set for (dynamic_ntk adapts per length).

Published claims checked (results/README.md): without fine-tuning, plain RoPE degrades past L, NTK-aware and dynamic
scaling extend it without training while linear interpolation hurts short contexts; after a short fine-tune, linear
interpolation (Chen et al. 2023) and YaRN (Peng et al. 2023) reach the longer length, YaRN with fewer steps.

The fine-tune regime (`regime` knob): the main sweep's fine-tune is 20% of pre-training, far from the papers' (Chen
et al. 2023: 1000 steps on a pre-trained Llama; Peng et al. 2023: 400 steps, ~0.1% of Llama 2's tokens). `regime`
pre-trains 4x longer (2000 steps, pe_extrapolation:long's budget) and fine-tunes for REGIME_FINETUNE_STEPS = 50
steps (2.5% of pre-training, the same tokens per step), with plain RoPE, linear interpolation, YaRN with its defaults
and YaRN with beta_fast derived for our head (2: the pairs completing >= 2 turns within L0 are kept, as in
experiments/reproductions.py; `python scripts/rope_plan.py --head-dim 32 --train-len 64 --scaling
yarn:factor=4,beta_fast=2`), every test document scored (paired intervals).

The runs of one sweep depend on each other through `train.init_from` ("stage=base" is a sibling run directory):
scripts/sweep.py starts the others after the base run has finished.

Commands:
  python scripts/sweep.py experiments/rope_scaling.py --jobs 2    # 1 base + 6 eval-only + 6 fine-tunes
  python scripts/report.py experiments/rope_scaling.py            # -> results/rope_scaling/
  python scripts/sweep.py experiments/rope_scaling.py:regime --jobs 2   # longer base, 50-step fine-tunes (5 runs)
  python scripts/sweep.py experiments/rope_scaling.py:runlocal    # the same chain in seconds
"""

import statistics
from pathlib import Path

from research.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig
from research.studies import plotting
from research.studies import verdicts as verdicts_lib
from research.studies.experiment import parse_knobs
from research.studies.figures import evaluation_note

METHODS = ("none", "linear", "ntk", "dynamic_ntk", "yarn", "llama3")
REGIME_METHODS = ("none", "linear", "yarn", "yarn_derived")
REGIME_BASE_STEPS, REGIME_FINETUNE_STEPS = 2000, 50
SEQ_LEN = 64  # L, the pre-training length
FACTOR = 4  # each method is set for FACTOR * L
EVAL_LENGTHS = (64, 128, 256, 512)


def knobs(arg):
    return parse_knobs(arg, runlocal=False, regime=False, stage="base", method="none", seed=0)


def rope(method: str, *, runlocal: bool = False) -> dict:
    """The positional Spec of RoPE with `method` scaling for FACTOR x SEQ_LEN."""
    if method == "none":
        return {"name": "rope"}
    scaling = {"name": method, "factor": float(FACTOR)}
    if method == "yarn_derived":  # beta_fast for a 32-wide head at L0 = 64 (module docstring)
        scaling.update(name="yarn", beta_fast=2.0, beta_slow=1.0)
    if scaling["name"] not in (
        "linear",
        "ntk",
    ):  # these two take only the factor; the others need the original length
        scaling["original_max_len"] = SEQ_LEN if not runlocal else 8
    if method == "llama3":  # Meta's defaults for the smoothing band, over our original length
        scaling.update(low_freq_factor=1.0, high_freq_factor=4.0)
    return {"name": "rope", "scaling": scaling}


def get_config(arg: str = "") -> Config:
    k = knobs(arg)
    if k.stage not in ("base", "eval", "finetune"):
        raise ValueError(f"stage: expected base, eval or finetune, got {k.stage!r}")
    if k.method not in METHODS + REGIME_METHODS:
        raise ValueError(
            f"method: expected one of {', '.join(dict.fromkeys(METHODS + REGIME_METHODS))}, got {k.method!r}"
        )
    # pe_extrapolation's model and budget; every test document scored (eval_bytes None: paired intervals)
    seq_len, steps, eval_bytes, d_model, layers, batch = SEQ_LEN, 500, None, 128, 3, 32
    lengths = EVAL_LENGTHS
    if k.runlocal:
        seq_len, steps, eval_bytes, d_model, layers, batch = 8, 4, 5_000, 32, 2, 4
        lengths = (8, 16, 32)
    positional = {"name": "rope"}
    eval_positional = None
    if k.regime and not k.runlocal:
        steps = REGIME_BASE_STEPS
    learning_rate, warmup = 6e-3, max(1, steps // 10)  # pe_extrapolation's recipe
    init_from = None
    if k.stage == "eval":
        steps, init_from = 0, "stage=base"
        eval_positional = rope(k.method, runlocal=k.runlocal) if k.method != "none" else None
        warmup = 0
    elif k.stage == "finetune":
        positional = rope(k.method, runlocal=k.runlocal)
        seq_len, batch = FACTOR * seq_len, batch // FACTOR  # same tokens per step
        steps = 2 if k.runlocal else REGIME_FINETUNE_STEPS if k.regime else 100
        # A sixth of pre-training's peak rate: fine-tunes continue from a trained model at a lower rate (Chen et al.
        # fine-tune at 2e-5 against Llama's 3e-4 pre-training peak, ~1/15); not tuned per method.
        learning_rate, warmup, init_from = 1e-3, max(1, steps // 10), "stage=base"
    return Config(
        seed=k.seed,
        data=DataConfig(
            corpus={"name": "wiki-sample"},
            tokenizer={"name": "byte"},
            seq_len=seq_len,
            batch_size=batch,
            max_eval_bytes=eval_bytes,
        ),
        model=ModelConfig(d_model=d_model, num_layers=layers, num_heads=4, positional=positional),
        train=TrainConfig(
            steps=steps,
            learning_rate=learning_rate,
            warmup_steps=warmup,
            log_every=max(1, min(50, steps // 4)),
            eval_every=max(1, steps // 3) if steps else 0,
            checkpoint_every=max(1, steps // 3),
            init_from=init_from,
        ),
        eval=EvalConfig(lengths=lengths, batch_size=16 if not k.runlocal else 4, positional=eval_positional),
    )


def sweep(add, arg: str = "") -> None:
    add(stage="base")
    if knobs(arg).regime:
        for method in REGIME_METHODS:
            add(stage="finetune", method=method)
        return
    for stage in ("eval", "finetune"):
        for method in METHODS:
            add(stage=stage, method=method)


def metrics() -> list[str]:
    return [f"test/len_{n}/bpb" for n in EVAL_LENGTHS]


def figures(groups: dict, folder: Path) -> list[Path]:
    """Bits-per-byte vs evaluation length: evaluation-only scaling and after the fine-tune (the stages the study has),
    one line per method; the base run in every panel, dotted."""
    stages = [
        s for s in ("eval", "finetune") if any(g[0]["knobs"].get("stage") == s for g in groups.values())
    ]
    fig, axes = plotting.figure(1, len(stages), width=5.4, height=3.9, sharey=True)
    order = list(dict.fromkeys(METHODS + REGIME_METHODS))
    for ax, stage in zip(axes[0], stages):
        steps = set()
        for members in sorted(groups.values(), key=lambda g: g[0]["knobs"].get("method", "none")):
            knob = members[0]["knobs"]
            if knob.get("stage") not in (stage, "base"):
                continue
            per_run = [m["summary"]["metrics"] for m in members]
            lengths = sorted(int(key.split("/")[1][4:]) for key in per_run[0] if key.endswith("/bpb"))
            values = [statistics.fmean(r[f"test/len_{n}/bpb"] for r in per_run) for n in lengths]
            if knob.get("stage") == "base":
                plotting.line(ax, lengths, values, "base (no fine-tune)", linestyle=":", color="0.45")
                continue
            steps.add(members[0]["summary"]["steps"])
            plotting.line(ax, lengths, values, knob.get("method", "none"), order=order)
        ax.axvline(SEQ_LEN, color="grey", linestyle=":", linewidth=1)
        ax.axvline(FACTOR * SEQ_LEN, color="grey", linestyle="--", linewidth=1)
        plotting.length_axis(ax, lengths)
        ax.set_title("scaling at evaluation only" if stage == "eval" else
                     f"after a {'/'.join(map(str, sorted(steps)))}-step fine-tune at {FACTOR}L")  # fmt: skip
        ax.set_xlabel("evaluation length (dotted: L; dashed: the methods' target)")
    axes[0][0].set_ylabel("test bits per byte")
    plotting.legend(fig)
    plotting.subtitle(
        fig, "RoPE context scaling: test bits per byte against length", evaluation_note(groups, bands="")
    )
    return [plotting.save_figure(fig, folder / "bpb_vs_length.png")]


PENG, CHEN = "Peng et al. 2023 (arXiv 2309.00071)", "Chen et al. 2023 (arXiv 2306.15595)"
CLAIMS = [
    # (claim, source, method a, method b, evaluation length: a minus b after the fine-tune; expect)
    ("After a short fine-tune at 4L, YaRN is better than linear position interpolation at 4L", PENG,
     "yarn", "linear", FACTOR * SEQ_LEN, "<"),
    ("The same with YaRN's beta_fast derived for our head (2)", PENG, "yarn_derived", "linear", FACTOR * SEQ_LEN, "<"),
    ("After the same fine-tune, position interpolation is better at 4L than fine-tuning plain RoPE", CHEN,
     "linear", "none", FACTOR * SEQ_LEN, "<"),
    ("After the same fine-tune, YaRN is better at 4L than fine-tuning plain RoPE", PENG,
     "yarn", "none", FACTOR * SEQ_LEN, "<"),
]  # fmt: skip
"""The fine-tuning claims, judged on the fine-tunes of each study (the main sweep's 100-step fine-tunes of a 500-step
base, and `regime`'s 50-step fine-tunes of a 2000-step base)."""


def verdicts(groups: dict) -> list:
    out = []
    for claim, source, a, b, length, expect in CLAIMS:
        keys = [verdicts_lib.group_key(groups, method=m, stage="finetune") for m in (a, b)]
        metric = f"test/len_{length}/bpb"
        if None in keys or not (est := verdicts_lib.paired(groups, (keys[0], metric), (keys[1], metric))):
            continue
        if est.lo is None:  # too few test documents for an interval: no verdict
            continue
        steps = groups[keys[0]][0]["summary"]["steps"]
        base = next(
            (g[0]["summary"]["steps"] for g in groups.values() if g[0]["knobs"].get("stage") == "base"), None
        )
        out.append((verdicts_lib.Claim(
            claim, source, f"rope_scaling: RoPE byte LM pre-trained {base} steps at L = {SEQ_LEN}, fine-tuned {steps} "
            f"steps at {FACTOR}L, 1 seed", f"{a} minus {b} at {length} (bpb)", expect,
            command="python scripts/sweep.py experiments/rope_scaling.py"
            + (":regime" if base == REGIME_BASE_STEPS else "") + " --jobs 2",
        ), est))  # fmt: skip
    return out
