"""Token files: a corpus prepared once into memory-mapped token files per split, then read by windows.

    prepare(...)   stream each split's documents, tokenise them in worker processes (in order), and append the
                   tokens to `<split>.bin` (uint16 when the vocabulary fits, else uint32); write `<split>.docs.npy`
                   ([offset of each document's separator, its UTF-8 bytes], int64) and, last, `meta.json`
    open_split()   a TokenSplit whose tokens are a read-only memory map: training and evaluation read only the
                   windows they use, so memory stays bounded whatever the corpus's size

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
    for i, doc in enumerate(documents):
        ids = np.asarray(tokenizer.encode(doc)).astype(dtype, copy=False)
        parts += [sep, ids]
        sizes[i] = 1 + len(ids), len(doc.encode("utf-8"))
    return (np.concatenate(parts) if parts else np.zeros(0, dtype)), sizes


def chunks(documents: Iterable[str], chars: int = CHUNK_CHARS) -> Iterator[list[str]]:
    """Consecutive documents grouped into lists of about `chars` characters."""
    chunk, size = [], 0
    for doc in documents:
        chunk.append(doc)
        size += len(doc)
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


def encoded_chunks(
    documents: Iterable[str], tokenizer, tokenizer_spec: dict, folder: Path, dtype, workers: int
):
    """encode_documents of each chunk, in order: in `workers` spawned processes (at most 2 x workers chunks in
    flight), or in this process."""
    stream = chunks(documents)
    first = next(stream, None)
    second = next(stream, None)
    if workers <= 1 or getattr(tokenizer, "stateful", False) or second is None:  # one chunk: no pool to start
        for chunk in itertools.chain([first, second], stream):
            if chunk is not None:
                yield encode_documents(tokenizer, chunk, dtype)
        return
    context = multiprocessing.get_context("spawn")
    init = (tokenizer_spec, str(folder), np.dtype(dtype).name)
    with context.Pool(workers, initializer=_start_worker, initargs=init) as pool:
        pending = deque()
        for chunk in itertools.chain([first, second], stream):
            pending.append(pool.apply_async(_encode_chunk, (chunk,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def write_split(folder: Path, split: str, documents: Iterable[str], tokenizer, tokenizer_spec: dict, *,
                workers: int = 1) -> dict:  # fmt: skip
    """Tokenise a split's documents into `<split>.bin` and `<split>.docs.npy`; its statistics for meta.json."""
    stateful = getattr(
        tokenizer, "stateful", False
    )  # spelled unknown words: ids past the vocabulary, unbounded
    dtype = np.uint32 if stateful else token_dtype(tokenizer.vocab_size)
    offsets, doc_bytes = [], []
    count = unknown = 0
    unk = getattr(tokenizer, "unk_id", None)
    with open(folder / f"{split}.bin", "wb") as out:
        for tokens, sizes in encoded_chunks(documents, tokenizer, tokenizer_spec, folder, dtype, workers):
            offsets.append(count + np.cumsum(sizes[:, 0]) - sizes[:, 0])  # where each document's separator is
            doc_bytes.append(sizes[:, 1])
            count += len(tokens)
            if unk is not None:
                real = tokens[tokens != tokenizer.doc_id]
                unknown += int(((real == unk) | (real >= tokenizer.vocab_size)).sum())
            out.write(tokens.tobytes())
    docs = np.zeros((0, 2), np.int64)
    if offsets:
        docs = np.stack([np.concatenate(offsets), np.concatenate(doc_bytes)], axis=1).astype(np.int64)
    np.save(folder / f"{split}.docs.npy", docs)
    real_tokens = count - len(docs)
    return {
        "tokens": count, "bytes": int(docs[:, 1].sum()), "documents": len(docs), "dtype": np.dtype(dtype).name,
        "oov_rate": unknown / real_tokens if real_tokens else 0.0,
    }  # fmt: skip


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
