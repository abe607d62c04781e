"""Ablations of the pe_extrapolation setup: is a "does not reproduce" the method's, or the setup's?

Every run is pe_extrapolation's recipe (byte-level LM on wiki-sample, trained at L = 64 tokens, 500 steps of 32 x 64
tokens, d_model 128, 3 layers, 4 heads of width 32; test bits per byte over the whole 21-article test split at 1x,
2x, 4x and 8x L, non-overlapping windows) with one setting changed to what the method's paper does, scaled to L.
Runs whose config equals a pe_extrapolation run have its name, so `--reuse results/pe_extrapolation/runs` adopts
them instead of training them again.

Ablations (`ablation=` knob; each compares the variants below, 3 seeds, paired 95% intervals over documents):
- sinusoidal: Vaswani et al. 2017 (§3.4) multiply token embeddings by sqrt(d) and initialise them with std d^-1/2
  (fairseq's recipe, which Press et al. 2022 trained), so tokens (rms 1) and positions (rms 0.71) are comparable.
  Our default table (std 0.02, no scale) puts positions ~35x above tokens. Variants: sinusoidal and nope, each with
  the default embedding and with the paper's (`+paper_embedding`, the control that the embedding change alone is
  not what helps).
- t5_bias: T5 (Raffel et al. 2020) uses 32 buckets up to distance 128 with inputs of 512 tokens: the shared
  last bucket (distances >= 128) is trained. At L = 64 the default never reaches it. Scaled: 16 buckets (8 exact,
  8 log-spaced) up to distance 32 = L/2, so the last bucket is trained by half the causal pairs.
- cope: Golovneva et al. 2024 clamp counts at npos - 1; with npos = L + 1 (our default) the far rows are rarely
  reached (gates ~0.5 at init halve the counts). npos = L/4 + 1 = 17: counts >= 16 share a trained row.
- fire: Li et al. 2023 normalise the log-distance by psi(max(i, L_thr)) with a learned threshold; with L_thr = L
  (our default) every training query has i < L_thr, so the normaliser is constant and progressive interpolation is
  never trained. init_L = L/4 = 16 exercises it.
- yarn: Peng et al. 2023's beta_fast = 32, beta_slow = 1 were chosen for Llama (head width 128, L0 = 4096: the
  pairs turning >= 32 times within L0, the top third, are kept). Our head of width 32 at L0 = 64 has no pair turning
  more than 10 times, so the defaults interpolate every pair that turns at all. Derived: beta_fast = 2 (keep the
  pairs completing >= 2 turns within L0), beta_slow = 1, printed by `python scripts/rope_plan.py --head-dim 32
  --train-len 64 --scaling yarn:factor=8,beta_fast=2`. Evaluation-only variants of the trained RoPE runs, factor 8
  (the longest evaluation length), with and without the attention temperature; NTK-aware scaling as a reference.

Commands:
  python scripts/sweep.py experiments/reproductions.py --jobs 2 --reuse results/pe_extrapolation/runs
  python scripts/sweep.py experiments/reproductions.py:ablation=t5_bias --jobs 2      # one ablation
  python scripts/report.py experiments/reproductions.py                               # -> results/reproductions/
"""

import dataclasses
from pathlib import Path

from research.config import Config
from research.studies import verdicts as verdicts_lib
from research.studies.experiment import load_experiment, parse_knobs
from research.studies.figures import extrapolation

BASE = load_experiment(Path(__file__).with_name("pe_extrapolation.py"))
SEQ_LEN = BASE.SEQ_LEN
HEAD_DIM = 128 // 4
PAPER_EMBEDDING = {"name": "table", "scale": "sqrt_d", "init_std": 128**-0.5}

