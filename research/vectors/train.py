"""Train word vectors with gensim (Word2Vec, fastText) and write them in the standard formats.

`train_vectors(corpus, out, algo=...)` reads a text corpus (a file or a folder of text; or `lee` / `wiki-sample`,
corpora that ship with gensim; `wiki-sample:0.5-1.0` = the second half of its train split), splits it into lines of words with the word tokenizer's pre-tokeniser
(research/tokenization/vocab.py; leading spaces stripped, whitespace and pure punctuation kept as words so that the
vectors cover what the word-level LM sees), trains with gensim, and writes
    OUT.txt  word2vec text      OUT.bin  word2vec binary      (word2vec)
    OUT.vec  fastText text      OUT.bin  Facebook binary       (fasttext; the .bin keeps the n-gram buckets)
Training is deterministic for a seed: one worker thread and a hash function that does not depend on
PYTHONHASHSEED (gensim's default, Python's `hash`, does).
"""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path

from research.tokenization.vocab import pretokenize_words

ALGOS = ("word2vec", "fasttext")


def stable_hash(text: str) -> int:
    """gensim's `hashfxn` (seeds each word's initial vector): CRC-32, the same in every process."""
    return zlib.crc32(text.encode("utf-8"))


def corpus_lines(corpus: str) -> list[list[str]]:
    """Lines (documents' lines) of words; `lee` = gensim's Lee news corpus, `wiki-sample` = the default corpus's
    train split, `wiki-sample:A-B` = its documents [A, B) as fractions (as data.train_docs)."""
    if corpus == "lee":
        from research.vectors.intrinsic import gensim_datapath

        text = gensim_datapath("lee_background.cor").read_text(encoding="utf-8")
    elif corpus.split(":")[0] == "wiki-sample":
        from research.data.corpora import CORPORA
        from research.data.pipeline import select_range

        span = (0.0, 1.0)
        if ":" in corpus:
            try:
                span = tuple(float(x) for x in corpus.split(":", 1)[1].split("-"))
                assert len(span) == 2 and 0 <= span[0] < span[1] <= 1
            except (ValueError, AssertionError):
                raise ValueError(
                    f"corpus: expected wiki-sample:START-END with 0 <= START < END <= 1, got {corpus!r}"
                ) from None
        text = "\n".join(select_range(CORPORA.get("wiki-sample")().load().documents("train"), span))
    else:
        path = Path(corpus)
        if not path.exists():
            raise FileNotFoundError(f"corpus: {path} does not exist (or use `lee` / `wiki-sample`)")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        text = "\n".join(p.read_text(encoding="utf-8") for p in files)
    lines = []
    for line in text.splitlines():
        words = [w.strip() for w in pretokenize_words(line)]
        words = [w for w in words if w]
        if words:
            lines.append(words)
    if not lines:
        raise ValueError(f"corpus: {corpus} has no words")
    return lines


