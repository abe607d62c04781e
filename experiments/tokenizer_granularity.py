"""Bytes, characters, subwords or words? Test bits-per-byte, tokens per byte and training throughput by tokenizer.

Tokenizers: byte, char, BPE with 1k / 4k / 16k pieces, unigram with 4k, word with 10k and 30k types (the word
vocabularies keep the most frequent types of the train split; the rest is <unk>, see the caveat below). The
transformer is the same for all (d_model 128, 3 layers, 4 heads, RoPE, tied tables), so only the embedding table
and readout grow with the vocabulary; every run trains 300 steps of 16 x 128 tokens (the same tokens, not the same
bytes: a coarser tokenizer sees more text, which is its point) and is evaluated at 128 tokens.

Corpora: the default `wiki-sample`, and any other passed as a knob, with its own run and result folders, e.g.
  python scripts/sweep.py experiments/tokenizer_granularity.py:corpus=/path/to/input.txt --root runs/shakespeare
  python scripts/report.py experiments/tokenizer_granularity.py:corpus=/path/to/input.txt --root runs/shakespeare \
      --out results/shakespeare
(a file or folder of text read by the `text` corpus; a folder with wiki.{train,valid,test}.tokens is read as
`wikitext`).

Matched on bytes (`bytes_matched`): the default matches tokens, so a coarser tokenizer also reads more text. With
`bytes_matched` every tokenizer reads the bytes BPE-4k reads in 300 steps (BYTES_BUDGET, ~0.74 epochs of the train
split): steps = budget x the tokenizer's train tokens per byte / tokens per batch, the rate measured by the
token-matched study's committed summaries (results/tokenizer_granularity/runs/: byte 973 steps, word 194). It also
scores every test document (paired intervals). FLOPs differ either way: the table's `train_tflop` estimates the
training compute of each run as 6 x tokens x (non-embedding parameters + the d_model x V readout) plus attention's
6 x layers x seq_len x d_model per token (Kaplan et al. 2020, arXiv 2001.08361, Table 1), so a bpb difference can
be read against the compute that bought it.

Caveat: bits-per-byte of a closed vocabulary (char, word) does not pay for the spelling of out-of-vocabulary
tokens; the table reports the test OOV rate beside it (research/tokenization/vocab.py).

Commands:
  python scripts/sweep.py experiments/tokenizer_granularity.py --jobs 2      # 8 tokenizers x 2 seeds
  python scripts/report.py experiments/tokenizer_granularity.py
  python scripts/sweep.py experiments/tokenizer_granularity.py:bytes_matched --jobs 2   # matched on bytes, 1 seed
  python scripts/train.py experiments/tokenizer_granularity.py:runlocal --workdir /tmp/run
"""

import json
import statistics
from pathlib import Path

from research.config import Config, DataConfig, EvalConfig, ModelConfig
from research.studies import plotting
from research.studies import verdicts as verdicts_lib
from research.studies.experiment import parse_knobs, schedule
from research.studies.figures import evaluation_note

# Byte and char, subword sizes spanning 1k-16k (BPE, and unigram at 4k beside BPE-4k: Kudo 2018's comparison),
# and closed word vocabularies of 10k / 30k types (they cover 79% / 85% of the test words; the rest is <unk>).
TOKENIZERS = {
    "byte": {"name": "byte"},
    "char": {"name": "char"},
    "bpe1k": {"name": "bpe", "vocab_size": 1024},
    "bpe4k": {"name": "bpe", "vocab_size": 4096},
    "bpe16k": {"name": "bpe", "vocab_size": 16384},
    "unigram4k": {"name": "unigram", "vocab_size": 4096},
    "word10k": {"name": "word", "max_size": 10_000},
    "word30k": {"name": "word", "max_size": 30_000},
}
SEQ_LEN = 128
STEPS, BATCH = 300, 16  # with 3 layers: docs/running.md#study-scale
# bytes_matched: every tokenizer reads the bytes this one reads in STEPS steps; the middle of the range, so no
# tokenizer gets fewer than 2/3 of its token-matched steps (word: 194) and byte ~3x (973)
BYTES_BUDGET_FROM = "bpe4k"
MEASURED = Path(__file__).resolve().parent.parent / "results" / "tokenizer_granularity" / "runs"