RECIPES = {
    "": {},
    "paper_embedding": {"embedding": PAPER_EMBEDDING},
    "scaled_buckets": {"positional": {"num_buckets": 16, "max_distance": SEQ_LEN // 2}},
    "npos17": {"positional": {"npos": SEQ_LEN // 4 + 1}},
    "threshold16": {"positional": {"init_L": float(SEQ_LEN // 4)}},
}
"""Named changes to the base config: model fields, merged into the positional spec or replacing the embedding."""

SCALINGS = {
    "yarn_default": {"name": "yarn", "factor": 8.0},
    "yarn_derived": {"name": "yarn", "factor": 8.0, "beta_fast": 2.0, "beta_slow": 1.0},
    "yarn_derived_no_temperature": {"name": "yarn", "factor": 8.0, "beta_fast": 2.0, "attention_factor": 1.0},
    "ntk": {"name": "ntk", "factor": 8.0},
}
"""Evaluation-only RoPE scalings of the yarn ablation (original length: the training length)."""

ABLATIONS = {
    "sinusoidal": [
        ("sinusoidal", ""),
        ("sinusoidal", "paper_embedding"),
        ("nope", ""),
        ("nope", "paper_embedding"),
    ],
    "t5_bias": [("t5_bias", ""), ("t5_bias", "scaled_buckets"), ("alibi", "")],
    "cope": [("cope", ""), ("cope", "npos17"), ("alibi", "")],
    "fire": [("fire", ""), ("fire", "threshold16"), ("alibi", "")],
    "yarn": [("rope", ""), *(("rope", f"eval_{name}") for name in SCALINGS)],
}
"""Each ablation's variants as (positional, recipe); the first is our default setup."""


def knobs(arg):
    return parse_knobs(arg, ablation="", positional="rope", recipe="", seed=0, mode="windows", runlocal=False)


def get_config(arg: str = "") -> Config:
    k = knobs(arg)
    base = BASE.get_config(f"positional={k.positional},seed={k.seed}" + (",runlocal" if k.runlocal else ""))
    if k.recipe.startswith("eval_"):  # an evaluation-only scaling of the trained run of the same seed
        scaling = SCALINGS[k.recipe.removeprefix("eval_")]
        trained = f"mode=windows,positional=rope,seed={k.seed}"
        train = dataclasses.replace(base.train, steps=0, warmup_steps=0, init_from=trained)
        evaluation = dataclasses.replace(base.eval, positional={"name": "rope", "scaling": scaling})
        return dataclasses.replace(base, train=train, eval=evaluation)
    if k.recipe not in RECIPES:
        raise ValueError(f"recipe: expected one of {', '.join(RECIPES)}, got {k.recipe!r}")
    change = RECIPES[k.recipe]
    model = base.model
    if "positional" in change:
        model = dataclasses.replace(model, positional={**model.positional, **change["positional"]})
    if "embedding" in change:
        model = dataclasses.replace(model, embedding=change["embedding"])
    return dataclasses.replace(base, model=model)


def sweep(add, arg: str = "") -> None:
    k = knobs(arg)
    if k.ablation and k.ablation not in ABLATIONS:
        raise ValueError(f"ablation: expected one of {', '.join(ABLATIONS)}, got {k.ablation!r}")
    chosen = [k.ablation] if k.ablation else list(ABLATIONS)
    seen = set()
    for name in chosen:
        for positional, recipe in ABLATIONS[name]:
            for seed in (0,) if k.runlocal else (0, 1, 2):
                key = (positional, recipe, seed)
                if key not in seen:  # a control shared by two ablations runs once
                    seen.add(key)
                    extra = {"recipe": recipe} if recipe else {}
                    add(mode="windows", positional=positional, seed=seed, **extra)


def metrics() -> list[str]:
    return BASE.metrics()


def variant_name(positional: str, recipe: str = "") -> str:
    """`rope`, `t5_bias+scaled_buckets`, `rope+yarn_default` (an evaluation-only recipe without its `eval_`)."""
    return positional + (f"+{recipe.removeprefix('eval_')}" if recipe else "")


def variant(knob: dict) -> str:
    return variant_name(knob["positional"], knob.get("recipe", ""))


def headline(groups: dict) -> list[str]:
    """Per ablation: each variant minus our default setup, at L and at 8L, with paired 95% intervals."""
    first, last = metrics()[0], metrics()[-1]
    by_variant = {variant(members[0]["knobs"]): key for key, members in groups.items()}
    lines = []
    for name, variants in ABLATIONS.items():
        names = [variant_name(p, r) for p, r in variants]
        if names[0] not in by_variant:
            continue
        parts = []
        for other in names[1:]:
            if other in by_variant:
                parts.append(
                    f"{other} {_difference(groups, by_variant[other], by_variant[names[0]], first, last)}"
                )
        lines.append(
            f"- **{name}**, each variant minus {names[0]} (test bits per byte): " + "; ".join(parts) + "."
        )
    return lines


def _difference(groups, key, reference, first, last) -> str:
    out = []
    for metric, label in ((first, f"{SEQ_LEN}"), (last, f"{8 * SEQ_LEN}")):
        if (d := verdicts_lib.paired(groups, (key, metric), (reference, metric))) is not None:
            ci = f" [{d.lo:+.3f}, {d.hi:+.3f}]" if d.lo is not None else ""
            out.append(f"{d.mean:+.3f}{ci} at {label}")
    return ", ".join(out)


def figures(groups: dict, folder):
    """One figure per ablation: bits per byte against evaluation length, each variant a line."""
    paths = []
    for name, variants in ABLATIONS.items():
        order = [variant_name(p, r) for p, r in variants]
        subset = {key: members for key, members in groups.items() if variant(members[0]["knobs"]) in order}
        if subset:
            paths.append(extrapolation(
                subset, metrics(), folder, name=f"ablation_{name}", label=variant, order=order,
                title=f"The {name} ablation: test bits per byte against evaluation length (first: our default)",
            ))  # fmt: skip
    return [p for p in paths if p is not None]


SETUP = f"reproductions: byte LM trained at L = {SEQ_LEN}, 3 seeds"
CLAIMS = [
    # (ablation, claim, source, (variant, multiple of L), (variant, multiple of L), expect)
    ("t5_bias", "T5 bias extrapolates once its capped bucket is trained (no worse at 8L than at L)",
     "Press et al. 2022 (arXiv 2108.12409); Raffel et al. 2020", ("t5_bias+scaled_buckets", 8), ("t5_bias+scaled_buckets", 1),
     "<"),
    ("t5_bias", "Diagnosis: buckets scaled to L (16 up to L/2) lower T5's loss at 8L", "this study",
     ("t5_bias+scaled_buckets", 8), ("t5_bias", 8), "<"),
    ("cope", "CoPE generalises past the training length (no worse at 8L than at L)",
     "Golovneva et al. 2024 (arXiv 2405.18719)", ("cope+npos17", 8), ("cope+npos17", 1), "<"),
    ("cope", "Diagnosis: npos = L/4 + 1 (far counts share a trained row) lowers CoPE's loss at 8L", "this study",
     ("cope+npos17", 8), ("cope", 8), "<"),
    ("fire", "FIRE generalises past the training length (no worse at 8L than at L)",
     "Li et al. 2023 (arXiv 2310.04418)", ("fire+threshold16", 8), ("fire+threshold16", 1), "<"),
    ("fire", "Diagnosis: threshold L/4 (progressive interpolation trained) lowers FIRE's loss at 8L", "this study",
     ("fire+threshold16", 8), ("fire", 8), "<"),
    ("sinusoidal", "Sinusoidal positions help at the training length (vs NoPE, both with the paper's embedding)",
     "Vaswani et al. 2017 §3.4", ("sinusoidal+paper_embedding", 1), ("nope+paper_embedding", 1), "<"),
    ("sinusoidal", "Diagnosis: the paper's embedding (√d scale, std d^-1/2) lowers sinusoidal's loss at L",
     "this study", ("sinusoidal+paper_embedding", 1), ("sinusoidal", 1), "<"),
    ("yarn", "YaRN extends RoPE past the training length without fine-tuning (lower loss at 8L than RoPE), "
     "paper's beta_fast = 32", "Peng et al. 2023 (arXiv 2309.00071)", ("rope+yarn_default", 8), ("rope", 8), "<"),
    ("yarn", "The same with beta_fast derived for our head (2)", "Peng et al. 2023 (arXiv 2309.00071)",
     ("rope+yarn_derived", 8), ("rope", 8), "<"),
    ("yarn", "YaRN's attention temperature (0.1 ln s + 1) lowers the loss past the training length",
     "Peng et al. 2023 (arXiv 2309.00071)", ("rope+yarn_derived", 8), ("rope+yarn_derived_no_temperature", 8), "<"),
    ("yarn", "Diagnosis: beta_fast derived for the head (2, not 32) costs less at L than YaRN's defaults",
     "this study", ("rope+yarn_derived", 1), ("rope+yarn_default", 1), "<"),
]  # fmt: skip
"""The claims each ablation settles: the paper's claim on the paper-matched variant, then the diagnosis (the
paper-matched variant against our default setup). Each is a paired difference of test bits per byte."""


def verdicts(groups: dict) -> list:
    """CLAIMS judged by their paired 95% intervals (research/studies/verdicts.py); claims without runs are left out."""
    by_variant = {variant(members[0]["knobs"]): key for key, members in groups.items() if len(members) >= 3}
    out = []
    for ablation, claim, source, (a, ma), (b, mb), expect in CLAIMS:
        if a not in by_variant or b not in by_variant:
            continue
        est = verdicts_lib.paired(groups, (by_variant[a], _metric(ma)), (by_variant[b], _metric(mb)))
        quantity = f"{a} at {ma * SEQ_LEN} minus {b} at {mb * SEQ_LEN} (bpb)"
        command = f"python scripts/sweep.py experiments/reproductions.py:ablation={ablation} --jobs 2"
        out.append((verdicts_lib.Claim(claim, source, SETUP, quantity, expect, command=command), est))
    return out


def _metric(multiple: int) -> str:
    return f"test/len_{multiple * SEQ_LEN}/bpb"
