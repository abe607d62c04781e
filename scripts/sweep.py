"""Run an experiment's sweep: `python scripts/sweep.py experiments/<study>.py[:knobs] [--jobs N]`, or on a SLURM
cluster: `... --launcher slurm --partition P --time MIN --gpus-per-run G` (submitit; research/studies/cluster.py).

Finished runs (with summary.json) are skipped (`--reuse results/<study>/runs` also adopts saved runs whose config
is identical); unfinished ones resume from their last checkpoint. A failed run is
reported at the end with the tail of its log and makes the exit status non-zero.
"""

from __future__ import annotations

import argparse
import sys

from research.config import ConfigError
from research.runtime.hostmem import reexec_with_huge_pages
from research.studies.sweep import Stopped, plan, run_sweep


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        epilog="Other arguments are config overrides for every run (--train.steps 50), checked before any run starts.",
    )  # fmt: skip
    parser.add_argument("experiment", help="experiments/<study>.py[:knobs]")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, as local processes (default 1)")
    parser.add_argument(
        "--root", default="runs", help="parent of the study's run directories (default runs/)"
    )
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="FOLDER",
        help="adopt saved run summaries (results/<study>/runs/) whose config is identical to a planned run's, "
        "e.g. the seed-0 runs of :small in the full study (repeatable)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="run only the runs with these knob values (repeatable; values of one knob are alternatives, knobs "
        "combine: --only seed=1 --only task=bucket_sort), plus the runs they start from",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate every run's config and list the runs and their state"
    )
    parser.add_argument(
        "--launcher",
        choices=["local", "slurm", "submitit-local"],
        default="local",
        help="local processes (default), SLURM jobs through submitit, or submitit's local executor",
    )
    parser.add_argument("--partition", default=None, help="slurm: partition")
    parser.add_argument("--time", type=int, default=60, help="slurm: time limit per run, minutes")
    parser.add_argument("--gpus-per-run", type=int, default=0, help="slurm: GPUs per run")
    parser.add_argument("--cpus-per-run", type=int, default=None, help="slurm: CPUs per run")
    args, extra = parser.parse_known_args(argv)
    try:
        if args.dry_run:
            study, runs = plan(args.experiment, args.root, extra, args.only)
            for run in runs:
                state = (
                    "done"
                    if run.finished
                    else f"running elsewhere (pid {run.elsewhere})"
                    if run.elsewhere
                    else "todo"
                )
                print(f"{state}  {run.workdir}")
            return 0
        if args.launcher != "local":
            from research.studies.cluster import submit_sweep

            failed = submit_sweep(
                args.experiment,
                launcher=args.launcher,
                root=args.root,
                extra_args=extra,
                out=lambda s: print(s, flush=True),
                partition=args.partition,
                time_min=args.time,
                gpus_per_run=args.gpus_per_run,
                cpus_per_run=args.cpus_per_run,
                only=args.only,
            )
            return 1 if failed else 0
        failed = run_sweep(
            args.experiment,
            jobs=args.jobs,
            root=args.root,
            extra_args=extra,
            out=lambda s: print(s, flush=True),
            reuse=args.reuse,
            only=args.only,
        )
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Stopped as e:
        print(
            f"stopped by {e}: the runs it started were stopped; rerun the same command to resume them",
            flush=True,
        )
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    reexec_with_huge_pages()  # before any work: glibc reads the tunable at start (research/runtime/hostmem.py)
    sys.exit(main())
