"""word2vec text (`count dim` header, then `word v1 ... vdim` per line; fastText's .vec too) and GloVe (the same rows
without the header).

    text_layout   the header, or for GloVe the dimension and row count read off the file
    split_row     one line -> (word, numbers), with the row checks: blanks, tabs, empty fields, too few or too many
                  numbers; a word may contain spaces (the last `dim` fields are the numbers)
    Chunk         rows parsed a chunk at a time (one np.fromstring call) into the preallocated matrix; a chunk that
                  does not parse is searched for the row at fault
Lenient where the format allows: CR LF, trailing blanks, blank lines, a UTF-8 byte-order mark. Every error names
the file and the line.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from research.vectors.base import (
    Rows,
    VectorFileError,
    Vectors,
    check_header,
    decode_word,
    is_float,
    parse_header,
    rows_that_fit,
)


def text_lines(data, start: int) -> Iterator[tuple[int, int, bytes]]:
    """(line number from 1, byte offset, line without its line end) from `start`."""
    number = data[:start].count(b"\n")
    pos, size = start, len(data)
    while pos < size:
        end = data.find(b"\n", pos)
        if end < 0:
            end = size
        number += 1
        yield number, pos, bytes(data[pos:end]).rstrip(b"\r")
        pos = end + 1


def offset_after(data, number: int) -> int:
    pos = -1
    for _ in range(number):
        pos = data.find(b"\n", pos + 1)
    return pos + 1 if pos >= 0 else len(data)


def read_text(path: Path, data, *, header: bool, limit, encoding: str, errors: str) -> Vectors:
    """Rows of a word2vec text (`header`) or GloVe file, at most `limit`."""
    count, dim, start = text_layout(path, data, header)
    capacity = min(count, limit) if limit else count
    allocated = min(capacity, rows_that_fit(len(data) - start, dim, binary=False))
    chunk = Chunk(path, Rows(path, allocated, dim), dim)
    read = last_line = 0
    for number, _, line in text_lines(data, start):
        if read == capacity:
            if not limit and line.strip():
                _warn_extra_rows(path, data, number, count)
            break
        line = line.rstrip(b" ")
        if not line:
            continue
        last_line = number
        word, values = split_row(path, number, line, dim)
        chunk.add(decode_word(path, word, encoding, errors, f"line {number}"), values, number, line)
        read += 1
    chunk.flush()
    if read < capacity:
        raise VectorFileError(
            f"{path}:{last_line + 1}: the header declares {count} vectors but the file ends after {read}"
        )
    return chunk.rows.finish("word2vec-text" if header else "glove")


def text_layout(path: Path, data, header: bool) -> tuple[int, int, int]:
    """(rows, dim, byte offset of the first row): from the `count dim` header, or for GloVe from the first row and
    a count of the non-blank lines."""
    if header:
        parsed = parse_header(data)
        if parsed is None:
            raise VectorFileError(
                f"{path}:1: expected a `count dim` header (GloVe files have none: format='glove')"
            )
        count, dim, start = parsed
        check_header(path, count, dim)
        return count, dim, start
    start = 3 if bytes(data[:3]) == b"\xef\xbb\xbf" else 0
    end = data.find(b"\n", start)
    dim = len(bytes(data[start : end if end >= 0 else len(data)]).rstrip().split(b" ")) - 1
    count = sum(1 for _, _, line in text_lines(data, start) if line.strip())  # blank lines are skipped
    return count, dim, start


def split_row(path: Path, number: int, line: bytes, dim: int) -> tuple[bytes, bytes]:
    """A row without its line end and trailing blanks -> (word, its `dim` numbers as one space-separated field);
    VectorFileError naming the line for a row that is not `word v1 ... vdim`."""
    if line[:1] == b" " or line[:1] == b"\t":
        raise VectorFileError(f"{path}:{number}: the line starts with a blank (empty word)")
    if b"\t" in line:
        raise VectorFileError(f"{path}:{number}: tab in the row; fields must be separated by single spaces")
    spaces = line.count(b" ")
    if spaces < dim:
        raise VectorFileError(f"{path}:{number}: {spaces} values, expected {dim}")
    if spaces == dim:
        word, _, values = line.partition(b" ")
        if b"  " in values:
            raise VectorFileError(f"{path}:{number}: empty field (two spaces in a row)")
        return word, values
    parts = line.rsplit(b" ", dim)  # a word with spaces (GloVe 840B has some), or a row with too many numbers
    word, head = parts[0], parts[0].split(b" ")
    if b"" in parts[1:] or b"" in head:
        raise VectorFileError(f"{path}:{number}: empty field (two spaces in a row)")
    if all(is_float(h) for h in head[1:]):
        raise VectorFileError(f"{path}:{number}: {spaces} values, expected {dim}")
    return word, b" ".join(parts[1:])


class Chunk:
    """Rows gathered until `size` of them, then parsed with one np.fromstring call into `rows`."""

    def __init__(self, path: Path, rows: Rows, dim: int):
        self.path, self.rows, self.dim = path, rows, dim
        self.size = max(
            16, min(8192, rows.matrix.shape[0] // 64, (1 << 22) // (12 * dim))
        )  # <= ~4 MB of text
        self.words: list[str] = []
        self.values: list[bytes] = []
        self.lines: list[tuple[int, bytes]] = []

    def add(self, word: str, values: bytes, number: int, line: bytes) -> None:
        self.words.append(word)
        self.values.append(values)
        self.lines.append((number, line))
        if len(self.words) == self.size:
            self.flush()

    def flush(self) -> None:
        if not self.words:
            return
        text = b" ".join(self.values).decode("ascii", "replace")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                parsed = np.fromstring(text, sep=" ", dtype=np.float32)
            except (ValueError, DeprecationWarning):
                parsed = None
        if parsed is None or parsed.size != len(self.values) * self.dim:
            self._fail()
        self.rows.add_chunk(self.words, parsed.reshape(len(self.words), self.dim))
        self.words, self.values, self.lines = [], [], []

    def _fail(self):
        """Name the row of the chunk that does not parse."""
        for number, line in self.lines:
            for v in line.rsplit(b" ", self.dim)[1:]:
                if not is_float(v):
                    raise VectorFileError(f"{self.path}:{number}: {v[:40]!r} is not a number")
        raise VectorFileError(f"{self.path}: rows {self.lines[0][0]}..{self.lines[-1][0]} do not parse")


def _warn_extra_rows(path: Path, data, number: int, count: int) -> None:
    extra = 1 + sum(1 for _, _, rest in text_lines(data, offset_after(data, number)) if rest.strip())
    warnings.warn(
        f"{path}: the header declares {count} vectors but {extra} more non-empty line(s) follow "
        f"(from line {number}); read the first {count}, as gensim does",
        stacklevel=4,
    )
