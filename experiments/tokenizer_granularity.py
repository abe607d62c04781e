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

Caveat: bits-per-byte of a closed vocabulary (char, word) does not pay for the spelling of out-of-vocabulary
tokens; the table reports the test OOV rate beside it (research/tokenization/vocab.py).

Commands:
  python scripts/sweep.py experiments/tokenizer_granularity.py --jobs 2      # 8 tokenizers x 2 seeds
  python scripts/report.py experiments/tokenizer_granularity.py
  python scripts/train.py experiments/tokenizer_granularity.py:runlocal --workdir /tmp/run
"""

import statistics
from pathlib import Path

from research.config import Config, DataConfig, EvalConfig, ModelConfig
from research.studies import plotting
from research.studies.experiment import parse_knobs, schedule
from research.studies.figures import evaluation_note

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


def knobs(arg):
    return parse_knobs(arg, small=False, runlocal=False, corpus="", tokenizer="byte", seed=0)


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
    steps, eval_bytes, layers, seq_len, batch = 300, 60_000, 3, SEQ_LEN, 16
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


def sweep(add, arg: str = "") -> None:
    k = knobs(arg)
    seeds = (0,) if (k.small or k.runlocal) else (0, 1)
    for seed in seeds:
        for name in TOKENIZERS:
            add(tokenizer=name, seed=seed)


def metrics() -> list[str]:
    return [f"test/len_{SEQ_LEN}/bpb", "tokens_per_byte", "oov_rate_test", "train_tokens_per_s"]


def derived(summary: dict) -> dict:
    """Metrics computed from a run summary: tokens per byte (test split), test OOV rate, training throughput."""
    return {
        "tokens_per_byte": summary["tokens"]["test"] / summary["bytes"]["test"],
        "oov_rate_test": summary.get("oov_rate", {}).get("test", 0.0),
        "train_tokens_per_s": summary.get("train_tokens_per_s") or float("nan"),
    }


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
