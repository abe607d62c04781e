"""word2vec's binary format: a `count dim` header, then per record `word` + space + dim little-endian float32, with
or without a newline after each vector (word2vec.c writes one, gensim does not). A file whose records do not add up
(float64 vectors, a word containing a space) is an error naming the byte offset, never a wrong matrix."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from research.vectors.base import (
    Rows,
    VectorFileError,
    Vectors,
    check_header,
    decode_word,
    parse_header,
    rows_that_fit,
)

_CONTROL = re.compile(rb"[\x00-\x1f]")  # a control byte: no word has one


def read_word2vec_binary(path: Path, data, limit, encoding: str, errors: str) -> Vectors:
    parsed = parse_header(data)
    if parsed is None:
        raise VectorFileError(f"{path}: byte 0: expected a `count dim` header line")
    count, dim, pos = parsed
    check_header(path, count, dim)
    capacity = min(count, limit) if limit else count
    rows = Rows(path, min(capacity, rows_that_fit(len(data) - pos, dim, binary=True)), dim)
    record = 4 * dim
    size = len(data)
    chunk = max(16, min(8192, capacity // 64, (1 << 22) // record))
    words: list[str] = []
    block = np.empty((chunk, dim), np.float32)
    raw = memoryview(block).cast("B")  # the block's bytes: each record's floats are copied in as they are
    little = np.dtype("<f4") == np.dtype(np.float32)
    for i in range(capacity):
        while pos < size and data[pos] in (0x0A, 0x0D):  # word2vec.c writes "\n" after each vector
            pos += 1
        space = data.find(b" ", pos, pos + 4096)
        if space < 0 or space + 1 + record > size:
            raise VectorFileError(
                f"{path}: byte {pos}: the header declares {count} vectors but the file ends after {i}"
                + ("" if space >= 0 or pos >= size else " (or a word is longer than 4096 bytes)")
            )
        word = bytes(data[pos:space])
        if not word or _CONTROL.search(word):
            raise VectorFileError(
                f"{path}: byte {pos}: record {i + 1} has the word {word[:40]!r}: not a word2vec binary file of "
                f"{dim} float32 values per vector (float64 values? a word containing a space?)"
            )
        words.append(decode_word(path, word, encoding, errors, f"byte {pos}"))
        k = len(words) - 1
        if little:
            raw[k * record : (k + 1) * record] = data[space + 1 : space + 1 + record]
        else:
            block[k] = np.frombuffer(data, dtype="<f4", count=dim, offset=space + 1)
        pos = space + 1 + record
        if len(words) == chunk:
            rows.add_chunk(words, block)
            words = []
    if words:
        rows.add_chunk(words, block[: len(words)])
    if not limit or capacity == count:
        rest = bytes(data[pos : pos + 64]).strip(b"\r\n")
        if rest:
            raise VectorFileError(
                f"{path}: byte {pos}: {size - pos} bytes follow the {count} declared vectors: not a word2vec binary "
                f"file of {dim} float32 values per vector (float64 values? a word containing a space? a wrong "
                "count in the header?)"
            )
    return rows.finish("word2vec-binary")
