"""Write results/<study>/ (summary.csv, table.md, figures/) from the study's run summaries."""

from __future__ import annotations

import argparse
import sys

from research.studies.report import write_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", help="experiments/<study>.py[:knobs]")
    parser.add_argument("--root", default="runs", help="parent of the study's run directories")
    parser.add_argument("--out", default="results", help="parent of the study's results folder")
    args = parser.parse_args(argv)
    try:
        dest = write_report(args.experiment, root=args.root, out=args.out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"table:  {dest / 'table.md'}")
    for fig in sorted((dest / "figures").glob("*.png")):
        print(f"figure: {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
