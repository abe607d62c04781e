"""Export a run's trained parameters: `python scripts/export.py RUN_DIR [--out DIR] [--step N]`.

Writes model.safetensors (every array of the model, named by its path: blocks/0/attn/qkv/kernel), config.json,
export.json (step, parameter counts, vocabulary size, tokenizer) and, when the run has them, the tokenizer's files
and the pieces of a spelling embedding, into DIR (default RUN_DIR/export); research/training/export.py
`load_exported(DIR)` rebuilds the model from them. A folder that is not a run directory, a run without the
checkpoint asked for, or a checkpoint that does not fit the run's config ends in one line on stderr and a non-zero
exit status; --debug shows the full traceback.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", help="a run directory (config.json, checkpoints/)")
    parser.add_argument("--out", default=None, help="export folder (default RUN_DIR/export)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    from research.config import ConfigError  # JAX imports after argument errors
    from research.training.checkpoint import CheckpointError
    from research.training.export import ExportError, export_run

    try:
        out = export_run(args.run_dir, args.out, step=args.step, log=lambda m: None)
    except (ExportError, CheckpointError, ConfigError) as e:
        if args.debug or os.environ.get("RESEARCH_DEBUG") == "1":
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"exported: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
