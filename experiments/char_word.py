"""Does character information help where words are rare or unseen? Word-level LMs with word-only, char-CNN and
word+char input embeddings.

Designs (research/embedding/): `table` (word-only), `char_cnn` (Kim et al. 2016: vectors composed from characters),
`word_char` with `concat`, `sum` and `gate` (Miyamoto & Cho 2016). Word tokenizer (GPT-2-style split) keeping types
seen at least twice in the train split (the rest is <unk>); the same transformer (d_model 128, 3 layers, 4 heads,
RoPE), 400 steps of 16 x 64 words. Reported: test bits-per-byte and test loss by how often the target word occurs in
the train split (`eval.frequency_buckets` 1-10, 11-100, 101-1000, >1000, and `oov`).

Out-of-vocabulary words are spelled for the input side (`word:spell_unknowns=true`): the character designs read
their real spelling, the word table sees <unk>, and the targets stay <unk> for every design (so the `oov` bucket is
the loss of predicting <unk>, and the gain of reading an unknown word shows up in the words after it).

`fair`: the comparison a reviewer asks for: a word-only control with the same kind of readout as each character
design (`word_untied` for char_cnn and concat, whose readout is a separate [d, V] matrix; the tied `word` for sum and
gate, which tie their readout to their word table), >= 3 epochs (FAIR_STEPS), and the loss after rare or unknown
input words as the headline (`loss_after/...` in each summary); 15-27 min per run on 2 CPU cores (estimated from
`fair,quarter`). `fair,quarter` is the same comparison on the first quarter of the train split's tokens
(`data.train_fraction`; the vocabulary is still the whole split's), so that 3 epochs take FAIR_STEPS / 4 = 400 steps
(3-7 min per run, two at a time): fewer distinct words, more rare ones, which is where the character designs are
claimed to help.

Commands:
  python scripts/sweep.py experiments/char_word.py --jobs 2        # 5 designs x 2 seeds
  python scripts/sweep.py experiments/char_word.py:fair --jobs 2   # 6 designs x 2 seeds, 1600 steps
  python scripts/sweep.py experiments/char_word.py:fair,quarter --jobs 2   # 3 epochs of a quarter of the data
  python scripts/report.py experiments/char_word.py
  python scripts/train.py experiments/char_word.py:runlocal,embedding=word_char_gate --workdir /tmp/run
"""

from research.config import Config, DataConfig, EvalConfig, ModelConfig
from research.studies import plotting
from research.studies import verdicts as verdicts_lib
from research.studies.experiment import parse_knobs, schedule
from research.studies.figures import evaluation_note

DESIGNS = {
    "word": {"name": "table"},
    "char_cnn": {"name": "char_cnn"},
    "word_char_concat": {"name": "word_char", "combine": "concat"},
    "word_char_sum": {"name": "word_char", "combine": "sum"},
    "word_char_gate": {"name": "word_char", "combine": "gate"},
    "word_untied": {"name": "table", "tied": False},
}
"""`word_untied` is the word-only control of the untied character designs (char_cnn, concat; `fair` runs it)."""
FAIR_STEPS = 1600  # >= 3 epochs of the train split (400 steps of 16 x 64 words are 0.76 epochs)
SEQ_LEN = 64
BUCKETS = (10, 100, 1000)  # train-frequency decades: rare (<= 10) to frequent (> 1000)


def knobs(arg):
    return parse_knobs(arg, small=False, runlocal=False, fair=False, quarter=False, embedding="word", seed=0)


def get_config(arg: str = "") -> Config:
    k = knobs(arg)
    if k.embedding not in DESIGNS:
        raise ValueError(f"embedding: expected one of {', '.join(DESIGNS)}, got {k.embedding!r}")
    if k.quarter and not k.fair:
        raise ValueError("quarter: a variant of the fair comparison; expected `fair,quarter`")
    fraction = 0.25 if k.quarter else 1.0
    # 400 steps (0.76 epochs): the first study's budget, the setup the fair comparison corrects; `fair` trains >= 3
    # epochs of what it reads. 3 layers, 16 x 64 words: docs/running.md#study-scale. Every study scores the whole
    # test split (7 documents), so each headline has an interval over documents.
    steps = round(FAIR_STEPS * fraction) if k.fair else 400
    eval_bytes, layers, seq_len, batch = None, 3, SEQ_LEN, 16
    embedding = dict(DESIGNS[k.embedding])
    if k.runlocal:
        steps, eval_bytes, layers, seq_len, batch = 4, 5_000, 1, 16, 4
        if embedding["name"] != "table":
            embedding.update(widths=[1, 2, 3], filters_per_width=4)
    return Config(
        seed=k.seed,
        data=DataConfig(
            # min_count 2: words seen once become <unk>, the rare and unseen words the study is about
            tokenizer={"name": "word", "min_count": 2, "spell_unknowns": True},
            seq_len=seq_len,
            batch_size=batch,
            max_eval_bytes=eval_bytes,
            train_fraction=fraction,
        ),
        model=ModelConfig(d_model=128, num_layers=layers, num_heads=4, embedding=embedding),
        train=schedule(steps, 3e-3),
        eval=EvalConfig(
            length_multipliers=(1,), batch_size=16, valid_max_windows=32, frequency_buckets=BUCKETS
        ),
    )


def sweep(add, arg: str = "") -> None:
    k = knobs(arg)
    seeds = (0,) if (k.small or k.runlocal) else (0, 1)
    for seed in seeds:
        for name in DESIGNS:
            if name != "word_untied" or k.fair:  # the untied baseline belongs to the fair comparison
                add(embedding=name, seed=seed)


