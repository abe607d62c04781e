"""Writing word2vec files as gensim writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_vectors(path: str | Path, words: list[str], matrix: np.ndarray, *, binary: bool = False) -> Path:
    """Write word2vec text (`word v1 ... vdim`, shortest float32 repr, as gensim writes) or binary (word, space,
    dim little-endian float32, no newline between records, as gensim writes)."""
    path = Path(path)
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(words):
        raise ValueError(f"save_vectors: {len(words)} words but a matrix of shape {matrix.shape}")
    for w in words:
        if not w or w != w.strip() or "\n" in w or (binary and " " in w):
            raise ValueError(
                f"save_vectors: the word {w!r} cannot be written to a word2vec file (empty or blanks)"
            )
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(f"{len(words)} {matrix.shape[1]}\n".encode())
        if binary:
            little = matrix.astype("<f4")
            for w, row in zip(words, little):
                f.write(w.encode("utf-8") + b" " + row.tobytes())
        else:
            for w, row in zip(words, matrix):
                f.write((w + " " + " ".join(map(str, row)) + "\n").encode())  # str(float32): shortest repr
    tmp.replace(path)
    return path
