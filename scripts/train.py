"""Train and evaluate one run. `python scripts/train.py --help` lists every config override.

Expected stops (a bad config, a malformed vector file, a diverged run, a run directory another process writes or
cannot be written, no readable checkpoint) end in one line on stderr and a non-zero exit status; --debug (or
RESEARCH_DEBUG=1) shows the full traceback.
"""

from __future__ import annotations

import os
import sys

from research.config import ConfigError
from research.registry import RegistryError
from research.runtime.hostmem import reexec_with_huge_pages
from research.studies.cli import apply_overrides, base_config, build_parser


def main(argv=None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    debug = args.debug or os.environ.get("RESEARCH_DEBUG") == "1"
    try:
        config = apply_overrides(base_config(args), args)
        from research.runtime.distributed import initialize

        initialize(args.coordinator, args.num_processes, args.process_id)  # before any other JAX call
        from research.training.loop import validate  # JAX imports after argument errors

        validate(config)
    except (ConfigError, RegistryError, ValueError) as e:
        return fail(e, debug, status=2)
    from research.training.checkpoint import CheckpointError
    from research.training.loop import TrainingDiverged, train_and_evaluate
    from research.training.rundir import RunLocked

    try:
        train_and_evaluate(
            config, args.workdir, log=lambda msg: print(msg, flush=True), reevaluate=args.reevaluate
        )
    except ConfigError as e:  # found once data is read (e.g. a vocabulary too large for the corpus)
        return fail(e, debug, status=2)
    except (
        TrainingDiverged,
        RunLocked,
        CheckpointError,
        ValueError,
    ) as e:  # ValueError: a malformed vector file
        return fail(e, debug)
    except OSError as e:  # a run directory that cannot be written (read-only, full, no permission)
        where = f" {e.filename}" if e.filename else ""
        return fail(e, debug, message=f"cannot write{where}: {e.strerror or e}")
    print(f"done: {args.workdir}/summary.json", flush=True)
    return 0


def fail(error: BaseException, debug: bool, status: int = 1, message: str | None = None) -> int:
    """One line on stderr and the exit status; the traceback with --debug."""
    if debug:
        raise error
    print(f"error: {message or error}", file=sys.stderr)
    return status


if __name__ == "__main__":
    reexec_with_huge_pages()  # before any work: glibc reads the tunable at start (research/runtime/hostmem.py)
    sys.exit(main())
