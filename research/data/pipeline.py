"""DataConfig -> Dataset: a corpus prepared once into memory-mapped token files (research/data/tokens.py), opened
as one token stream per split.

A split's stream is `[doc] + encode(d1) + [doc] + encode(d2) + ...`, so every document is preceded by the
separator and predicting positions 1..N-1 predicts every byte of every document exactly once (plus the
separators between them). Bits per byte is then exact: sum of target NLL in bits / `TokenSplit.num_bytes`.
Each target belongs to one document (a separator to the document it opens), so the NLL splits into per-document
totals whose sums are the split's (`TokenSplit.document_of`). Valid and test splits are whole by default; with
data.max_eval_bytes, whole documents sampled across the split (research/data/corpora.py: sample_documents).

The token files live under `cache_dir()/tokens/<key>/`, keyed by the corpus's fingerprint (sizes and modification
times of its files, or a hash of a small source: the corpus is not read to find them), the tokenizer's config, the
train-document range and max_eval_bytes. Preparing takes a file lock, so concurrent runs prepare a corpus once.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil

import numpy as np

from research.config import ConfigError, DataConfig
from research.data.corpora import SPLITS, CorpusConfig, resolve_corpus, sample_documents
from research.data.tokens import (
    FORMAT,
    default_workers,
    encode_documents,
    open_tokens,
    read_meta,
    write_meta,
    write_splits,
)
from research.runtime.cache import cache_dir
from research.tokenization import Tokenizer, TokenizerConfig, resolve_tokenizer

PIPELINE_VERSION = "tokens-v3"  # bump when the stream layout or the document selection changes


@dataclasses.dataclass(frozen=True)
class TokenSplit:
    tokens: np.ndarray
    """[N] (a read-only memory map of uint16 or uint32, or int32): separator-led documents, concatenated."""
    num_bytes: int
    """UTF-8 bytes of the split's documents (the bits-per-byte denominator)."""
    num_documents: int
    doc_bytes: np.ndarray | None = None
    """int64 [num_documents]: UTF-8 bytes of each document, in stream order (sums to num_bytes)."""
    doc_offsets: np.ndarray | None = None
    """int64 [num_documents]: where each document's separator stands in `tokens`."""
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
        offsets = self.doc_offsets
        if offsets is None:
            offsets = np.flatnonzero(np.asarray(self.tokens) == self.doc_id)
        return np.searchsorted(offsets, positions, side="right") - 1


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
    if corpus.streamed and tuple(data_config.train_docs) != (0.0, 1.0):
        raise ConfigError(
            f"data.train_docs: a streamed corpus ({corpus.registered_name}) is read once, without counting its "
            f"documents, so it takes the whole train split (0.0, 1.0) only, got {tuple(data_config.train_docs)}; "
            "data.train_fraction cuts its train tokens"
        )


def tokenize_documents(tokenizer: Tokenizer, documents: list[str]) -> np.ndarray:
    """[doc] + encode(d1) + [doc] + encode(d2) + ... as int32 [N]."""
    return encode_documents(tokenizer, documents, np.int32)[0]


def split_documents(
    corpus, split: str, max_eval_bytes: int | None, train_docs: tuple[float, float] = (0.0, 1.0)
):
    """The documents of a split: train cut to the `train_docs` range; valid/test whole, or whole documents
    sampled across the split up to max_eval_bytes. A streamed corpus's train split stays a stream."""
    docs = corpus.documents(split)
    if split == "train":
        return docs if tuple(train_docs) == (0.0, 1.0) else select_range(list(docs), train_docs)
    if max_eval_bytes is not None:
        docs = sample_documents(list(docs), max_eval_bytes)
    return docs


def labelled_documents(corpus, data_config: DataConfig):
    """(split, document) pairs of every split, as `split_documents` selects them; a streamed corpus is read once
    (its valid and test documents are held only when max_eval_bytes samples them)."""
    train_docs, cap = tuple(data_config.train_docs), data_config.max_eval_bytes
    if not hasattr(corpus, "labelled"):
        for split in SPLITS:
            yield from ((split, doc) for doc in split_documents(corpus, split, cap, train_docs))
        return
    held = {"valid": [], "test": []}
    for split, doc in corpus.labelled():
        if split == "train" or cap is None:
            yield split, doc
        else:
            held[split].append(doc)
    for split, docs in held.items():
        yield from ((split, doc) for doc in (sample_documents(docs, cap) if docs else []))


def select_range(docs: list, span: tuple[float, float]) -> list:
    """docs[round(start * n) : round(end * n)]."""
    n = len(docs)
    return docs[round(span[0] * n) : round(span[1] * n)]


