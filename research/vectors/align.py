"""Pretrained vectors aligned to a tokenizer's vocabulary: one row per token id, matched by the token's text."""

from __future__ import annotations

import numpy as np

from research.vectors.base import Vectors

UNMATCHED = ("random", "zeros", "mean")
WORD_START = "\u2581"  # SentencePiece's word-start marker


def token_text(piece: str) -> str | None:
    """The word a tokenizer piece stands for: without SentencePiece's `▁` and the word tokenizer's leading space;
    None for specials (`<unk>`, `<doc>`, byte fallbacks `<0x0A>`) and whitespace-only pieces."""
    if len(piece) > 2 and piece.startswith("<") and piece.endswith(">"):
        return None
    text = piece.replace(WORD_START, " ").strip()
    return text or None


def align(
    vectors: Vectors,
    pieces: list[str],
    *,
    unmatched: str = "random",
    casefold: bool = True,
    subwords: bool = True,
    counts: np.ndarray | None = None,
    seed: int = 0,
    top: int = 20,
) -> tuple[np.ndarray, dict]:
    """Rows for a tokenizer's vocabulary: [len(pieces), dim] float32 and a coverage report.

    Each piece is matched by its text (`token_text`): exactly, then case-folded (the first such word in file
    order, i.e. the most frequent in frequency-sorted files), then (fastText `.bin`, `subwords=True`) composed from
    its character n-grams. Unmatched rows: `random` N(0, s²) with s the standard deviation of the matched
    vectors' entries, `zeros`, or `mean` (the mean matched vector). `counts` (occurrences of each id in the train
    split) orders the report's most frequent unmatched tokens and gives the share of training tokens covered."""
    if unmatched not in UNMATCHED:
        raise ValueError(f"unmatched: expected one of {', '.join(UNMATCHED)}, got {unmatched!r}")
    folded: dict[str, int] = {}
    if casefold:
        for i, w in enumerate(vectors.words):
            folded.setdefault(w.casefold(), i)
    out = np.zeros((len(pieces), vectors.dim), np.float32)
    how = np.full(len(pieces), "", dtype=object)
    for i, piece in enumerate(pieces):
        text = token_text(piece)
        if text is None:
            how[i] = "special"
            continue
        row = vectors.index.get(text)
        if row is not None:
            out[i], how[i] = vectors.matrix[row], "exact"
            continue
        row = folded.get(text.casefold()) if casefold else None
        if row is not None:
            out[i], how[i] = vectors.matrix[row], "casefold"
            continue
        if subwords and vectors.subwords is not None:
            composed = vectors.subwords.compose(text)
            if np.any(composed):
                out[i], how[i] = composed, "subword"
                continue
        how[i] = "unmatched"
    matched = np.isin(how, ("exact", "casefold", "subword"))
    fill = ~matched
    if matched.any():
        reference = out[matched]
        if unmatched == "random":
            std = float(reference.std())
            out[fill] = np.random.default_rng(seed).normal(0.0, std, (int(fill.sum()), vectors.dim))
        elif unmatched == "mean":
            out[fill] = reference.mean(axis=0)
    report = {k: int((how == k).sum()) for k in ("exact", "casefold", "subword", "unmatched", "special")}
    report.update(
        vocab=len(pieces), coverage=float(matched.mean()) if len(pieces) else 0.0, unmatched_init=unmatched
    )
    missing = np.flatnonzero(how == "unmatched")
    if counts is not None:
        counts = np.asarray(counts)
        total = counts.sum()
        report["token_coverage"] = float(counts[matched].sum() / total) if total else 0.0
        missing = missing[np.argsort(-counts[missing], kind="stable")]
        report["top_unmatched"] = [[pieces[i], int(counts[i])] for i in missing[:top]]
    else:
        report["top_unmatched"] = [[pieces[i], None] for i in missing[:top]]
    return out, report
