"""Kill a training run with SIGKILL at random moments, resume it each time, and compare it with an uninterrupted run.

`python scripts/fault_injection.py experiments/pe_extrapolation.py:runlocal --kills 20 [--workdir /tmp/faults] \
    --train.steps 60 --train.checkpoint_every 1 --train.log_every 1`   (other arguments go to scripts/train.py)
Exit status 0 when the final parameters and optimizer state are bitwise equal and metrics.jsonl has every step once.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from research.training.faults import compare_runs, kill_and_resume, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", help="experiments/<study>.py[:knobs] of one run")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/fault_injection")
    args, extra = parser.parse_known_args(argv)
    root = Path(args.workdir)
    shutil.rmtree(root, ignore_errors=True)
    print(f"reference run -> {root / 'reference'}", flush=True)
    run(args.target, root / "reference", extra=extra)
    killed = kill_and_resume(args.target, root / "killed", kills=args.kills, extra=extra, seed=args.seed)
    print(f"killed {len(killed)} times, after steps {killed}", flush=True)
    result = compare_runs(root / "reference", root / "killed")
    print(f"final state bitwise equal: {result['bitwise_equal']}; metrics steps complete, no duplicates: "
          f"{result['steps_ok']}")  # fmt: skip
    return 0 if result["bitwise_equal"] and result["steps_ok"] and len(killed) == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
