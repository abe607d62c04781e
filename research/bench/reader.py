"""The pretrained-vector reader against gensim's on the same synthetic files."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from research.bench.measure import times


def reader_benchmark(words: int = 200_000, dim: int = 300, repeats: int = 3, log=print) -> list[dict]:
    """research.vectors.read.load_vectors against gensim's KeyedVectors.load_word2vec_format on a
    synthetic words x dim file (values %.6f, cached under the cache folder), text and binary; medians."""
    from gensim.models import KeyedVectors

    from research.runtime.cache import cache_dir
    from research.vectors.read import load_vectors

    folder = cache_dir() / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    text, binary = folder / f"synthetic_{words}x{dim}.txt", folder / f"synthetic_{words}x{dim}.bin"
    if not (text.exists() and binary.exists()):
        log(f"writing synthetic {words} x {dim} vector files to {folder} (once)")
        matrix = np.random.default_rng(0).standard_normal((words, dim)).astype(np.float32)
        with open(str(text) + ".tmp", "w") as f:
            f.write(f"{words} {dim}\n")
            for start in range(0, words, 10_000):
                block = matrix[start : start + 10_000].tolist()
                f.writelines(
                    f"w{start + i} " + " ".join(f"{x:.6f}" for x in row) + "\n" for i, row in enumerate(block)
                )
        with open(str(binary) + ".tmp", "wb") as f:
            f.write(f"{words} {dim}\n".encode())
            for i, row in enumerate(matrix):
                f.write(f"w{i} ".encode() + row.astype("<f4").tobytes() + b"\n")
        Path(str(text) + ".tmp").replace(text)
        Path(str(binary) + ".tmp").replace(binary)
    rows = []
    for kind, path in (("text", text), ("binary", binary)):
        seconds = {"ours": [], "gensim": []}
        for _ in range(repeats):  # alternately, so that both see the same machine state
            seconds["ours"] += times(lambda p=path: load_vectors(p), 1)
            seconds["gensim"] += times(
                lambda p=path, b=kind == "binary": KeyedVectors.load_word2vec_format(p, binary=b), 1
            )
        ours, theirs = (statistics.median(seconds[who]) for who in ("ours", "gensim"))
        rows.append({
            "name": f"reader_word2vec_{kind}_{words}x{dim}", "ours_s": ours, "gensim_s": theirs,
            "speedup_vs_gensim": theirs / ours,
        })  # fmt: skip
        log(
            f"reader word2vec {kind} {words} x {dim}: ours {ours:.2f} s, gensim {theirs:.2f} s -> {theirs / ours:.2f}x"
        )
    return rows
