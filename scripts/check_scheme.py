"""Check a positional scheme against the project's contract, wherever the scheme lives.

    python scripts/check_scheme.py my_pkg.gauss:GaussConfig[@init_sigma=4] [more schemes...]
    python scripts/check_scheme.py alibi            (a registered name works too)

Prints one line per contract (ok, or failed with the reason) and exits non-zero when any contract fails. The
contracts: research/analysis/contract.py (the same checks `make test` runs on every registered scheme). The
scheme's package must be importable (on PYTHONPATH, or installed).
"""

from __future__ import annotations

import argparse
import sys

from research.config import ConfigError
from research.registry import RegistryError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument(
        "schemes", nargs="+", help="registered names or import paths pkg.mod:Config[@k=v,...]"
    )
    args = parser.parse_args(argv)
    from research.analysis.contract import results, subject

    failures = 0
    for scheme in args.schemes:
        try:
            s = subject(scheme)
        except (ConfigError, RegistryError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for name, reason in results(s):
            print(f"{s.label}: {name}: " + ("ok" if reason is None else f"FAILED: {reason}"), flush=True)
            failures += reason is not None
    print(f"{failures} contract(s) failed" if failures else "every contract met")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
