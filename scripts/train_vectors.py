"""Train word vectors with gensim and write the standard formats (research/vectors/train.py).

    python scripts/train_vectors.py --algo word2vec lee runs/vectors/lee_w2v      # -> .txt, .bin, .json
    python scripts/train_vectors.py --algo fasttext CORPUS.txt runs/vectors/ft     # -> .vec, .bin, .json
    python scripts/train_vectors.py --algo word2vec lee /tmp/v --eval              # + analogy / similarity scores

CORPUS: a text file, a folder of text files, `lee` (gensim's Lee news corpus) or `wiki-sample` (the default LM
corpus's train split). OUT: the output path without suffix.
"""

import argparse
import json
import sys

from research.runtime.hostmem import reexec_with_huge_pages
from research.vectors.train import ALGOS, train_vectors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpus")
    parser.add_argument("out")
    parser.add_argument("--algo", choices=ALGOS, default="word2vec")
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--min-count", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--cbow", action="store_true", help="CBOW instead of skip-gram")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bucket", type=int, default=200_000, help="fastText n-gram buckets")
    parser.add_argument("--min-n", type=int, default=3)
    parser.add_argument("--max-n", type=int, default=6)
    parser.add_argument("--eval", action="store_true", help="print analogy and word-similarity scores")
    args = parser.parse_args(argv)
    try:
        info = train_vectors(
            args.corpus, args.out, algo=args.algo, dim=args.dim, window=args.window, min_count=args.min_count,
            epochs=args.epochs, sg=not args.cbow, seed=args.seed, bucket=args.bucket, min_n=args.min_n,
            max_n=args.max_n,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.eval:
        from research.vectors.intrinsic import intrinsic_scores
        from research.vectors.read import load_vectors

        vectors = load_vectors(info["files"][1])
        print(json.dumps(intrinsic_scores(vectors.words, vectors.matrix), indent=1))
    return 0


if __name__ == "__main__":
    reexec_with_huge_pages()  # before any work: glibc reads the tunable at start (research/runtime/hostmem.py)
    sys.exit(main())