def knobs(arg):
    return parse_knobs(
        arg, small=False, runlocal=False, bytes_matched=False, corpus="", tokenizer="byte", seed=0
    )


def corpus_spec(path: str) -> dict:
    if not path:
        return {"name": "wiki-sample"}
    folder = Path(path)
    if folder.is_dir() and (folder / "wiki.train.tokens").exists():
        return {"name": "wikitext", "path": path}
    return {"name": "text", "path": path}


def get_config(arg: str = "") -> Config:
    k = knobs(arg)
    if k.tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer: expected one of {', '.join(TOKENIZERS)}, got {k.tokenizer!r}")
    # the whole test split (7 documents: paired intervals); a corpus given by path keeps a 60 kB test sample, which
    # bounds the evaluation of a large corpus (and is what the committed Tiny Shakespeare table was run with)
    steps, eval_bytes, layers, seq_len, batch = STEPS, (60_000 if k.corpus else None), 3, SEQ_LEN, BATCH
    if k.bytes_matched:
        if k.corpus:
            raise ValueError(
                "bytes_matched: the measured tokens per byte are the default corpus's; drop corpus="
            )
        steps, eval_bytes = bytes_matched_steps(k.tokenizer), None
    tokenizer = TOKENIZERS[k.tokenizer]
    if k.runlocal:
        steps, eval_bytes, layers, seq_len, batch = 4, 5_000, 1, 16, 4
    return Config(
        seed=k.seed,
        data=DataConfig(
            corpus=corpus_spec(k.corpus),
            tokenizer=tokenizer,
            seq_len=seq_len,
            batch_size=batch,
            max_eval_bytes=eval_bytes,
        ),
        model=ModelConfig(d_model=128, num_layers=layers, num_heads=4),
        train=schedule(steps, 3e-3),
        eval=EvalConfig(length_multipliers=(1,), batch_size=16, valid_max_windows=32),
    )


def tokens_per_byte(name: str) -> float:
    """The train split's tokens per byte of tokenizer `name` on the default corpus, from the token-matched study's
    committed run summaries (mean over seeds)."""
    rates = []
    for path in sorted(MEASURED.glob(f"*tokenizer={name}.json")):
        summary = json.loads(path.read_text())
        if not summary.get("config", {}).get("data", {}).get("corpus", {}).get("path"):
            rates.append(summary["tokens"]["train"] / summary["bytes"]["train"])
    if not rates:
        raise ValueError(
            f"bytes_matched: no committed run of tokenizer {name!r} in {MEASURED} to read its tokens per byte from; "
            "run the token-matched study and its report first"
        )
    return statistics.fmean(rates)


def bytes_matched_steps(name: str) -> int:
    """Steps at which tokenizer `name` reads the bytes BYTES_BUDGET_FROM reads in STEPS steps."""
    budget = STEPS * BATCH * SEQ_LEN / tokens_per_byte(BYTES_BUDGET_FROM)
    return max(1, round(budget * tokens_per_byte(name) / (BATCH * SEQ_LEN)))


def sweep(add, arg: str = "") -> None:
    k = knobs(arg)
    seeds = (0,) if (k.small or k.runlocal or k.bytes_matched) else (0, 1)
    for seed in seeds:
        for name in TOKENIZERS:
            add(tokenizer=name, seed=seed)


def metrics() -> list[str]:
    return [
        f"test/len_{SEQ_LEN}/bpb",
        "tokens_per_byte",
        "oov_rate_test",
        "train_tokens_per_s",
        "train_tflop",
    ]


def baseline() -> dict:
    """BPE-4k, the middle of the range and the tokenizer whose bytes `bytes_matched` gives every other one."""
    return {"tokenizer": BYTES_BUDGET_FROM}


