"""Do positional encodings (and randomized positions) generalise to longer inputs on algorithmic tasks?

Question: train a small decoder-only transformer on a synthetic task at input lengths n <= 16, then measure
per-token accuracy of the outputs at every n <= 48 (teacher-forced, greedy per token). Each positional scheme is
trained with contiguous positions and with randomized positions (Ruoss et al. 2023, arXiv 2305.16843: a sorted random
subset of [0, 256) per training sequence; contiguous positions at evaluation, our default — see
research/positional/positions.py). The `paper_eval` knob adds the evaluation of Ruoss et al.'s reference code: each
randomized-positions run evaluated again with random positions drawn as in training (`eval_positions=randomized`,
an evaluation-only run of the same parameters), so relative schemes meet at test the gaps they were trained on.
Claims checked (results/README.md):
- Ruoss et al. 2023: randomized positions raise out-of-distribution accuracy (+12.0% on average over 15 tasks,
  encoder-only, train to 40, test to 500).
- Kazemnejad et al. 2023 (arXiv 2305.19466): in decoder-only models NoPE generalises about as well as T5 bias and
  better than ALiBi, RoPE and absolute encodings.

`until_gate`: the task study a reviewer accepts, each run trained until its in-distribution accuracy passes the
report's gate (ID_GATE = 0.9: free-running sequence accuracy at n <= 16, every output right), checked every 100
steps (`train.stop_when`), up to UNTIL_GATE_STEPS = 4000 (4x the default; the cosine schedule spans the 4000,
so a run that stops early stops at a higher rate than the default run ends at). Out-of-distribution accuracy is
then read from models that learned the task where they were trained. The gate reads the in-distribution lengths of
the test set (the task objective has no separate valid split); the out-of-distribution lengths are never read before
the final evaluation. Randomized-positions runs are evaluated (and gated) in the paper's mode, random test positions
drawn as in training; an evaluation-only twin of each (`eval_positions=contiguous`) gives the contiguous column.
Claims (verdicts, judged only where every run compared passed the gate): Ruoss et al. per scheme, the randomized run
minus the contiguous run; Kazemnejad et al., NoPE minus RoPE, ALiBi and learned, contiguous positions.

Scale (2 CPU cores): d_model 64, 2 layers, 4 heads, 1000 steps of 32 examples, lr 3e-3; the papers train far longer
(Ruoss et al.: 2M steps). Tasks: reverse_string and bucket_sort (binary / 5-symbol alphabets). Sinusoidal and T5 bias
run in their papers' recipes scaled to this size (PAPER_RECIPES: the paper's embedding scale; buckets up to half the
training length), as in results/reproductions.

Commands:
  python scripts/sweep.py experiments/length_generalization.py --jobs 2     # 6 schemes x 2 samplers x 2 tasks x 3 seeds
      # 81 min on 2 cores: to fit the hour, run it as slices, `--only seed=0`, then 1, then 2 (~27 min each)
  python scripts/report.py experiments/length_generalization.py             # -> results/length_generalization/
  python scripts/sweep.py experiments/length_generalization.py:small        # 1 seed (a third of the time)
  python scripts/sweep.py experiments/length_generalization.py:paper_eval --jobs 2   # randomized runs, 2 evaluations
  python scripts/sweep.py experiments/length_generalization.py:until_gate,small --jobs 2   # up to 4x the steps, seed 0
  python scripts/sweep.py experiments/length_generalization.py:until_gate --only seed=1 --only task=bucket_sort
      # a second seed of the judged task, beside seed 0's run directories (the committed until_gate table)
  python scripts/train.py experiments/length_generalization.py:runlocal --workdir /tmp/run   # seconds
"""

import dataclasses
import statistics
from pathlib import Path

from research.config import Config, DataConfig, EvalConfig, ModelConfig, TaskConfig, TrainConfig
from research.studies import plotting
from research.studies import verdicts as verdicts_lib
from research.studies.experiment import format_knobs, parse_knobs
from research.studies.figures import evaluation_note
from research.studies.intervals import Estimate, by_seed, difference
from research.studies.report import gated_groups

