"""Train and evaluate one run. `python scripts/train.py --help` lists every config override."""

from __future__ import annotations

import sys

from research.config import ConfigError
from research.registry import RegistryError
from research.runtime.hostmem import reexec_with_huge_pages
from research.studies.cli import apply_overrides, build_parser
from research.studies.experiment import load_experiment, split_target


def main(argv=None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    try:
        path, arg = split_target(args.experiment)
        config = apply_overrides(load_experiment(path).get_config(arg), args)
        from research.runtime.distributed import initialize

        initialize(args.coordinator, args.num_processes, args.process_id)  # before any other JAX call
        from research.training.loop import train_and_evaluate, validate  # JAX imports after argument errors

        validate(config)
    except (ConfigError, RegistryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        train_and_evaluate(config, args.workdir, log=lambda msg: print(msg, flush=True))
    except ConfigError as e:  # found once data is read (e.g. a vocabulary too large for the corpus)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: {args.workdir}/summary.json", flush=True)
    return 0


if __name__ == "__main__":
    reexec_with_huge_pages()  # before any work: glibc reads the tunable at start (research/runtime/hostmem.py)
    sys.exit(main())
