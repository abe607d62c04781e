"""What a trained token-embedding table learned: nearest neighbours of chosen tokens (cosine similarity) and a 2-D
PCA projection of the table, coloured by log train-split frequency.

`python scripts/inspect_embeddings.py RUN_DIR [--tokens the of 1] [--k 8] [--out FOLDER]`

The vectors are the input side of the embedding design as the model sees it: embed(id) for every id (for `table`, the
rows; for `factorized`, table @ projection; for `char_cnn`, the vector composed from the spelling). Tokens are named by the tokenizer's `pieces()`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from research.analysis.trained import load_run
from research.studies import plotting


def token_vectors(model, vocab: int) -> np.ndarray:
    """[V, d_model] input vectors of every token id (before positional information), without dropout."""
    import jax.numpy as jnp

    ids = jnp.arange(vocab, dtype=jnp.int32)[None]  # [1,V]
    return np.asarray(model.embedding.embed(ids)[0], dtype=np.float64)  # [V,d]


def nearest_neighbours(vectors: np.ndarray, index: int, k: int) -> list[tuple[int, float]]:
    """The k ids with the highest cosine similarity to `index` (itself excluded), best first."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit[index]
    sims[index] = -np.inf
    order = np.argsort(-sims, kind="stable")[:k]
    return [(int(i), float(sims[i])) for i in order]


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projection of the centred rows on the top two principal axes, and the explained-variance ratios."""
    centred = vectors - vectors.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, (s[:2] ** 2) / np.sum(s**2)


def inspect(
    run_dir: str | Path, *, tokens: list[str] | None = None, k: int = 8, out: Path | None = None
) -> dict:
    run = load_run(run_dir)
    if run.config.task.task is not None:
        raise ValueError(f"{run_dir}: a synthetic-task run has no tokenizer to inspect")
    model, data = run.model, run.objective.data
    pieces = data.tokenizer.pieces()
    vectors = token_vectors(model, len(pieces))
    counts = np.bincount(data.splits["train"].tokens, minlength=len(pieces))[: len(pieces)]  # output ids only
    lookup = {p: i for i, p in enumerate(pieces)}
    if not tokens:
        tokens = [pieces[i] for i in np.argsort(-counts, kind="stable")[:6]]
    missing = [t for t in tokens if t not in lookup]
    if missing:
        raise KeyError(f"not in the vocabulary of {data.tokenizer.name}: {missing}")
    neighbours = {t: [(pieces[i], s) for i, s in nearest_neighbours(vectors, lookup[t], k)] for t in tokens}

    xy, ratio = pca_2d(vectors)
    fig, axes = plotting.figure(width=7.5, height=6)
    ax = axes[0][0]
    points = ax.scatter(xy[:, 0], xy[:, 1], c=np.log10(counts + 1), s=8, cmap="viridis")
    fig.colorbar(points, ax=ax, label="log10(train count + 1)")
    for i in np.argsort(-counts, kind="stable")[:40]:
        ax.annotate(repr(pieces[i])[1:-1], xy[i], fontsize=7, alpha=0.8)
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({ratio[1]:.0%} of variance)")
    ax.set_title(f"{Path(run_dir).name}: {data.tokenizer.name} embedding table (40 most frequent labelled)")
    path = plotting.save_figure(fig, Path(out or Path(run_dir) / "figures") / "embedding_pca.png")
    return {"figure": path, "neighbours": neighbours, "explained_variance": ratio.tolist()}


def export_table(run_dir: str | Path, out: str | Path, *, binary: bool = False) -> dict:
    """Write a trained run's input vectors (as `token_vectors`) in word2vec text or binary format. Words are the
    tokens' text (research.vectors.read.token_text: SentencePiece's ▁ and the word tokenizer's leading
    space stripped); specials and whitespace-only tokens are left out, and of two tokens with the same text the
    lower id (the more frequent one) is kept."""
    from research.vectors.align import token_text
    from research.vectors.write import save_vectors

    run = load_run(run_dir)
    if run.config.task.task is not None:
        raise ValueError(f"{run_dir}: a synthetic-task run has no tokenizer")
    pieces = run.objective.data.tokenizer.pieces()
    vectors = token_vectors(run.model, len(pieces)).astype(np.float32)
    keep, words, seen = [], [], set()
    for i, piece in enumerate(pieces):
        text = token_text(piece)
        if text is None or text in seen or (binary and " " in text):
            continue
        seen.add(text)
        keep.append(i)
        words.append(text)
    path = save_vectors(out, words, vectors[keep], binary=binary)
    return {
        "path": str(path),
        "words": len(words),
        "skipped": len(pieces) - len(words),
        "dim": vectors.shape[1],
    }
