"""Which rotary pairs a RoPE context scaling keeps, ramps or interpolates, for a head width and training length.

    python scripts/rope_plan.py --head-dim 32 --train-len 64 --scaling yarn:factor=8
    python scripts/rope_plan.py --head-dim 128 --train-len 4096 --scaling yarn:factor=8   # Llama's setting

Per pair: wavelength in tokens, turns within the training length (under 1: the pair never saw all its phases in
training), scaled / original frequency (1: kept, 1/factor: interpolated), and the attention factor on cos and sin.
"""

from __future__ import annotations

import argparse
import sys

from research.config import ConfigError
from research.positional.rope_scaling import ROPE_SCALING, pair_plan
from research.specs import resolve_spec


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--head-dim", type=int, required=True, help="rotary dimension (the head width)")
    parser.add_argument("--train-len", type=int, required=True, help="the length the model was trained at")
    parser.add_argument("--base", type=float, default=10000.0)
    parser.add_argument(
        "--scaling",
        default=None,
        help=f"a scaling SPEC ({', '.join(ROPE_SCALING.names())}); none = plain RoPE",
    )
    args = parser.parse_args(argv)
    try:
        scaling = resolve_spec(ROPE_SCALING, args.scaling, field="scaling") if args.scaling else None
        rows = pair_plan(scaling, args.head_dim, args.base, args.train_len)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.scaling or 'plain RoPE'}, head width {args.head_dim}, trained at {args.train_len} tokens; "
          f"attention factor {rows[0]['attention_factor']:.3f} on cos and sin")  # fmt: skip
    print(f"{'pair':>4} {'wavelength':>11} {'turns in L':>10} {'scaled/orig':>11}  status")
    for r in rows:
        print(f"{r['pair']:>4} {r['wavelength']:>11.1f} {r['turns_in_training']:>10.2f} "
              f"{r['frequency_ratio']:>11.3f}  {r['status']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
