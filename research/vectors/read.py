"""Reading word-vector files: `load_vectors(path, format=None, limit=None)` -> `Vectors` (`.words`, `.matrix` float32
[N, dim], `.vector(word)`).

Formats (byte layouts: Mikolov et al.'s word2vec.c, Stanford GloVe, Facebook fastText; docs/embeddings.md):
- `word2vec-text`: header `count dim`, then `word v1 ... vdim` per line (also fastText `.vec`, alias `fasttext-vec`),
  and `glove`: the same rows without the header (research/vectors/text.py);
- `word2vec-binary`: the same header, then per record `word` + space + dim little-endian float32
  (research/vectors/binary.py);
- `fasttext-bin`: Facebook's binary model, with its subword buckets (research/vectors/fasttext.py).
The format is detected when not given. Parsing is strict where gensim is silently wrong: a malformed row is an error
naming the file and the line (binary files: the byte offset). Duplicate words: the first wins, with one warning
giving the count. Rows are parsed in chunks into a preallocated matrix, so peak memory stays close to the matrix.
"""

from __future__ import annotations

import bz2
import gzip
import mmap
import struct
from pathlib import Path

from research.vectors.base import VectorFileError, Vectors, check_header, is_float, parse_header
from research.vectors.binary import read_word2vec_binary
from research.vectors.fasttext import FASTTEXT_MAGIC, old_fasttext_header, read_fasttext_bin
from research.vectors.text import read_text

FORMATS = ("word2vec-text", "word2vec-binary", "glove", "fasttext-vec", "fasttext-bin")


def load_vectors(
    path: str | Path,
    format: str | None = None,
    limit: int | None = None,
    *,
    encoding: str = "utf-8",
    errors: str = "strict",
) -> Vectors:
    """Read a vector file (format detected when None); `limit` keeps the first N words. `encoding`/`errors` decode
    the words (e.g. errors='replace' for word2vec.c files whose long words were cut mid-character)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such vector file")
    if format == "fasttext-vec":
        format = "word2vec-text"
    if format is not None and format not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)} or None (detect), got {format!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit: expected a positive number of words or None, got {limit}")
    data = open_bytes(path)
    try:
        fmt = format or detect_format(path, data)
        if fmt == "fasttext-bin":
            vectors = read_fasttext_bin(path, data, limit, encoding, errors)
        elif fmt == "word2vec-binary":
            vectors = read_word2vec_binary(path, data, limit, encoding, errors)
        else:
            vectors = read_text(
                path, data, header=fmt == "word2vec-text", limit=limit, encoding=encoding, errors=errors
            )
    finally:
        if isinstance(data, mmap.mmap):
            data.close()
    vectors.format = fmt
    return vectors


def open_bytes(path: Path):
    """The file's bytes: memory-mapped, or decompressed in memory for .gz / .bz2."""
    if path.suffix in (".gz", ".bz2"):
        opener = gzip.open if path.suffix == ".gz" else bz2.open
        try:
            with opener(path, "rb") as f:
                data = f.read()
        except (
            OSError,
            EOFError,
            ValueError,
        ) as e:  # BadGzipFile is an OSError; a bad bz2 stream, OSError too
            raise VectorFileError(f"{path}: not a readable {path.suffix[1:]} file ({e})") from None
        if not data:
            raise VectorFileError(f"{path}: empty file")
        return data
    with open(path, "rb") as f:
        if path.stat().st_size == 0:
            raise VectorFileError(f"{path}: empty file")
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def detect_format(path: Path, data) -> str:
    """fastText magic -> fasttext-bin; `count dim` header -> word2vec text or binary (by whether the first record
    parses as text); a first line of a word and numbers -> glove; a plausible old fastText header -> fasttext-bin."""
    if len(data) >= 4 and struct.unpack_from("<i", data, 0)[0] == FASTTEXT_MAGIC:
        return "fasttext-bin"
    header = parse_header(data)
    if header is not None:
        # text: the first row is a line of printable bytes ending in a number; binary float bytes are almost
        # never free of control bytes over a whole record, and a line ends only where a float holds 0x0A
        _, dim, start = header
        end = data.find(b"\n", start, start + 64 * (dim + 64) + 4096)
        line = bytes(data[start : end if end >= 0 else start + 64 * (dim + 64)]).rstrip(b"\r ")
        printable = not any(b < 0x20 and b != 0x09 for b in line)
        fields = line.split()
        if printable and len(fields) >= 2 and is_float(fields[-1]):
            return "word2vec-text"
        return "word2vec-binary"
    end = data.find(b"\n", 0, 1 << 20)
    first = bytes(data[: end if end >= 0 else min(len(data), 1 << 20)]).rstrip().split(b" ")
    if len(first) >= 2 and all(is_float(f) for f in first[1:]):
        return "glove"
    if old_fasttext_header(data) is not None:
        return "fasttext-bin"
    raise VectorFileError(
        f"{path}: cannot tell the format (not word2vec text/binary with a `count dim` header, not GloVe text, not a "
        f"fastText .bin); pass format= one of {', '.join(FORMATS)}"
    )


def vector_dim(path: str | Path, format: str | None = None) -> int:
    """The vectors' dimension from the file's header or first row, without reading the rest."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such vector file")
    data = open_bytes(path)
    try:
        fmt = format or detect_format(path, data)
        if fmt == "fasttext-bin":
            offset = 8 if struct.unpack_from("<i", data, 0)[0] == FASTTEXT_MAGIC else 0
            return struct.unpack_from("<i", data, offset)[0]
        if fmt == "glove":
            end = data.find(b"\n")
            return (
                len(
                    bytes(data[: end if end >= 0 else len(data)]).lstrip(b"\xef\xbb\xbf").rstrip().split(b" ")
                )
                - 1
            )
        header = parse_header(data)
        if header is None:
            raise VectorFileError(f"{path}:1: expected a `count dim` header")
        count, dim, start = header
        check_header(path, count, dim)
        return dim
    finally:
        if isinstance(data, mmap.mmap):
            data.close()
