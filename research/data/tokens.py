"""Token files: a corpus prepared once into memory-mapped token files per split, then read by windows.

    write_splits   stream (split, document) pairs in one pass, tokenise them in worker processes (in order), and
                   append each split's tokens to `<split>.bin` (uint16 when the vocabulary fits, else uint32);
                   then `<split>.docs.npy` ([offset of each document's separator, its UTF-8 bytes], int64)
    write_meta     meta.json, last (research/data/pipeline.py: prepare)
    open_tokens    a split's tokens as a read-only memory map: training and evaluation read only the windows they
                   use, so memory stays bounded whatever the corpus's size

A folder holds one corpus x tokenizer x split selection; the tokenizer is saved beside the files
(`Tokenizer.save`), so a prepared corpus is opened without reading the corpus again. Documents are streamed in
chunks of about CHUNK_CHARS characters; at most 2 x workers chunks are in flight, so preparing holds a bounded
amount of text whatever the corpus's size. Workers are spawned processes (the caller may have started JAX, which
must not be forked); a stateful tokenizer (word:spell_unknowns, whose ids depend on what it encoded before) runs in
this process.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

FORMAT = "token-files-v1"
CHUNK_CHARS = 4 << 20


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def encode_documents(tokenizer, documents: list[str], dtype) -> tuple[np.ndarray, np.ndarray]:
    """[doc] + encode(d1) + [doc] + encode(d2) + ... in `dtype`, and each document's [tokens incl. its separator,
    UTF-8 bytes]."""
    parts, sizes = [], np.zeros((len(documents), 2), np.int64)
    sep = np.asarray([tokenizer.doc_id], dtype)
    batch = getattr(tokenizer, "encode_batch", None)  # a library's own batch encoder, where it has one
    encoded = batch(documents) if batch is not None else map(tokenizer.encode, documents)
    for i, (doc, ids) in enumerate(zip(documents, encoded)):
        ids = np.asarray(ids).astype(dtype, copy=False)
        parts += [sep, ids]
        sizes[i] = 1 + len(ids), len(doc.encode("utf-8"))
    return (np.concatenate(parts) if parts else np.zeros(0, dtype)), sizes


def chunks(items: Iterable, chars: int = CHUNK_CHARS, text=lambda item: item) -> Iterator[list]:
    """Consecutive items grouped into lists whose texts hold about `chars` characters."""
    chunk, size = [], 0
    for item in items:
        chunk.append(item)
        size += len(text(item))
        if size >= chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


_WORKER = {}


def _start_worker(tokenizer_spec: dict, folder: str, dtype_name: str) -> None:
    from research.tokenization import resolve_tokenizer

    _WORKER["tokenizer"] = resolve_tokenizer(tokenizer_spec).load(folder)
    _WORKER["dtype"] = np.dtype(dtype_name)


def _encode_chunk(documents: list[str]):
    return encode_documents(_WORKER["tokenizer"], documents, _WORKER["dtype"])


def encoded_chunks(pairs: Iterable[tuple[str, str]], tokenizer, tokenizer_spec: dict, folder: Path, dtype,
                   workers: int):  # fmt: skip
    """(chunk of (split, document) pairs, its encode_documents), in order: in `workers` spawned processes (at most
    2 x workers chunks in flight), or in this process."""
    stream = chunks(pairs, text=lambda pair: pair[1])
    first, second = next(stream, None), next(stream, None)
    stream = (c for c in itertools.chain([first, second], stream) if c is not None)
    if workers <= 1 or getattr(tokenizer, "stateful", False) or second is None:  # one chunk: no pool to start
        for chunk in stream:
            yield chunk, encode_documents(tokenizer, [doc for _, doc in chunk], dtype)
        return
    init = (tokenizer_spec, str(folder), np.dtype(dtype).name)
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker, initargs=init) as pool:
        pending = deque()
        for chunk in stream:
            pending.append((chunk, pool.apply_async(_encode_chunk, ([doc for _, doc in chunk],))))
            if len(pending) >= 2 * workers:
                chunk, result = pending.popleft()
                yield chunk, result.get()
        while pending:
            chunk, result = pending.popleft()
            yield chunk, result.get()


class SplitWriter:
    """Appends one split's documents to `<split>.bin` and their index rows (offset of the separator, UTF-8 bytes) to
    a raw `<split>.docs.tmp` as they come, so memory stays flat however many documents a split has; `close()` turns
    the rows into `<split>.docs.npy` -> its statistics."""

    def __init__(self, folder: Path, split: str, tokenizer, dtype, check: int = 0):
        self.folder, self.split, self.tokenizer, self.dtype = folder, split, tokenizer, dtype
        self.out = open(folder / f"{split}.bin", "wb")  # noqa: SIM115  (closed in close())
        self.index = open(folder / f"{split}.docs.tmp", "wb")  # noqa: SIM115  (closed in close())
        self.count, self.documents, self.bytes, self.unknown = 0, 0, 0, 0
        self.check, self.checked, self.mismatched = check, 0, 0

    def write(self, documents: list[str], tokens: np.ndarray, sizes: np.ndarray) -> None:
        starts = self.count + np.cumsum(sizes[:, 0]) - sizes[:, 0]  # each document's separator
        self.index.write(np.stack([starts, sizes[:, 1]], 1).astype(np.int64).tobytes())
        self.documents += len(sizes)
        self.bytes += int(sizes[:, 1].sum())
        tok = self.tokenizer
        if (unk := getattr(tok, "unk_id", None)) is not None:
            real = tokens[tokens != tok.doc_id]
            self.unknown += int(((real == unk) | (real >= tok.vocab_size)).sum())
        if self.checked < self.check:  # round trip of the split's first documents
            ends = np.cumsum(sizes[:, 0])
            for doc, start, end in zip(documents[: self.check - self.checked], ends - sizes[:, 0], ends):
                self.mismatched += tok.decode(tokens[start + 1 : end]) != doc
                self.checked += 1
        self.count += len(tokens)
        self.out.write(tokens.tobytes())

    def close(self) -> dict:
        self.out.close()
        self.index.close()
        raw = self.folder / f"{self.split}.docs.tmp"
        docs = np.lib.format.open_memmap(
            self.folder / f"{self.split}.docs.npy", mode="w+", dtype=np.int64, shape=(self.documents, 2)
        )
        if self.documents:
            rows = np.memmap(raw, dtype=np.int64, mode="r", shape=(self.documents, 2))
            for start in range(0, self.documents, 1 << 20):  # 16 MB at a time
                docs[start : start + (1 << 20)] = rows[start : start + (1 << 20)]
            del rows
        docs.flush()
        del docs
        raw.unlink()
        real = self.count - self.documents
        return {
            "tokens": self.count, "bytes": self.bytes, "documents": self.documents,
            "dtype": np.dtype(self.dtype).name, "oov_rate": self.unknown / real if real else 0.0,
            "roundtrip_checked": self.checked, "roundtrip_mismatch": self.mismatched / max(self.checked, 1),
        }  # fmt: skip


ROUNDTRIP_DOCUMENTS = 100
"""Documents of each split whose round trip decode(encode(d)) == d is checked while preparing."""


def write_splits(folder: Path, pairs: Iterable[tuple[str, str]], splits: Iterable[str], tokenizer,
                 tokenizer_spec: dict, *, workers: int = 1) -> dict:  # fmt: skip
    """Tokenise (split, document) pairs, in one pass, into each split's `<split>.bin` and `<split>.docs.npy`;
    each split's statistics for meta.json."""
    stateful = getattr(
        tokenizer, "stateful", False
    )  # spelled unknown words: ids past the vocabulary, unbounded
    dtype = np.uint32 if stateful else token_dtype(tokenizer.vocab_size)
    writers = {s: SplitWriter(folder, s, tokenizer, dtype, ROUNDTRIP_DOCUMENTS) for s in splits}
    for chunk, (tokens, sizes) in encoded_chunks(pairs, tokenizer, tokenizer_spec, folder, dtype, workers):
        labels = [split for split, _ in chunk]
        if len(set(labels)) == 1:
            writers[labels[0]].write([doc for _, doc in chunk], tokens, sizes)
            continue
        owner = np.repeat(np.asarray(labels), sizes[:, 0])  # the split of every token
        for split in dict.fromkeys(labels):
            mine = [i for i, label in enumerate(labels) if label == split]
            writers[split].write([chunk[i][1] for i in mine], tokens[owner == split], sizes[mine])
    return {split: writer.close() for split, writer in writers.items()}


def write_meta(folder: Path, meta: dict) -> None:
    """meta.json, last: its presence means the folder is complete."""
    (folder / "meta.json").write_text(json.dumps({"format": FORMAT, **meta}, indent=1, sort_keys=True))


def read_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((Path(folder) / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("format") == FORMAT else None


def open_tokens(folder: Path, split: str, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """(tokens: a read-only memory map, docs [D, 2]: offset and UTF-8 bytes of each document)."""
    info = meta["splits"][split]
    path = Path(folder) / f"{split}.bin"
    if info["tokens"] == 0:
        tokens = np.zeros(0, info["dtype"])
    else:
        tokens = np.memmap(path, dtype=info["dtype"], mode="r", shape=(info["tokens"],))
    return tokens, np.load(Path(folder) / f"{split}.docs.npy")


def default_workers() -> int:
    """Worker processes for preparing: the cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
