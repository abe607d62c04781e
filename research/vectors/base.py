"""What every vector reader shares: the `Vectors` it returns, its error, the `count dim` header, word decoding and
the collector that fills a preallocated matrix chunk by chunk."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np


class VectorFileError(ValueError):
    """A malformed or unsupported vector file; the message names the file and the line or byte offset."""


@dataclasses.dataclass
class Vectors:
    words: list[str]
    """One string per row, in file order (duplicates removed: the first occurrence wins)."""
    matrix: np.ndarray
    """float32 [N, dim]; for fastText `.bin`, the composed vectors (what fastText prints to `.vec`)."""
    path: str = ""
    format: str = ""
    subwords: object | None = None
    """fastText `.bin` only: what `vector` composes unseen words from."""

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def vector(self, word: str) -> np.ndarray:
        """The vector of `word`; fastText `.bin`: composed from character n-grams when unseen. KeyError otherwise."""
        i = self.index.get(word)
        if i is not None:
            return self.matrix[i]
        if self.subwords is not None:
            return self.subwords.compose(word)
        raise KeyError(
            f"{word!r} is not in {self.path or 'these vectors'} ({len(self)} words, no subword information)"
        )


def parse_header(data) -> tuple[int, int, int] | None:
    """(count, dim, offset after the header line) if the file starts with `count dim` (integers, either sign:
    `check_header` judges them), else None."""
    end = data.find(b"\n", 0, 256)
    line = bytes(data[: end if end >= 0 else min(len(data), 256)])
    if line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]
    fields = line.split()
    if len(fields) == 2 and all(f.lstrip(b"-").isdigit() for f in fields):
        return int(fields[0]), int(fields[1]), (end + 1 if end >= 0 else len(data))
    return None


def check_header(path: Path, count: int, dim: int) -> None:
    """A `count dim` header's numbers must be positive (a reader allocates no more rows than the file's size can
    hold: `rows_that_fit`, so a header that declares more is reported as the file ending early, never allocated)."""
    if count < 1 or dim < 1:
        raise VectorFileError(
            f"{path}:1: the header declares {count} vectors of dimension {dim}; both must be > 0"
        )


def rows_that_fit(size: int, dim: int, *, binary: bool) -> int:
    """The most rows `size` bytes can hold: a word, a space and dim float32 (binary), or a word and dim numbers,
    each at least one character and a separator (text)."""
    return size // (2 + 4 * dim) if binary else size // (2 * dim + 1)


def is_float(token: bytes) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def decode_word(path: Path, word: bytes, encoding: str, errors: str, where: str) -> str:
    try:
        return word.decode(encoding, errors)
    except UnicodeDecodeError as e:
        raise VectorFileError(
            f"{path}: {where}: word {word!r} is not valid {encoding} ({e.reason} at byte {e.start}); pass "
            "errors='replace' (or 'ignore'), or the file's encoding, e.g. encoding='latin-1'"
        ) from None


class Rows:
    """Collects rows into a preallocated float32 matrix, dropping duplicate words (the first wins)."""

    def __init__(self, path: Path, capacity: int, dim: int):
        self.path, self.dim = path, dim
        self.matrix = np.empty((capacity, dim), np.float32)
        self.words: list[str] = []
        self.seen: dict[str, int] = {}
        self.duplicates = 0
        self.nonfinite = 0

    def add_chunk(self, words: list[str], values: np.ndarray) -> None:
        start = len(self.words)
        # No duplicate within the chunk or with earlier chunks (the common case): no per-word Python loop.
        if len(set(words)) == len(words) and self.seen.keys().isdisjoint(words):
            self.seen.update(zip(words, range(start, start + len(words))))
            self.words.extend(words)
            self.matrix[start : len(self.words)] = values
            self.nonfinite += int((~np.isfinite(values).all(axis=1)).sum())
            return
        keep = []
        for k, w in enumerate(words):
            if w in self.seen:
                self.duplicates += 1
                continue
            self.seen[w] = len(self.words)
            self.words.append(w)
            keep.append(k)
        rows = values if len(keep) == len(words) else values[keep]
        start = len(self.words) - len(keep)
        self.matrix[start : len(self.words)] = rows
        self.nonfinite += int((~np.isfinite(rows).all(axis=1)).sum())

    def finish(self, fmt: str) -> Vectors:
        n = len(self.words)
        if n < self.matrix.shape[0]:
            self.matrix.resize((n, self.dim), refcheck=False)
        if self.duplicates:
            warnings.warn(
                f"{self.path}: {self.duplicates} duplicate word(s); kept the first occurrence of each",
                stacklevel=3,
            )
        if self.nonfinite:
            warnings.warn(f"{self.path}: {self.nonfinite} vector(s) contain nan or inf", stacklevel=3)
        return Vectors(self.words, self.matrix, path=str(self.path), format=fmt)
