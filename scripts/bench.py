"""Benchmark the training step of every positional scheme at the reference config, and the sections around it.

Prints a table (or, with --json, one JSON object per row) and writes results/bench/{table.md,bench.json,steps.png}.
The sections and what each measures: research/bench/sections.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from research.bench.reference import REFERENCE
from research.bench.report import plot, render
from research.bench.sections import SECTIONS, Context
from research.runtime.hostmem import reexec_with_huge_pages
from research.runtime.machine import run_info
from research.training.metrics import atomic_write_json, atomic_write_text
from research.training.step import COMPUTE_DTYPES

SKIPPABLE = ("steps", "variants", "breakdown", "profile", "compile", "peer", "embedding", "reader", "data")
COMPILE_DEPTHS = (2, 4, 8, 16)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    ref = {k: getattr(args, k) for k in REFERENCE} | {"compute_dtype": args.compute_dtype}
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    if args.compute_dtype != "float32":
        args.skip = [*args.skip, "breakdown", "peer"]
        log(f"compute_dtype {args.compute_dtype}: the breakdown and the peer (float32 only) are left out")
    ctx = Context(args, ref, log)
    ctx.result.update(
        breakdown=None, profile=None, compile=None, embedding=None, reader=None, peer=None, data=None
    )
    if args.only:  # one section, merged into the saved results of the others
        ctx.result.update(previous_result(args.out))
        ctx.result.setdefault("reference", ref)
    rows = []
    for name, section in SECTIONS.items():
        if (name in args.only) if args.only else (name == "steps" or name not in args.skip):
            rows += section(ctx)
    command = " ".join(["python scripts/bench.py", *(argv or sys.argv[1:])])
    result = provenance(ctx.result, run_info() | {"command": command, "date": datetime.date.today().isoformat()},
                        args.only)  # fmt: skip
    if args.json:
        for r in rows:
            print(json.dumps(r))
    table = render(result, command)
    if not args.json:
        print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "bench.json", result)
        atomic_write_text(out / "table.md", table)
        if result["rows"]:
            plot(result, out / "steps.png")
    return 0


PROVENANCE = ("git_sha", "versions", "device", "machine", "command", "date")


def provenance(result: dict, info: dict, only: list[str]) -> dict:
    """A full run is described by this run's machine, versions and command. With --only, the saved results keep
    theirs, and each section measured now records its own under `sections` (the table names both)."""
    if not only:
        return {k: v for k, v in result.items() if k != "sections"} | info
    kept = {k: result[k] for k in PROVENANCE if k in result}
    sections = {**result.get("sections", {}), **{name: info for name in only}}
    return result | info | kept | {"sections": sections}


def previous_result(out: str) -> dict:
    """The saved bench.json of `out` (what --only leaves as it was); {} with no rows when there is none."""
    path = Path(out or ".") / "bench.json"
    if not out or not path.exists():
        return {"rows": []}
    return json.loads(path.read_text())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schemes", nargs="*", help="positional schemes (default: all registered)")
    p.add_argument(
        "--steps",
        type=int,
        default=24,
        help="timed steps per scheme after warm-up, split over the rounds (median)",
    )
    p.add_argument(
        "--rounds", type=int, default=6,
        help="every scheme is compiled first, then timed in this many interleaved rounds; the ratio to nope is the "
        "median over rounds of the ratio within a round, so drift of the machine's speed cancels",
    )  # fmt: skip
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default="results/bench", help="folder for table.md and bench.json ('' = none)")
    p.add_argument("--json", action="store_true", help="print one JSON object per measured row")
    p.add_argument(
        "--no-peer", dest="peer", action="store_false", help="skip the PyTorch x-transformers peer"
    )
    p.add_argument(
        "--skip", nargs="*", default=[], choices=SKIPPABLE,
        help="sections to leave out: steps (every scheme), variants (rope with the plain loss, with scanned "
        "layers), breakdown (rope's step split into layers, readout+loss, optimizer), profile (jax.profiler trace "
        "of rope's step: the XLA ops that take the time), compile (compile time vs depth, looped vs scanned), "
        "peer, embedding (256k x 1024 gather/scatter), reader (pretrained-vector reader vs gensim, 200k x 300 "
        "files written once to the cache), data (a generated 1 GB corpus prepared and trained on: ~20 min)",
    )  # fmt: skip
    p.add_argument(
        "--only", nargs="*", default=[], choices=[s for s in SKIPPABLE if s != "variants"],
        help="run these sections only and merge them into the saved bench.json of --out (the other sections' "
        "results are kept), e.g. --only data",
    )  # fmt: skip
    p.add_argument(
        "--data-mb", type=int, nargs="*", default=[256, 512, 1024],
        help="data: corpus sizes (MB) whose preparation's peak memory is measured; the largest is also trained on",
    )  # fmt: skip
    p.add_argument(
        "--data-slice-mb", type=int, default=64, help="data: the slice the throughput rounds prepare"
    )
    p.add_argument("--data-rounds", type=int, default=3, help="data: interleaved throughput rounds")
    p.add_argument(
        "--loss-chunk", type=int, default=0,
        help="variants: another train.loss_chunk to time (0 = the plain loss on full logits; default 1024 is fused)",
    )  # fmt: skip
    p.add_argument(
        "--depths", type=int, nargs="*", default=list(COMPILE_DEPTHS), help="compile: depths to compile"
    )
    p.add_argument(
        "--peer-rounds", type=int, default=3,
        help="peer: rounds of rope and the peer timed alternately (median ratio reported); 0 = none",
    )  # fmt: skip
    p.add_argument("--reader-words", type=int, default=200_000)
    for key, value in REFERENCE.items():
        p.add_argument(f"--{key}", type=int, default=value)
    p.add_argument(
        "--compute_dtype", choices=COMPUTE_DTYPES, default="float32",
        help="the training step's forward/backward dtype (train.compute_dtype); MFU is then against the matmul rate "
        "measured in that dtype. The peer and the breakdown section run in float32 only and are left out otherwise",
    )  # fmt: skip
    return p


if __name__ == "__main__":
    reexec_with_huge_pages()  # before any work: glibc reads the tunable at start (research/runtime/hostmem.py)
    sys.exit(main())
