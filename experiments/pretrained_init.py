"""Do pretrained word vectors help a word-level LM, and most when training data is scarce?

The default corpus's train split is cut in two halves by document: the LM's train split is the first half
(`data.train_docs=(0, 0.5)`), the vectors are trained by gensim on the second half (`train:ALGO:wiki-sample:0.5-1.0`
recipes, research/vectors/train.py: skip-gram, 128 dimensions, 10 epochs, min_count 2; fastText with 3-6-character
n-grams in 50k buckets), so the vectors never see the LM's training text. Word tokenizer (GPT-2-style split, at most
8000 types, built on the LM's half for every fraction, so all runs share one vocabulary); the LM trains on the
1%, 10% or 100% of its half's tokens (`data.train_fraction`), a different contiguous slice per seed
(`data.train_fraction_start`, `slice_start`).

Initialisations of the input table (untied readout, so the readout is always learned from scratch):
  random            the table's normal(0, 0.02) initialisation
  random_frozen     the control: that random table, never updated (does freezing alone help at 1%, as a
                    regulariser, whatever the vectors?)
  random_early      the other control: `random`, scored at its best validation instead of its last step
                    (`train.final_params=best_valid`, a validation every 20 steps): at 1% the model sees its 2.9k
                    tokens ~70 times, and a gain that early stopping also gives is not the vectors'
  fasttext_*_early  fastText frozen / fine-tuned, early-stopped the same way: the vectors against the early-stopped
                    control on equal terms
  word2vec / fasttext, `finetune` (trained with the rest) or `frozen` (never updated; optax.multi_transform)
Aligned rows are rescaled to the random table's standard deviation (0.02; `model.pretrained.rescale`), so that
only the directions differ; tokens without a vector (punctuation-with-space pieces, rare words): random rows at
that scale; fastText composes vectors for words it has not seen from their n-grams.

Same transformer for all (d_model 128, 2 layers, 4 heads, RoPE); 200 steps of 16 x 64 words; reported: test
bits-per-byte and loss by train-frequency bucket of the target, and the vectors' intrinsic scores (Google
analogies, WordSim-353 and SimLex-999 Spearman; research/vectors/intrinsic.py).

Commands:
  python scripts/sweep.py experiments/pretrained_init.py --jobs 2          # 9 inits x 3 fractions x 3 seeds
  python scripts/sweep.py experiments/pretrained_init.py:small --jobs 2    # 1 seed (27 runs)
  python scripts/report.py experiments/pretrained_init.py[:small]
  python scripts/train.py experiments/pretrained_init.py:runlocal,init=fasttext_frozen --workdir /tmp/run
"""

import statistics
from pathlib import Path

from research.config import Config, DataConfig, EvalConfig, ModelConfig, PretrainedConfig
from research.studies import plotting
from research.studies import verdicts as verdicts_lib
from research.studies.experiment import parse_knobs, schedule
from research.studies.figures import evaluation_note
from research.studies.intervals import difference

DIM = 128  # the vectors' dimension = d_model, so aligned rows go into the table with no projection
VECTORS = {
    "word2vec": f"train:word2vec:wiki-sample:0.5-1.0,dim={DIM},epochs=10,min_count=2,seed=0",
    # 50k n-gram buckets, not fastText's 2M: the half-corpus has few distinct n-grams, and fewer buckets keep each
    # bucket's vector trained by many of them
    "fasttext": f"train:fasttext:wiki-sample:0.5-1.0,dim={DIM},epochs=10,min_count=2,seed=0,bucket=50000",
}
INITS = (
    "random", "random_frozen", "random_early", "word2vec_finetune", "word2vec_frozen", "fasttext_finetune",
    "fasttext_frozen", "fasttext_finetune_early", "fasttext_frozen_early",
)  # fmt: skip
"""`_early`: scored at the best of 10 validations (train.final_params=best_valid) instead of the last step."""
FRACTIONS = (0.01, 0.1, 1.0)
SEQ_LEN = 64
BUCKETS = (10, 100, 1000)  # train-frequency decades: rare (<= 10) to frequent (> 1000)


