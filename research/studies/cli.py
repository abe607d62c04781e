"""Command line of one run: `python scripts/train.py experiments/<study>.py[:knobs] --workdir DIR [--field value ...]`.

Every leaf field of `Config` is a typed dotted option (`--train.steps 100`, `--model.positional alibi`,
`--model.positional rope:base=500`); `--help` lists them with their types, defaults and descriptions.
"""

from __future__ import annotations

import argparse
import types
import typing

from research.config import Config, ConfigError, leaf_fields, parse_scalar, replace_path
from research.specs import is_spec_type


def _type_name(hint) -> str:
    """What to write for a field of type `hint`: SPEC, {choice,...}, INT, FLOAT, true|false, a JSON list, ...|none."""
    if is_spec_type(hint):
        return "SPEC" + ("|none" if type(None) in typing.get_args(hint) else "")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "{" + ",".join(map(str, args)) + "}"
    if origin in (typing.Union, types.UnionType):
        return "|".join(_type_name(a) for a in args if a is not type(None)) + "|none"
    if origin is tuple:
        inner = _type_name(args[0]) if args else "X"
        return (
            f"[{inner},...]" if len(args) != 2 or args[1] is Ellipsis else f"[{inner},{_type_name(args[1])}]"
        )
    return {bool: "true|false", int: "INT", float: "FLOAT", str: "STR"}.get(hint, str(hint))


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="SPEC values: a name ('alibi'), name:key=value,... ('rope:base=500'), or a JSON object.",
    )
    parser.add_argument(
        "experiment", help="experiments/<study>.py[:knobs], e.g. experiments/pe_extrapolation.py:demo"
    )
    parser.add_argument("--workdir", required=True, help="run directory (resumes if it holds a checkpoint)")
    hosts = parser.add_argument_group(
        "several processes (jax.distributed; also read from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
        "JAX_PROCESS_ID, or detected on SLURM / TPU pods)"
    )
    hosts.add_argument("--coordinator", default=None, help="host:port of process 0")
    hosts.add_argument("--num-processes", type=int, default=None)
    hosts.add_argument("--process-id", type=int, default=None)
    group = parser.add_argument_group("config overrides (applied after get_config)")
    defaults = Config()
    for path, hint, doc in leaf_fields(Config):
        default = defaults
        for part in path.split("."):
            default = getattr(default, part)
        group.add_argument(
            f"--{path}",
            dest=f"override:{path}",
            metavar=_type_name(hint),
            default=None,
            help=f"{doc} (default in Config: {default})",
        )
    return parser


def apply_overrides(config: Config, args: argparse.Namespace) -> Config:
    for key, raw in vars(args).items():
        if not key.startswith("override:") or raw is None:
            continue
        path = key.removeprefix("override:")
        hint = dict((p, h) for p, h, _ in leaf_fields(Config))[path]
        value = raw if (hint is str or is_spec_type(hint)) else parse_scalar(raw)
        try:
            config = replace_path(config, path, value)
        except ConfigError as e:
            raise ConfigError(f"--{path}: {e}") from None
    return config