BUCKET_NAMES = ("oov", "1-10", "11-100", "101-1000", ">1000")


def metrics() -> list[str]:
    """Bits per byte, the headline loss after a rare or unknown input word (the prediction that reads it; runs of
    `fair` record it), and the loss of predicting a word by its train-split count (the first study's columns)."""
    prefix = f"test/len_{SEQ_LEN}"
    after = [f"{prefix}/loss_after/{b}" for b in BUCKET_NAMES[:3]]
    return [f"{prefix}/bpb", *after, *(f"{prefix}/loss_bucket/{b}" for b in BUCKET_NAMES)]


def baseline() -> dict:
    """The untied word table, the control of char_cnn and concat (sum and gate tie: compare them to `word`)."""
    return {"embedding": "word_untied"}


def _seq_len(run: dict) -> int:
    return run["summary"]["config"]["data"]["seq_len"]


def figures(groups: dict, folder):
    """Test loss by train-frequency bucket of the target word, and of the input word before it (runs that record
    it), one bar per design (mean over seeds)."""
    import math
    import statistics

    ordered = sorted(groups.values(), key=lambda g: list(DESIGNS).index(g[0]["knobs"]["embedding"]))
    buckets = list(BUCKET_NAMES)
    panels = {}
    for kind, title in (("bucket", "the target word"), ("after", "the input word before it")):
        series = {
            members[0]["knobs"]["embedding"]: [
                statistics.fmean(
                    m["summary"]["metrics"].get(f"test/len_{_seq_len(m)}/loss_{kind}/{b}", math.nan)
                    for m in members
                )  # fmt: skip
                for b in buckets
            ]
            for members in ordered
        }
        if any(not math.isnan(v) for values in series.values() for v in values):
            panels[title] = series
    if not panels:
        return []
    fig, axes = plotting.figure(1, len(panels), width=5.6, height=3.8, sharey=True)
    for ax, (title, series) in zip(axes[0], panels.items(), strict=True):
        plotting.bars(ax, buckets, series, order=list(DESIGNS))
        ax.set_title(f"by train-split count of {title}")
        ax.set_xlabel("train-split count")
    axes[0][0].set_ylabel("test loss (nats per word)")
    plotting.legend(fig)
    plotting.subtitle(fig, "Word-level test loss by word frequency", evaluation_note(groups))
    return [plotting.save_figure(fig, folder / "loss_by_frequency.png")]


KIM = "Kim et al. 2016 (AAAI, arXiv 1508.06615)"
MIYAMOTO = "Miyamoto & Cho 2016 (EMNLP, arXiv 1606.01700)"
CLAIMS = [
    # (claim, source, design, control, metric (after test/len_64/), expect): the design minus the control
    ("Character-aware inputs help where words are unknown: a char-CNN input lowers the loss of the prediction "
     "after an out-of-vocabulary word", KIM, "char_cnn", "word_untied", "loss_after/oov", "<"),
    ("Character-aware inputs help where words are rare: a char-CNN input lowers the loss after a word seen 1-10 "
     "times in training", KIM, "char_cnn", "word_untied", "loss_after/1-10", "<"),
    ("The same against the tied word table (whose rare rows are also trained as outputs)", KIM, "char_cnn", "word",
     "loss_after/1-10", "<"),
    ("A char-CNN input is better than a word table overall", KIM, "char_cnn", "word_untied", "bpb", "<"),
    ("A gated word+char input lowers the loss after an out-of-vocabulary word", MIYAMOTO, "word_char_gate", "word",
     "loss_after/oov", "<"),
    ("A gated word+char input is better than a word-only input overall", MIYAMOTO, "word_char_gate", "word", "bpb",
     "<"),
    ("A concatenated word+char input (the paper's baseline combination) lowers the loss after an out-of-vocabulary "
     "word", MIYAMOTO, "word_char_concat", "word_untied", "loss_after/oov", "<"),
    ("A concatenated word+char input is better than a word-only input overall", MIYAMOTO, "word_char_concat",
     "word_untied", "bpb", "<"),
]  # fmt: skip
"""The papers' findings as measurable claims, each a design minus the word-only control with the same kind of
readout, paired over test documents: the untied `word_untied` for char_cnn and concat, the tied `word` for gate (and
once for char_cnn, as a check on the untied control). Judged only on `fair` runs (they have both controls)."""


def verdicts(groups: dict) -> list:
    out = []
    if verdicts_lib.group_key(groups, embedding="word_untied") is None:
        return out
    for claim, source, design, control, metric, expect in CLAIMS:
        if (a := verdicts_lib.group_key(groups, embedding=design)) is None:
            continue
        name = f"test/len_{_seq_len(groups[a][0])}/{metric}"
        est = verdicts_lib.paired_knobs(groups, name, {"embedding": design}, {"embedding": control})
        if est is None:
            continue
        summary = groups[a][0]["summary"]
        data, steps = summary["config"]["data"], summary["config"]["train"]["steps"]
        fraction = data.get("train_fraction", 1.0)
        epochs = steps * data["batch_size"] * data["seq_len"] / summary["tokens"]["train"]
        knob = "fair,quarter" if fraction < 1 else "fair"
        unit = "bpb" if metric == "bpb" else "nats per word"
        out.append((verdicts_lib.Claim(
            claim, source,
            f"char_word:{knob}: word LM, {steps} steps = {epochs:.1f} epochs of {fraction:.0%} of the train split, "
            f"{len(groups[a])} seed(s)",
            f"{design} minus {control}, test {metric} ({unit})", expect,
            command=f"python scripts/sweep.py experiments/char_word.py:{knob} --jobs 2",
        ), est))  # fmt: skip
    return out