def knobs(arg):
    return parse_knobs(arg, small=False, runlocal=False, init="random", fraction=1.0, seed=0)


def get_config(arg: str = "") -> Config:
    k = knobs(arg)
    if k.init not in INITS:
        raise ValueError(f"init: expected one of {', '.join(INITS)}, got {k.init!r}")
    # eval_bytes None: every test document (a byte cap keeps too few for an interval)
    # 200 steps of 16 x 64 words: ~0.7 epochs at 100%, ~70 passes over the 1% slice (the scarce-data end, where
    # the controls matter); 2 layers: docs/running.md#study-scale
    steps, eval_bytes, layers, seq_len, batch, dim = 200, None, 2, SEQ_LEN, 16, DIM
    vectors = dict(VECTORS)
    if k.runlocal:
        steps, eval_bytes, layers, seq_len, batch, dim = 4, 5_000, 1, 16, 4, 16
        vectors = {
            name: f"train:{name}:lee,dim=16,epochs=1,min_count=5,seed=0,bucket=1000" for name in VECTORS
        }
    init, early = k.init.removesuffix("_early"), k.init.endswith("_early")
    pretrained, train = PretrainedConfig(), schedule(steps, 3e-3)
    if early:  # model selection on the valid split, 10 validations per run
        train = schedule(steps, 3e-3, evals=10, final_params="best_valid")
    if init == "random_frozen":  # the control: a frozen table that never saw any text
        pretrained = PretrainedConfig(mode="frozen")
    elif init != "random":
        source, mode = init.split("_")
        pretrained = PretrainedConfig(path=vectors[source], mode=mode, rescale=True)
    return Config(
        seed=k.seed,
        data=DataConfig(
            tokenizer={
                "name": "word",
                "max_size": 8000,
            },  # the input table and the readout: 1.0 M parameters each
            train_docs=(0.0, 0.5),
            train_fraction=float(k.fraction),
            train_fraction_start=slice_start(float(k.fraction), k.seed),
            seq_len=seq_len,
            batch_size=batch,
            max_eval_bytes=eval_bytes,
        ),
        model=ModelConfig(
            d_model=dim,
            num_layers=layers,
            num_heads=4,
            embedding={"name": "table", "tied": False},
            pretrained=pretrained,
        ),  # fmt: skip
        train=train,
        eval=EvalConfig(
            length_multipliers=(1,), batch_size=16, valid_max_windows=32, frequency_buckets=BUCKETS
        ),
    )


def slice_start(fraction: float, seed: int) -> float:
    """Seed s trains on the slice starting at s/3 of the remaining tokens: three disjoint slices for fractions up to
    1/3, so a small-data result is not one slice's (seed 0 takes the first)."""
    return (seed % 3) / 3 * (1.0 - fraction)


def sweep(add, arg: str = "") -> None:
    k = knobs(arg)
    seeds = (0,) if (k.small or k.runlocal) else (0, 1, 2)
    for seed in seeds:
        for fraction in FRACTIONS:
            for init in INITS:
                add(init=init, fraction=fraction, seed=seed)


def metrics() -> list[str]:
    prefix = f"test/len_{SEQ_LEN}"
    return [f"{prefix}/bpb", f"{prefix}/loss_bucket/1-10", f"{prefix}/loss_bucket/>1000", "coverage",
            "analogy", "wordsim353", "simlex999"]  # fmt: skip


def derived(summary: dict) -> dict:
    """Coverage of the vocabulary by the vectors and the vectors' intrinsic scores (nan for random)."""
    p = summary.get("pretrained") or {}
    scores = (p.get("vectors") or {}).get("intrinsic", {})
    nan = float("nan")
    return {
        "coverage": p.get("coverage", nan),
        "analogy": scores.get("analogy_accuracy", nan),
        "wordsim353": scores.get("wordsim353_spearman", nan),
        "simlex999": scores.get("simlex999_spearman", nan),
    }