def derived(summary: dict) -> dict:
    """Metrics computed from a run summary: tokens per byte (test split), test OOV rate, training throughput."""
    return {
        "tokens_per_byte": summary["tokens"]["test"] / summary["bytes"]["test"],
        "oov_rate_test": summary.get("oov_rate", {}).get("test", 0.0),
        "train_tokens_per_s": summary.get("train_tokens_per_s") or float("nan"),
        "train_tflop": training_flop(summary) / 1e12,
    }


def training_flop(summary: dict) -> float:
    """Training compute of a run (Kaplan et al. 2020, Table 1): per token 6 x (non-embedding parameters + the
    readout's d_model x V multiply, tied or not) + 6 x layers x seq_len x d_model (attention), x tokens trained."""
    config, params = summary["config"], summary["params"]
    d, layers, seq_len = config["model"]["d_model"], config["model"]["num_layers"], config["data"]["seq_len"]
    tokens = summary["steps"] * config["data"]["batch_size"] * seq_len
    dense = params["rest"] + params["positional"] + d * summary["vocab_size"]
    return 6.0 * tokens * (dense + layers * seq_len * d)


def figures(groups: dict, folder: Path) -> list[Path]:
    """Test bpb and tokens per byte by tokenizer (mean over seeds)."""
    rows = []
    for members in groups.values():
        name = members[0]["knobs"]["tokenizer"]
        bpb = statistics.fmean(m["summary"]["metrics"][metrics()[0]] for m in members)
        tpb = statistics.fmean(derived(m["summary"])["tokens_per_byte"] for m in members)
        rows.append((list(TOKENIZERS).index(name) if name in TOKENIZERS else 99, name, bpb, tpb))
    rows.sort()
    names = [r[1] for r in rows]
    fig, axes = plotting.figure(1, 2, width=5.4, height=3.6)
    left, right = axes[0]
    left.bar(names, [r[2] for r in rows], color=[plotting.colour(n, list(TOKENIZERS)) for n in names])
    left.set_ylabel("test bits per byte")
    right.bar(names, [r[3] for r in rows], color=[plotting.colour(n, list(TOKENIZERS)) for n in names])
    right.set_ylabel("tokens per byte (test split)")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=45)
        ax.grid(False, axis="x")
    plotting.subtitle(
        fig, "Tokenizer granularity: bits per byte and tokens per byte", evaluation_note(groups)
    )
    return [plotting.save_figure(fig, folder / "by_tokenizer.png")]


BOSTROM = "Bostrom & Durrett 2020 (Findings of EMNLP, arXiv 2004.03720)"


def verdicts(groups: dict) -> list:
    """Unigram LM against BPE at the same 4k vocabulary (Bostrom & Durrett 2020: unigram is the better tokenizer
    for LM pretraining), on runs that score every test document (a 60 kB sample holds too few for an interval):
    the token-matched study and `bytes_matched`."""
    a = verdicts_lib.group_key(groups, tokenizer="unigram4k")
    if a is None or groups[a][0]["summary"]["config"]["data"].get("max_eval_bytes"):
        return []
    metric = f"test/len_{SEQ_LEN}/bpb"
    est = verdicts_lib.paired_knobs(
        groups, metric, {"tokenizer": "unigram4k"}, {"tokenizer": BYTES_BUDGET_FROM}
    )
    if est is None:
        return []
    by_bytes = any(m[0]["summary"]["config"]["train"]["steps"] != STEPS for m in groups.values())
    knob, read = (":bytes_matched", "the same bytes read") if by_bytes else ("", "the same tokens read")
    claim = verdicts_lib.Claim(
        "Unigram LM tokenization is better than BPE for language modelling at the same vocabulary size",
        BOSTROM,
        f"tokenizer_granularity{knob}: 4k pieces each, {read}, {len(groups[a])} seed(s)",
        "unigram4k minus bpe4k, test bpb",
        "<",
        command=f"python scripts/sweep.py experiments/tokenizer_granularity.py{knob} --jobs 2",
    )
    return [(claim, est)]
