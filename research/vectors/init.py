"""Pretrained vectors as the initial rows of a model's embedding table (`model.pretrained`).

`pretrained_rows(p, pieces=..., counts=..., init_std=..., seed=...)` reads the file (or trains a recipe's vectors
once, research/vectors/train.py), aligns them to the tokenizer's pieces (research/vectors/read.py: `align`) and
returns the [V, dim] rows with a coverage report: exact / case-folded / n-gram / unmatched counts, the share of
training tokens covered and the most frequent unmatched tokens.
"""

from __future__ import annotations

import time

import numpy as np

from research.vectors.align import align
from research.vectors.read import load_vectors
from research.vectors.train import is_recipe, materialize


def pretrained_rows(p, *, pieces: list[str], counts: np.ndarray, init_std: float, seed: int, log=print):
    """(rows float32 [len(pieces), dim], report) for the PretrainedConfig `p`; `counts` are the train split's
    occurrences of each id, `init_std` the table's random-initialisation scale (for p.rescale)."""
    start = time.time()
    path, info = materialize(p.path, log=log) if is_recipe(p.path) else (p.path, None)
    vectors = load_vectors(path, p.format, p.limit, encoding=p.encoding, errors=p.errors)
    matrix, report = align(
        vectors,
        pieces,
        unmatched=p.unmatched,
        casefold=p.casefold,
        subwords=p.subwords,
        counts=counts,
        seed=seed,
    )
    if p.rescale:
        matrix = matrix * np.float32(init_std / max(float(matrix.std()), 1e-12))
        report["rescaled_to_std"] = init_std
    if info is not None:
        report["vectors"] = info
    report.update(path=str(p.path), format=vectors.format, words=len(vectors), dim=vectors.dim, mode=p.mode,
                  load_s=round(time.time() - start, 3))  # fmt: skip
    log(
        f"pretrained {vectors.format} vectors {p.path} ({len(vectors):,} x {vectors.dim}): {report['exact']} exact, "
        f"{report['casefold']} case-folded, {report['subword']} from n-grams, {report['unmatched']} unmatched "
        f"({p.unmatched}), {report['special']} special; {report.get('token_coverage', 0):.1%} of train tokens "
        f"covered; most frequent unmatched: {', '.join(repr(w) for w, _ in report['top_unmatched'][:8])}"
    )
    return matrix, report