def figures(groups: dict, folder: Path) -> list[Path]:
    """Test bpb against the training-data fraction, one line per initialisation (mean, band: min-max over seeds;
    frozen tables dashed, early-stopped runs with square markers)."""
    lines: dict[str, list] = {}
    for members in groups.values():
        knob = members[0]["knobs"]
        bpb = [m["summary"]["metrics"][metrics()[0]] for m in members]
        lines.setdefault(knob["init"], []).append(
            (float(knob["fraction"]), statistics.fmean(bpb), min(bpb), max(bpb))
        )
    fig, axes = plotting.figure(width=6.6, height=4.0)
    ax = axes[0][0]
    for init in sorted(lines, key=lambda name: INITS.index(name) if name in INITS else 99):
        x, mean, lo, hi = zip(*sorted(lines[init]))
        plotting.line(
            ax,
            x,
            mean,
            init,
            band=(lo, hi),
            order=INITS,
            linestyle="--" if "frozen" in init else "-",
            marker="s" if init.endswith("_early") else "o",
        )
    ax.set_xscale("log")
    ax.set_xlabel("fraction of the LM's training tokens")
    ax.set_ylabel("test bits per byte")
    plotting.legend(fig)
    plotting.subtitle(
        fig, "Test bits per byte against training data, by initialisation", evaluation_note(groups)
    )
    return [plotting.save_figure(fig, folder / "bpb_vs_data.png")]


QI = "Qi et al. 2018 (NAACL, arXiv 1804.06323)"
CLAIMS = [
    # (claim, init, control, fractions: its gain over the control at the first, minus that at the second if any;
    #  expect)
    ("Pretrained (fastText) vectors help when training data is scarce: frozen, better than a frozen random table",
     "fasttext_frozen", "random_frozen", (0.01,), "<"),
    ("Pretrained (word2vec) vectors help when training data is scarce: frozen, better than a frozen random table",
     "word2vec_frozen", "random_frozen", (0.01,), "<"),
    ("Pretrained (fastText) vectors help when training data is scarce, both early-stopped: frozen, better than a "
     "random table", "fasttext_frozen_early", "random_early", (0.01,), "<"),
    ("Pretrained (fastText) vectors help when training data is scarce, both early-stopped: fine-tuned, better than a "
     "random table", "fasttext_finetune_early", "random_early", (0.01,), "<"),
    ("The gain of pretrained (fastText) vectors shrinks as training data grows (100% against 1%)",
     "fasttext_frozen", "random_frozen", (1.0, 0.01), ">"),
    ("The same, both early-stopped: fine-tuned fastText against a random table",
     "fasttext_finetune_early", "random_early", (1.0, 0.01), ">"),
]  # fmt: skip
"""Qi et al. 2018's finding, as measurable claims. Each gain is an initialisation minus a control (same fraction,
same slice per seed): the frozen random table, so that what a frozen table does by itself is not credited to the
vectors, or the early-stopped random table, so that what stopping early does is not either."""


def verdicts(groups: dict) -> list:
    metric, out = metrics()[0], []

    def gain(init, control, fraction):
        return verdicts_lib.paired_knobs(
            groups, metric, {"fraction": fraction, "init": init}, {"fraction": fraction, "init": control}
        )

    for claim, init, control, fractions, expect in CLAIMS:
        gains = [gain(init, control, f) for f in fractions]
        if None in gains:
            continue
        est = gains[0] if len(gains) == 1 else difference(*gains)
        seeds = len(groups[verdicts_lib.group_key(groups, fraction=fractions[0], init=init)])
        at = " minus the same at ".join(f"{f:.0%}" for f in fractions)
        out.append((verdicts_lib.Claim(
            claim, QI, f"pretrained_init: word LM, {seeds} seed(s), untied readout",
            f"{init} minus {control} (test bpb), at {at}", expect,
            command="python scripts/sweep.py experiments/pretrained_init.py" + (":small" if seeds == 1 else "") + " --jobs 2",
        ), est))  # fmt: skip
    return out