def train_vectors(
    corpus: str, out: str | Path, *, algo: str = "word2vec", dim: int = 100, window: int = 5, min_count: int = 2,
    epochs: int = 10, sg: bool = True, seed: int = 0, bucket: int = 200_000, min_n: int = 3, max_n: int = 6,
    log=print,
) -> dict:  # fmt: skip
    """Train and write the files; returns {'files': [...], 'words': N, 'dim': d, ...} (also OUT.json)."""
    from gensim.models import FastText, Word2Vec

    if algo not in ALGOS:
        raise ValueError(f"algo: expected one of {', '.join(ALGOS)}, got {algo!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    lines = corpus_lines(corpus)
    common = dict(vector_size=dim, window=window, min_count=min_count, epochs=epochs, sg=int(sg), seed=seed,
                  workers=1, hashfxn=stable_hash)  # fmt: skip
    log(f"{algo}: {sum(map(len, lines)):,} words in {len(lines):,} lines of {corpus}")
    if algo == "word2vec":
        model = Word2Vec(sentences=lines, **common)
        files = [out.with_suffix(".txt"), out.with_suffix(".bin")]
        model.wv.save_word2vec_format(str(files[0]), binary=False)
        model.wv.save_word2vec_format(str(files[1]), binary=True)
    else:
        from gensim.models.fasttext import save_facebook_model

        model = FastText(sentences=lines, bucket=bucket, min_n=min_n, max_n=max_n, **common)
        files = [out.with_suffix(".vec"), out.with_suffix(".bin")]
        model.wv.save_word2vec_format(str(files[0]), binary=False)
        save_facebook_model(model, str(files[1]))
    info = {
        "algo": algo, "corpus": corpus, "words": len(model.wv), "dim": dim, "window": window,
        "min_count": min_count, "epochs": epochs, "sg": bool(sg), "seed": seed,
        "files": [str(f) for f in files], "seconds": round(time.time() - start, 2),
    }  # fmt: skip
    if algo == "fasttext":
        info.update(bucket=bucket, min_n=min_n, max_n=max_n)
    out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    log(f"wrote {', '.join(info['files'])} ({info['words']:,} words x {dim}) in {info['seconds']} s")
    return info


# ------------------------------------------------------------------------------------------ recipes

RECIPE_PREFIX = "train:"
RECIPE_OPTIONS = {"dim": int, "window": int, "min_count": int, "epochs": int, "sg": bool, "seed": int,
                  "bucket": int, "min_n": int, "max_n": int}  # fmt: skip


def is_recipe(path: str) -> bool:
    return str(path).startswith(RECIPE_PREFIX)


def parse_recipe(recipe: str) -> dict:
    """`train:ALGO:CORPUS[,key=value...]` -> train_vectors keyword arguments, e.g.
    `train:word2vec:wiki-sample:0.5-1.0,dim=128,epochs=10`; ValueError naming the problem."""
    head, *options = recipe[len(RECIPE_PREFIX) :].split(",")
    algo, _, corpus = head.partition(":")
    if algo not in ALGOS or not corpus:
        raise ValueError(
            f"{recipe!r}: expected train:ALGO:CORPUS[,key=value...] with ALGO in {', '.join(ALGOS)}"
        )
    kwargs: dict = {"algo": algo, "corpus": corpus}
    for option in options:
        key, _, value = option.partition("=")
        if key not in RECIPE_OPTIONS or not value:
            raise ValueError(f"{recipe!r}: unknown option {option!r}; valid: {', '.join(RECIPE_OPTIONS)}")
        kind = RECIPE_OPTIONS[key]
        kwargs[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    kwargs.setdefault("dim", 100)
    return kwargs


def materialize(recipe: str, *, log=print) -> tuple[Path, dict]:
    """The binary vector file of a recipe, trained once into the cache (a file lock makes concurrent runs wait
    for the first) and reused; and its info (training settings, intrinsic scores)."""
    import fcntl
    import hashlib

    from research.runtime.cache import cache_dir

    kwargs = parse_recipe(recipe)
    folder = cache_dir() / "vectors"
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / hashlib.sha256(recipe.encode()).hexdigest()[:24]
    with open(stem.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info_path = stem.with_suffix(".json")
        if not info_path.exists():
            log(f"training vectors for {recipe} (cached in {folder})")
            corpus = kwargs.pop("corpus")
            tmp = stem.with_name(stem.name + "-tmp")
            info = train_vectors(corpus, tmp, log=log, **kwargs)
            from research.vectors.intrinsic import intrinsic_scores
            from research.vectors.read import load_vectors

            binary = tmp.with_suffix(".bin")
            vectors = load_vectors(binary)
            info["intrinsic"] = intrinsic_scores(vectors.words, vectors.matrix)
            info["recipe"] = recipe
            binary.replace(stem.with_suffix(".bin"))
            for suffix in (".txt", ".vec"):
                tmp.with_suffix(suffix).unlink(missing_ok=True)
            tmp.with_suffix(".json").unlink(missing_ok=True)
            info["files"] = [str(stem.with_suffix(".bin"))]
            info_path.write_text(json.dumps(info, indent=1) + "\n")  # last: its presence means done
        info = json.loads(info_path.read_text())
    return stem.with_suffix(".bin"), info
