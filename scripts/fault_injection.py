"""Hit a training run with faults at random moments, resume it each time, and compare it with an uninterrupted run.

`python scripts/fault_injection.py experiments/pe_extrapolation.py:runlocal --faults 20 [--kinds kill truncate writer
    sweep] [--workdir /tmp/faults] --train.steps 60 --train.checkpoint_every 1 --train.log_every 1`
(other arguments go to scripts/train.py). The faults (research/training/faults.py): kill (SIGKILL), truncate (SIGKILL,
then a truncated data file in the latest checkpoint), writer (a second process on the same run directory), sweep
(SIGKILL to the process that launched the run). Exit status 0 when the final parameters and optimizer state are
bitwise equal to the uninterrupted run's and metrics.jsonl has every step once.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
from pathlib import Path

from research.training.faults import KINDS, compare_runs, inject, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("target", help="experiments/<study>.py[:knobs] of one run")
    parser.add_argument("--faults", "--kills", dest="faults", type=int, default=20)
    parser.add_argument(
        "--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="fault kinds drawn at random"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/fault_injection")
    args, extra = parser.parse_known_args(argv)
    root = Path(args.workdir)
    shutil.rmtree(root, ignore_errors=True)
    print(f"reference run -> {root / 'reference'}", flush=True)
    run(args.target, root / "reference", extra=extra)
    done = inject(
        args.target, root / "faulted", faults=args.faults, kinds=args.kinds, extra=extra, seed=args.seed
    )
    counts = collections.Counter(kind for kind, _ in done)
    print(f"{len(done)} faults ({', '.join(f'{k} {n}' for k, n in sorted(counts.items()))}), after steps "
          f"{[step for _, step in done]}", flush=True)  # fmt: skip
    result = compare_runs(root / "reference", root / "faulted")
    print(f"final state bitwise equal: {result['bitwise_equal']}; metrics steps complete, no duplicates: "
          f"{result['steps_ok']}")  # fmt: skip
    return 0 if result["bitwise_equal"] and result["steps_ok"] and len(done) == args.faults else 1


if __name__ == "__main__":
    sys.exit(main())
