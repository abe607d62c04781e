"""DataConfig -> Dataset: corpus documents tokenized into one int32 stream per split.

A split's stream is `[doc] + encode(d1) + [doc] + encode(d2) + ...`, so every document is preceded by the
separator and predicting positions 1..N-1 predicts every byte of every document exactly once (plus the
separators between them). Bits per byte is then exact: sum of target NLL in bits / `TokenSplit.num_bytes`.
Each target belongs to one document (a separator to the document it opens), so the NLL splits into per-document
totals whose sums are the split's (`TokenSplit.document_of`). Valid and test splits are whole by default; with
data.max_eval_bytes, whole documents sampled across the split (research/data/corpora.py: sample_documents).
Token streams are cached as .npy under `cache_dir()/tokens/`, keyed by corpus content, tokenizer fingerprint
and max_eval_bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io

import numpy as np

from research.config import ConfigError, DataConfig
from research.data.corpora import (
    SPLITS,
    Corpus,
    CorpusConfig,
    atomic_write,
    cache_dir,
    resolve_corpus,
    sample_documents,
)
from research.tokenization import Tokenizer, TokenizerConfig, resolve_tokenizer

PIPELINE_VERSION = "tokens-v2"  # bump when the stream layout or the document selection changes


@dataclasses.dataclass(frozen=True)
class TokenSplit:
    tokens: np.ndarray
    """int32 [N]: separator-led documents, concatenated."""
    num_bytes: int
    """UTF-8 bytes of the split's documents (the bits-per-byte denominator)."""
    num_documents: int
    doc_bytes: np.ndarray | None = None
    """int64 [num_documents]: UTF-8 bytes of each document, in stream order (sums to num_bytes)."""
    doc_id: int = -1
    """The separator id that opens every document in `tokens`."""
    oov_rate: float = 0.0
    """Fraction of the split's document tokens (separators excluded) outside the output vocabulary (<unk>, or
    spelled ids >= vocab_size)."""
    close: tuple[int, int] | None = None
    """(vocab_size, unk_id) when the stream holds spelled ids >= vocab_size (word:spell_unknowns=true): targets are
    closed to <unk> with research/data/stream.close_targets; None otherwise."""

    def document_of(self, positions: np.ndarray) -> np.ndarray:
        """The document index of each stream position (a separator belongs to the document it opens)."""
        starts = np.flatnonzero(np.asarray(self.tokens) == self.doc_id)
        return np.searchsorted(starts, positions, side="right") - 1


@dataclasses.dataclass(frozen=True)
class Dataset:
    tokenizer: Tokenizer
    corpus_name: str
    splits: dict[str, TokenSplit]


def resolve_data(data_config: DataConfig) -> tuple[CorpusConfig, TokenizerConfig]:
    """Resolve the corpus and tokenizer specs (ConfigError on unknown names or options)."""
    return resolve_corpus(data_config.corpus), resolve_tokenizer(data_config.tokenizer)


def validate_data_config(data_config: DataConfig) -> None:
    """The data section's own checks, then its corpus and tokenizer specs against their registries and paths,
    without reading any corpus; raises ConfigError naming the field."""
    data_config.validate("data")
    corpus, tokenizer = resolve_data(data_config)
    corpus.validate()
    tokenizer.validate()


def tokenize_documents(tokenizer: Tokenizer, documents: list[str]) -> np.ndarray:
    """[doc] + encode(d1) + [doc] + encode(d2) + ... as int32 [N]."""
    sep = np.asarray([tokenizer.doc_id], dtype=np.int32)
    parts = [piece for doc in documents for piece in (sep, tokenizer.encode(doc))]
    return np.concatenate(parts).astype(np.int32, copy=False) if parts else np.zeros(0, np.int32)


def oov_rate(tokenizer: Tokenizer, tokens: np.ndarray) -> float:
    """Fraction of non-separator tokens equal to the tokenizer's `unk_id` (0 for open vocabularies)."""
    unk = getattr(tokenizer, "unk_id", None)
    real = tokens[tokens != tokenizer.doc_id]
    if unk is None or real.size == 0:
        return 0.0
    return float(np.mean((real == unk) | (real >= tokenizer.vocab_size)))


def split_documents(
    corpus: Corpus, split: str, max_eval_bytes: int | None, train_docs: tuple[float, float] = (0.0, 1.0)
) -> list[str]:
    """The documents of a split: train cut to the `train_docs` range; valid/test whole, or whole documents
    sampled across the split up to max_eval_bytes."""
    docs = corpus.documents(split)
    if split == "train":
        return select_range(docs, train_docs)
    if max_eval_bytes is not None:
        docs = sample_documents(docs, max_eval_bytes)
    return docs


def select_range(docs: list, span: tuple[float, float]) -> list:
    """docs[round(start * n) : round(end * n)]."""
    n = len(docs)
    return docs[round(span[0] * n) : round(span[1] * n)]


def prepare_data(data_config: DataConfig) -> Dataset:
    """Load the corpus, build the tokenizer on its train split, tokenize every split (cached)."""
    validate_data_config(data_config)
    corpus_config, tokenizer_config = resolve_data(data_config)
    corpus = corpus_config.load()
    train_docs = tuple(data_config.train_docs)
    if not select_range(corpus.documents("train"), train_docs):
        raise ConfigError(f"data.train_docs: {train_docs} selects no document of {corpus.name}'s train split")
    tokenizer = tokenizer_config.build(split_documents(corpus, "train", None, train_docs))
    corpus_key = corpus.key
    splits = {}
    for split in SPLITS:
        docs = split_documents(corpus, split, data_config.max_eval_bytes, train_docs)
        limit = train_docs if split == "train" else data_config.max_eval_bytes
        if limit == (0.0, 1.0):
            limit = None  # the key of the whole train split, as before train_docs existed
        key = f"{corpus_key}|{tokenizer.fingerprint}|{split}|{limit}|{PIPELINE_VERSION}"
        path = cache_dir() / "tokens" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy"
        stateful = getattr(tokenizer, "stateful", False)  # ids depend on what it encoded before: no cache
        if path.exists() and not stateful:
            tokens = np.load(path)
        else:
            tokens = tokenize_documents(tokenizer, docs)
            if not stateful:
                buffer = io.BytesIO()
                np.save(buffer, tokens)
                atomic_write(path, buffer.getvalue())
        doc_bytes = np.asarray([len(doc.encode("utf-8")) for doc in docs], np.int64)
        num_bytes = int(doc_bytes.sum())
        if split == "train" and data_config.train_fraction < 1.0:  # the first part of the stream
            keep = max(2, round(data_config.train_fraction * len(tokens)))
            num_bytes = round(num_bytes * keep / len(tokens))  # approximate: reported, not used for bpb
            tokens, doc_bytes = tokens[:keep], None
        splits[split] = TokenSplit(
            tokens=tokens,
            num_bytes=num_bytes,
            num_documents=len(docs),
            doc_bytes=doc_bytes,
            doc_id=tokenizer.doc_id,
            oov_rate=oov_rate(tokenizer, tokens),
            close=(tokenizer.vocab_size, tokenizer.unk_id) if getattr(tokenizer, "stateful", False) else None,
        )
    return Dataset(tokenizer=tokenizer, corpus_name=corpus.name, splits=splits)