SCHEMES = ("nope", "learned", "sinusoidal", "rope", "alibi", "t5_bias")
SAMPLERS = ("contiguous", "randomized")
TASKS = ("reverse_string", "bucket_sort")
# Test to 3x the training length (Ruoss et al. go to 12x: 40 -> 500); 3x keeps the 96-token evaluation cheap and
# already separates the schemes (results/length_generalization). d_model 64, 2 layers: docs/running.md#study-scale.
TRAIN_MAX, EVAL_MAX = 16, 48
ID_GATE = 0.9  # the report flags OOD cells of runs below it (research/studies/report.py gated_groups)
UNTIL_GATE_STEPS = 4000
RANDOM_RANGE = 256  # randomized positions are drawn from [0, RANDOM_RANGE); >= the longest test sequence (96)
D_MODEL = 64
TRAIN_TOKENS = 32  # the longest training sequence (n = 16: input, separator, output less one token)
PAPER_RECIPES = {
    # Vaswani et al. 2017 (section 3.4): token embeddings of std d^-1/2 scaled by sqrt(d), so tokens (rms 1) and the
    # amplitude-1 table (rms 0.71) are comparable; the default table (std 0.02, no scale) puts positions ~35x above
    # the tokens and sinusoidal stayed at chance on reverse_string (results/reproductions: the same handicap).
    "sinusoidal": {"embedding": {"name": "table", "scale": "sqrt_d", "init_std": D_MODEL**-0.5}},
    # T5 (Raffel et al. 2020) trains its capped bucket (32 buckets to distance 128, inputs of 512). The default at
    # 32 training tokens never reaches buckets past distance 31; scaled as in results/reproductions: 16 buckets
    # (8 exact, 8 log-spaced) up to half the training length, so the shared last bucket is trained.
    "t5_bias": {"positional": {"num_buckets": 16, "max_distance": TRAIN_TOKENS // 2}},
}
"""Each scheme in its paper's recipe scaled to this size; the other schemes' defaults are their papers' already."""


def knobs(arg):
    return parse_knobs(
        arg,
        small=False,
        runlocal=False,
        paper_eval=False,
        until_gate=False,
        task="reverse_string",
        positional="rope",
        positions="contiguous",
        eval_positions="trained",
        seed=0,
    )


def get_config(arg: str = "") -> Config:
    k = knobs(arg)
    steps, d_model, layers, examples = UNTIL_GATE_STEPS if k.until_gate else 1000, D_MODEL, 2, 128
    if k.runlocal:
        steps, d_model, layers, examples = 5, 32, 1, 8
    recipe = PAPER_RECIPES.get(k.positional, {})
    positions = {"name": k.positions}
    positional = {"name": k.positional, **recipe.get("positional", {})}
    if k.positions == "randomized":
        positions["max_len"] = RANDOM_RANGE
        if trained_eval_mode(k) == "randomized":
            positions["eval_mode"] = "randomized"
        if k.positional == "learned":  # the table must cover every position drawn in training
            positional["max_len"] = RANDOM_RANGE
    config = Config(
        seed=k.seed,
        data=DataConfig(batch_size=32 if not k.runlocal else 8),
        model=ModelConfig(
            d_model=d_model,
            num_layers=layers,
            num_heads=4,
            positional=positional,
            positions=positions,
            **({"embedding": recipe["embedding"]} if "embedding" in recipe else {}),
        ),  # fmt: skip
        train=TrainConfig(
            steps=steps,
            learning_rate=3e-3,  # better than 1e-3 for rope on reverse_string at 1000 steps (0.88 vs 0.81 in-dist)
            warmup_steps=max(1, steps // 10),
            log_every=max(1, min(100, steps // 4)),
            eval_every=100 if k.until_gate else max(1, steps // 2),
            checkpoint_every=max(1, steps // 2),
            stop_when=f"valid/in_dist/free_sequence_accuracy>={ID_GATE}" if k.until_gate else None,
        ),
        eval=EvalConfig(),
        task=TaskConfig(
            task={"name": k.task},
            train_max_length=TRAIN_MAX if not k.runlocal else 4,
            eval_max_length=EVAL_MAX if not k.runlocal else 8,
            eval_examples=examples,
        ),
    )
    return config if k.eval_positions == "trained" else other_evaluation(config, k)


def trained_eval_mode(k) -> str:
    """How a trained randomized-positions run is evaluated (validation, the gate, the test): random positions drawn
    as in training under `until_gate` (Ruoss et al.'s reference code evaluates so), else contiguous (the main
    study's setting, kept so its runs stay comparable; `paper_eval` adds the other mode)."""
    return "randomized" if k.until_gate else "contiguous"


def other_evaluation(config: Config, k) -> Config:
    """`eval_positions=<mode>`: the trained randomized-positions run of the same cell and seed evaluated with the
    other mode of test positions -> an evaluation-only run."""
    if k.positions != "randomized" or k.eval_positions not in ("contiguous", "randomized") or (
        k.eval_positions == trained_eval_mode(k)
    ):  # fmt: skip
        raise ValueError(
            f"eval_positions: expected 'trained', or with positions=randomized the mode it was not evaluated in "
            f"({'contiguous' if trained_eval_mode(k) == 'randomized' else 'randomized'}); got "
            f"eval_positions={k.eval_positions!r} with positions={k.positions!r}"
        )
    trained = {"positional": k.positional, "positions": "randomized", "seed": k.seed, "task": k.task}
    positions = {**config.model.positions, "eval_mode": k.eval_positions}
    train = dataclasses.replace(config.train, steps=0, warmup_steps=0, init_from=format_knobs(trained))
    model = dataclasses.replace(config.model, positions=positions)
    return dataclasses.replace(config, model=model, train=train)


def sweep(add, arg: str = "") -> None:
    """Every scheme x sampler x task x seed; with `paper_eval`, the randomized-positions runs only, each with its
    evaluation-only twin that draws random positions at test too (the contiguous runs are the main study's);
    `until_gate` evaluates randomized runs with random positions and adds twins evaluated contiguously (not NoPE's:
    it reads no positions)."""
    k = knobs(arg)
    seeds = (0,) if (k.small or k.runlocal) else (0, 1, 2)
    for seed in seeds:  # seed outermost: a partial sweep already covers every cell once
        for task in TASKS:
            for positional in SCHEMES:
                if not k.paper_eval:
                    for positions in SAMPLERS:
                        add(task=task, positional=positional, positions=positions, seed=seed)
                    if k.until_gate and positional != "nope":
                        add(task=task, positional=positional, positions="randomized", eval_positions="contiguous",
                            seed=seed)  # fmt: skip
                    continue
                add(task=task, positional=positional, positions="randomized", seed=seed)
                add(task=task, positional=positional, positions="randomized", eval_positions="randomized",
                    seed=seed)  # fmt: skip


def metrics() -> list[str]:
    return [
        "test/in_dist/token_accuracy",
        "test/ood/token_accuracy",
        "test/ood/free_token_accuracy",
        "test/in_dist/sequence_accuracy",
        "test/ood/sequence_accuracy",
    ]


def headline(groups: dict) -> list[str]:
    """What the knobs measure: the evaluation mode's effect (`paper_eval`) and the steps each run trained
    (`until_gate`)."""
    return paper_eval_lines(groups) + until_gate_lines(groups)


def paper_eval_lines(groups: dict) -> list[str]:
    """Out-of-distribution token accuracy of each randomized-positions run evaluated with random positions minus
    evaluated contiguously (the same parameters and test examples: paired)."""
    metric, parts = "test/ood/token_accuracy", []
    for task in TASKS:
        for scheme in SCHEMES:
            twins = [_evaluated(groups, task, scheme, mode) for mode in ("randomized", "contiguous")]
            if None not in twins and (
                est := verdicts_lib.paired(groups, (twins[0], metric), (twins[1], metric))
            ):
                ci = f" [{est.lo:+.3f}, {est.hi:+.3f}]" if est.lo is not None else ""
                parts.append(f"{task} {scheme} {est.mean:+.3f}{ci}")
    if not parts:
        return []
    return [
        "- **Evaluation in the paper's mode** (random positions at test, as in training) minus contiguous positions, "
        "out-of-distribution token accuracy of the randomized-positions runs [95% interval over test examples]: "
        + "; ".join(parts) + "."
    ]  # fmt: skip


def _evaluated(groups: dict, task: str, scheme: str, mode: str) -> str | None:
    """The group of randomized-positions runs of (task, scheme) evaluated with `mode` test positions, or None."""
    for key, members in groups.items():
        knob = members[0]["knobs"]
        if (knob["task"], knob["positional"], knob["positions"]) == (task, scheme, "randomized") and (
            _column(members[0])[1] == mode
        ):  # fmt: skip
            return key
    return None


def until_gate_lines(groups: dict) -> list[str]:
    """The steps each `until_gate` run trained before its in-distribution accuracy passed the gate, and the claims
    left unjudged because a run they compare is below it."""
    parts = []
    for key, members in sorted(groups.items()):
        if _gated_training(members[0]):
            steps = [m["summary"].get("stopped_at") for m in members]
            shown = ", ".join(str(s) if s else f"not in {UNTIL_GATE_STEPS}" for s in steps)
            parts.append(f"{key}: {shown}")
    lines = [
        f"- **Steps until the gate** (in-distribution free-running sequence accuracy >= {ID_GATE}): "
        + "; ".join(parts) + "."
    ] if parts else []  # fmt: skip
    comparisons, below = _comparisons(groups), gated_groups(groups, ID_GATE)
    if unjudged := [
        f"{q} ({task})" for task, q, _, _, a, b in comparisons if not _judged(groups, below, a, b)
    ]:
        lines.append(f"- **Not judged** (a run compared is below the gate): {'; '.join(unjudged)}.")
    return lines + seed_lines(groups)


def seed_lines(groups: dict) -> list[str]:
    """Each judged comparison's difference seed by seed (where both groups have >= 2 seeds in common): the training
    run's variance, which the intervals over test examples do not hold."""
    parts, below = [], gated_groups(groups, ID_GATE)
    for task, quantity, _, _, a, b in _comparisons(groups):
        if not _judged(groups, below, a, b):
            continue
        a_seeds, b_seeds = (
            Estimate(0.0, seeds=by_seed(groups[verdicts_lib.group_key(groups, **k)], VERDICT_METRIC))
            for k in (a, b)
        )
        if len(seeds := difference(a_seeds, b_seeds).seeds or {}) >= 2:
            shown = ", ".join(f"{v:+.3f}" for _, v in sorted(seeds.items()))
            parts.append(f"{task}, {quantity.split(',')[0]}: {shown}")
    if not parts:
        return []
    return [
        f"- **Seed by seed** (the verdicts' differences in {VERDICT_METRIC}, one per seed: the training run's "
        "variance, which the intervals over test examples do not hold): " + "; ".join(parts) + "."
    ]


def _gated_training(member: dict) -> bool:
    """A run of `until_gate`: trained (not an evaluation-only twin) until the in-distribution gate."""
    train = member["summary"].get("config", {}).get("train", {})
    return bool(train.get("stop_when")) and train.get("steps", 0) > 0


RUOSS = "Ruoss et al. 2023 (ACL, arXiv 2305.16843)"
KAZEMNEJAD = "Kazemnejad et al. 2023 (NeurIPS, arXiv 2305.19466)"


def _comparisons(groups: dict) -> list[tuple]:
    """(task, quantity, claim, source, knobs a, knobs b) of every claim on `until_gate` runs: a minus b in
    VERDICT_METRIC, paired over the test examples; empty for other studies."""
    if not any(_gated_training(members[0]) for members in groups.values()):
        return []
    out = []
    for task in TASKS:
        cell = {"task": task}
        for scheme in SCHEMES[1:]:  # Ruoss et al. evaluate with random positions as in training (their code)
            out.append((task, f"{scheme}: randomized (random test positions) minus contiguous",
                        "Randomized positions raise out-of-distribution accuracy", RUOSS,
                        {**cell, "positional": scheme, "positions": "randomized"},
                        {**cell, "positional": scheme, "positions": "contiguous"}))  # fmt: skip
        for scheme in ("rope", "alibi", "learned"):
            out.append((task, f"NoPE minus {scheme}, contiguous positions",
                        "In a decoder-only model NoPE generalises to longer inputs better than RoPE, ALiBi and "
                        "absolute encodings", KAZEMNEJAD, {**cell, "positional": "nope", "positions": "contiguous"},
                        {**cell, "positional": scheme, "positions": "contiguous"}))  # fmt: skip
    return out


def _judged(groups: dict, below: set, a: dict, b: dict) -> bool:
    """Both groups exist and neither is `below` the gate (`gated_groups`: a model that has not learned the task in
    distribution says nothing about its length generalisation)."""
    keys = {verdicts_lib.group_key(groups, **knobs) for knobs in (a, b)}
    return None not in keys and not keys & below


VERDICT_METRIC = "test/ood/free_token_accuracy"
"""Free-running, not teacher-forced: given the true previous output, copying it is right at 0.83 of bucket_sort's
out-of-distribution output tokens (the copy_previous baseline), so teacher-forced accuracy rewards that shortcut;
Ruoss et al.'s encoder-only models emit every output without the true prefix, as greedy decoding does."""


def verdicts(groups: dict) -> list:
    """The claims of `_comparisons` whose runs all passed the gate."""
    out, metric, below = [], VERDICT_METRIC, gated_groups(groups, ID_GATE)
    for task, quantity, claim, source, a, b in _comparisons(groups):
        if (
            not _judged(groups, below, a, b)
            or (est := verdicts_lib.paired_knobs(groups, metric, a, b)) is None
        ):
            continue
        seeds = sorted(m["knobs"]["seed"] for m in groups[verdicts_lib.group_key(groups, **b)])
        out.append((verdicts_lib.Claim(
            claim, source,
            f"length_generalization:until_gate: {task}, trained on n <= {TRAIN_MAX} until the in-distribution gate "
            f"(<= {UNTIL_GATE_STEPS} steps), tested on n = {TRAIN_MAX + 1}..{EVAL_MAX}, {len(seeds)} seed(s)",
            f"{quantity}, OOD free-running token accuracy", ">", command=_until_gate_command(task, seeds),
        ), est))  # fmt: skip
    return out


def _until_gate_command(task: str, seeds: list) -> str:
    """The sweep that trains exactly the runs a verdict reads: `:until_gate,small` for seed 0, else the slice of
    `:until_gate` with the task's runs of those seeds."""
    sweep = "python scripts/sweep.py experiments/length_generalization.py:until_gate"
    if [str(s) for s in seeds] == ["0"]:
        return f"{sweep},small --jobs 2"
    return f"{sweep} --only task={task} " + " ".join(f"--only seed={s}" for s in seeds) + " --jobs 2"


def figures(groups: dict, folder: Path) -> list[Path]:
    """Accuracy vs input length: one panel per (task, sampler at training / at evaluation), one line per scheme (mean
    over seeds, band = min..max)."""
    tasks = sorted({m["knobs"]["task"] for members in groups.values() for m in members})
    columns = [c for c in COLUMNS if any(_column(m[0]) == c for m in groups.values())]
    fig, axes = plotting.figure(len(tasks), len(columns), width=5.0, height=3.5, sharey=True)
    for row, task in enumerate(tasks):
        for col, column in enumerate(columns):
            ax = axes[row][col]
            for members in sorted(groups.values(), key=lambda g: g[0]["knobs"]["positional"]):
                knob = members[0]["knobs"]
                if knob["task"] == task and _column(members[0]) == column:
                    _accuracy_line(ax, members, knob["positional"])
            ax.axvline(TRAIN_MAX, color="grey", linestyle=":", linewidth=1)
            ax.set_title(
                f"{task}, {column[0]} positions"
                + (", randomized at test" if column[1] != "contiguous" else "")
            )
            ax.set_xlabel("input length n (dotted: longest training length)")
            ax.set_ylabel("per-token accuracy (teacher-forced)")
    plotting.legend(fig)
    plotting.subtitle(fig, "Accuracy against input length", evaluation_note(groups, bands="seeds"))
    return [plotting.save_figure(fig, folder / "accuracy_vs_length.png")]


COLUMNS = (("contiguous", "contiguous"), ("randomized", "contiguous"), ("randomized", "randomized"))
"""The figure's columns: (positions in training, positions at evaluation)."""


def _column(member: dict) -> tuple[str, str]:
    """(positions in training, positions at evaluation) of a run, read from its config."""
    positions = member["summary"]["config"]["model"]["positions"]
    return positions["name"], positions.get("eval_mode", "contiguous")


def _accuracy_line(ax, members: list[dict], label: str) -> None:
    per_run = [m["summary"]["metrics"] for m in members]
    lengths = sorted(
        int(key.split("/")[1][4:]) for key in per_run[0] if key.endswith("/token_accuracy") and "len_" in key
    )
    values = [[r[f"test/len_{n}/token_accuracy"] for r in per_run] for n in lengths]
    band = ([min(v) for v in values], [max(v) for v in values]) if len(per_run) > 1 else None
    plotting.line(ax, lengths, [statistics.fmean(v) for v in values], label, band=band, marker="")
