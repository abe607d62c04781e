"""Nearest neighbours and a PCA figure of a trained run's token-embedding table.

`python scripts/inspect_embeddings.py RUN_DIR [--tokens the of] [--k 8] [--out FOLDER]`
`python scripts/inspect_embeddings.py RUN_DIR --export vectors.txt [--binary]`   (word2vec format)
"""

from __future__ import annotations

import argparse
import sys

from research.analysis.embeddings import export_table, inspect


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", help="a finished run directory")
    parser.add_argument(
        "--tokens", nargs="*", default=None, help="tokens to query (default: the 6 most frequent)"
    )
    parser.add_argument("--k", type=int, default=8, help="neighbours per token")
    parser.add_argument("--out", default=None, help="figure folder (default RUN_DIR/figures)")
    parser.add_argument(
        "--export", default=None, help="write the input vectors to this word2vec file instead"
    )
    parser.add_argument(
        "--binary", action="store_true", help="with --export: word2vec binary instead of text"
    )
    args = parser.parse_args(argv)
    if args.export:
        info = export_table(args.run_dir, args.export, binary=args.binary)
        print(
            f"wrote {info['path']}: {info['words']} words x {info['dim']} ({info['skipped']} special or duplicate tokens left out)"
        )
        return 0
    try:
        result = inspect(args.run_dir, tokens=args.tokens, k=args.k, out=args.out)
    except (KeyError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for token, neighbours in result["neighbours"].items():
        print(f"{token!r:>14}: " + ", ".join(f"{p!r} {s:.2f}" for p, s in neighbours))
    print(f"figure: {result['figure']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
