"""Intrinsic evaluation of word vectors: analogies (3CosAdd) and word similarity (Spearman).

Both follow gensim 4.4's `KeyedVectors.evaluate_word_analogies` / `evaluate_word_pairs` to the letter so that the
numbers are comparable with everything reported through gensim (and tested equal to it):
- vocabulary: the first `restrict_vocab` words; case-insensitive matching upper-cases words, and of several case
  variants the first in file order wins;
- analogies (Mikolov et al. 2013, Google set `questions-words.txt`, `: section` headers): for `a b c d`, the
  prediction is the nearest word by cosine to the normalised mean of the unit vectors b + c - a, among the
  top 5 excluding a, b and c; questions with an unknown word are skipped (their share is reported);
- similarity (WordSim-353, SimLex-999): Spearman (and Pearson) correlation between the human scores and the
  cosine similarities over the pairs whose words are known.
The three evaluation files ship with gensim (`gensim.test.utils.datapath`): `questions-words.txt`,
`wordsim353.tsv`, `simlex999.txt`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GENSIM_SETS = {
    "analogy": "questions-words.txt",
    "wordsim353": "wordsim353.tsv",
    "simlex999": "simlex999.txt",
}


def gensim_datapath(name: str) -> Path:
    """A file of gensim's test data, located without importing gensim."""
    import importlib.util

    spec = importlib.util.find_spec("gensim")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the evaluation sets ship with gensim: pip install gensim")
    path = Path(spec.origin).parent / "test" / "test_data" / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing from the installed gensim")
    return path


def _vocab(words: list[str], restrict_vocab: int, case_insensitive: bool) -> dict[str, int]:
    ok = words[:restrict_vocab]
    key = str.upper if case_insensitive else (lambda w: w)
    vocab: dict[str, int] = {}
    for i in range(len(ok) - 1, -1, -1):  # reversed, so the first variant in file order wins
        vocab[key(ok[i])] = i
    return vocab


def _unit(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(matrix, axis=1)
    return matrix / norms[:, None], norms


def evaluate_analogies(
    words: list[str], matrix: np.ndarray, path: str | Path | None = None, *, restrict_vocab: int = 300_000,
    case_insensitive: bool = True,
) -> dict:  # fmt: skip
    """3CosAdd accuracy over the questions with known words: {'accuracy', 'correct', 'total', 'oov_ratio',
    'sections': {name: accuracy}}."""
    path = Path(path) if path else gensim_datapath(GENSIM_SETS["analogy"])
    matrix = np.asarray(matrix, dtype=np.float32)
    vocab = _vocab(words, restrict_vocab, case_insensitive)
    n = min(restrict_vocab, len(words))
    unit, norms = _unit(matrix)
    search, search_norms = matrix[:n], norms[:n]
    sections: dict[str, list[int]] = {}
    section = None
    questions = oov = 0
    for line_no, raw in enumerate(path.read_bytes().splitlines(keepends=True)):
        line = raw.decode("utf-8")
        if line.startswith(": "):
            section = line.lstrip(": ").strip()
            sections.setdefault(section, [0, 0])
            continue
        if section is None:
            raise ValueError(f"{path}:{line_no + 1}: a question before the first ': section' header")
        fields = [w.upper() for w in line.split()] if case_insensitive else line.split()
        if len(fields) != 4:
            continue
        a, b, c, expected = fields
        questions += 1
        if a not in vocab or b not in vocab or c not in vocab or expected not in vocab:
            oov += 1
            continue
        ia, ib, ic = vocab[a], vocab[b], vocab[c]
        mean = np.zeros(matrix.shape[1], np.float32)
        for weight, i in ((1.0, ib), (1.0, ic), (-1.0, ia)):
            mean += np.float32(weight) * unit[i]
        mean = mean / 3
        mean = (mean / np.linalg.norm(mean)).astype(np.float32)
        sims = search @ mean / search_norms
        top = np.argsort(-sims, kind="stable")[: 5 + 3]
        ranked = [i for i in top if i not in (ia, ib, ic)][:5]
        predicted = None
        for i in ranked:
            predicted = words[i].upper() if case_insensitive else words[i]
            if predicted in vocab and predicted not in (a, b, c):
                break
        sections[section][0 if predicted == expected else 1] += 1
    correct = sum(s[0] for s in sections.values())
    total = correct + sum(s[1] for s in sections.values())
    return {
        "accuracy": correct / total if total else 0.0,
        "correct": correct,
        "total": total,
        "oov_ratio": oov / questions if questions else 0.0,
        "sections": {k: v[0] / (v[0] + v[1]) for k, v in sections.items() if v[0] + v[1]},
    }


def evaluate_similarity(
    words: list[str], matrix: np.ndarray, path: str | Path | None = None, *, restrict_vocab: int = 300_000,
    case_insensitive: bool = True, delimiter: str = "\t",
) -> dict:  # fmt: skip
    """Spearman and Pearson correlation of cosine similarity with human scores: {'spearman', 'pearson', 'pairs',
    'oov_ratio'}."""
    from scipy import stats

    path = Path(path) if path else gensim_datapath(GENSIM_SETS["wordsim353"])
    matrix = np.asarray(matrix, dtype=np.float32)
    vocab = _vocab(words, restrict_vocab, case_insensitive)
    gold, model = [], []
    oov = 0
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line or line.startswith("#"):
            continue
        fields = line.split(delimiter)
        if len(fields) != 3:
            continue
        a, b, score = (f.upper() for f in fields) if case_insensitive else fields
        try:
            score = float(score)
        except ValueError:
            continue
        if a not in vocab or b not in vocab:
            oov += 1
            continue
        va, vb = matrix[vocab[a]], matrix[vocab[b]]
        gold.append(score)
        model.append(float(np.dot(va / np.linalg.norm(va), vb / np.linalg.norm(vb))))
    if not gold:
        raise ValueError(f"{path}: no pair has both words in the vocabulary")
    return {
        "spearman": float(stats.spearmanr(gold, model)[0]),
        "pearson": float(stats.pearsonr(gold, model)[0]),
        "pairs": len(gold),
        "oov_ratio": oov / (len(gold) + oov),
    }


def intrinsic_scores(words: list[str], matrix: np.ndarray, *, restrict_vocab: int = 300_000) -> dict:
    """Analogy accuracy (Google set), Spearman on WordSim-353 and SimLex-999, with their OOV ratios."""
    out = {}
    analogy = evaluate_analogies(words, matrix, restrict_vocab=restrict_vocab)
    out.update(analogy_accuracy=analogy["accuracy"], analogy_questions=analogy["total"],
               analogy_oov_ratio=analogy["oov_ratio"])  # fmt: skip
    for name in ("wordsim353", "simlex999"):
        try:
            sim = evaluate_similarity(
                words, matrix, gensim_datapath(GENSIM_SETS[name]), restrict_vocab=restrict_vocab
            )
        except ValueError:  # no known pair
            sim = {"spearman": float("nan"), "pairs": 0, "oov_ratio": 1.0}
        out.update({f"{name}_spearman": sim["spearman"], f"{name}_pairs": sim["pairs"],
                    f"{name}_oov_ratio": sim["oov_ratio"]})  # fmt: skip
    return out