def token_folder(data_config: DataConfig, corpus: CorpusConfig, tokenizer: TokenizerConfig):
    """Where a corpus x tokenizer x document selection is prepared."""
    key = json.dumps(
        [
            corpus.fingerprint(),
            type(tokenizer).__name__,
            dataclasses.asdict(tokenizer),
            tokenizer.fingerprint(),
            list(data_config.train_docs),
            data_config.max_eval_bytes,
            FORMAT,
            PIPELINE_VERSION,
        ],  # fmt: skip
        sort_keys=True,
    )
    return cache_dir() / "tokens" / hashlib.sha256(key.encode()).hexdigest()[:32]


def prepare_data(data_config: DataConfig, *, workers: int | None = None, log=None) -> Dataset:
    """The dataset of a data config: its token files, prepared first when they do not exist (see `prepare`)."""
    validate_data_config(data_config)
    corpus_config, tokenizer_config = resolve_data(data_config)
    folder = token_folder(data_config, corpus_config, tokenizer_config)
    meta = read_meta(folder) or prepare(folder, data_config, workers=workers, log=log)
    tokenizer = tokenizer_config.load(folder)
    splits = {split: open_split(folder, split, meta, tokenizer, data_config) for split in SPLITS}
    return Dataset(tokenizer=tokenizer, corpus_name=meta["corpus"], splits=splits)


def open_split(folder, split: str, meta: dict, tokenizer, data_config: DataConfig) -> TokenSplit:
    tokens, docs = open_tokens(folder, split, meta)
    info = meta["splits"][split]
    num_bytes, doc_bytes, offsets = info["bytes"], docs[:, 1], docs[:, 0]
    if split == "train" and data_config.train_fraction < 1.0:  # a contiguous part of the stream
        keep = max(2, round(data_config.train_fraction * len(tokens)))
        start = min(round(data_config.train_fraction_start * len(tokens)), len(tokens) - keep)
        num_bytes = round(num_bytes * keep / len(tokens))  # approximate: reported, not used for bpb
        tokens, doc_bytes, offsets = tokens[start : start + keep], None, None
    stateful = getattr(tokenizer, "stateful", False)
    return TokenSplit(
        tokens=tokens, num_bytes=num_bytes, num_documents=info["documents"], doc_bytes=doc_bytes,
        doc_offsets=offsets, doc_id=tokenizer.doc_id, oov_rate=info["oov_rate"],
        close=(tokenizer.vocab_size, tokenizer.unk_id) if stateful else None,
    )  # fmt: skip


def prepare(folder, data_config: DataConfig, *, workers: int | None = None, log=None) -> dict:
    """Build the tokenizer on the train split and write every split's token files into `folder` (through a
    temporary folder renamed at the end, under a file lock: one process prepares, the others wait and read);
    the meta.json it wrote."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (meta := read_meta(folder)) is not None:
            return meta
        corpus_config, tokenizer_config = resolve_data(data_config)
        corpus = corpus_config.load()
        train_docs = tuple(data_config.train_docs)
        train = split_documents(corpus, "train", None, train_docs)
        if isinstance(train, list) and not train:
            raise ConfigError(
                f"data.train_docs: {train_docs} selects no document of {corpus.name}'s train split"
            )
        if log:
            log(f"preparing {corpus.name} with {tokenizer_config} into {folder} (once)")
        tokenizer = tokenizer_config.build(train)
        tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        tokenizer.save(tmp)
        spec = {"name": tokenizer_config.registered_name, **dataclasses.asdict(tokenizer_config)}
        pairs = labelled_documents(corpus, data_config)
        workers = default_workers() if workers is None else workers
        stats = write_splits(tmp, pairs, SPLITS, tokenizer, spec, workers=workers)
        tokenizer.save(tmp)  # again: a stateful tokenizer has spelled new words while encoding
        lossy = max(stats[s]["roundtrip_mismatch"] for s in SPLITS)
        if lossy and log:
            log(f"{tokenizer.name} does not round-trip {lossy:.0%} of the checked documents (normalisation or "
                "unknown tokens); bits per byte still divide by the original text's bytes")  # fmt: skip
        meta = {"corpus": corpus.name, "corpus_fingerprint": corpus_config.fingerprint(),
                "tokenizer": tokenizer.name, "tokenizer_fingerprint": tokenizer.fingerprint,
                "roundtrip_mismatch": lossy, "splits": stats}  # fmt: skip
        write_meta(tmp, meta)
        shutil.rmtree(folder, ignore_errors=True)  # an incomplete folder of an interrupted preparation
        os.replace(tmp, folder)
    return read_meta(folder)
