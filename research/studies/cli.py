"""Command line of one run: `python scripts/train.py experiments/<study>.py[:knobs] --workdir DIR [--field value ...]`,
or `python scripts/train.py --config RUN_DIR/config.json --workdir DIR` to rerun a saved config.

Every leaf field of `Config` is a typed dotted option (`--train.steps 100`, `--model.positional alibi`,
`--model.positional rope:base=500`); `--help` lists them with their types, defaults and descriptions.
"""

from __future__ import annotations

import argparse
import importlib
import json
import types
import typing
from pathlib import Path

from research.config import Config, ConfigError, from_dict, leaf_fields, parse_scalar, replace_path
from research.specs import is_spec_type
from research.studies.experiment import load_experiment, split_target


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


def base_config(args) -> Config:
    """The config a command line starts from: its experiment's get_config, or a saved config.json (--config);
    ConfigError when both or neither are given, or the file does not read."""
    if (args.experiment is None) == (args.config is None):
        raise ConfigError(
            "give an experiment (experiments/<study>.py[:knobs]) or --config RUN_DIR/config.json"
        )
    if args.experiment is not None:
        path, arg = split_target(args.experiment)
        return load_experiment(path).get_config(arg)
    path = Path(args.config)
    path = path / "config.json" if path.is_dir() else path
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--config: cannot read {path} ({e})") from None
    return from_dict(Config, saved)


def build_parser(description: str) -> argparse.ArgumentParser:
    """The command line of one run (scripts/train.py): the experiment, --workdir, the processes, every override."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=HelpFormatter,
        epilog=EPILOG,
        allow_abbrev=False,
    )
    parser.add_argument(
        "experiment", nargs="?",
        help="experiments/<study>.py[:knobs], e.g. experiments/pe_extrapolation.py:demo (or --config)",
    )  # fmt: skip
    parser.add_argument(
        "--config", metavar="CONFIG_JSON", default=None,
        help="rerun a saved config instead of an experiment: a run directory's config.json (or the directory); "
        "overrides still apply",
    )  # fmt: skip
    parser.add_argument("--workdir", required=True, help="run directory (resumes if it holds a checkpoint)")
    parser.add_argument(
        "--reevaluate", action="store_true",
        help="a finished run: evaluate its final parameters again and rewrite its summary (the training's wall time "
        "is kept); without it a finished run is left as it is",
    )  # fmt: skip
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (also RESEARCH_DEBUG=1)"
    )
    hosts = parser.add_argument_group(
        "several processes (jax.distributed; also read from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
        "JAX_PROCESS_ID, or detected on SLURM / TPU pods)"
    )
    hosts.add_argument("--coordinator", default=None, help="host:port of process 0")
    hosts.add_argument("--num-processes", type=int, default=None)
    hosts.add_argument("--process-id", type=int, default=None)
    add_overrides(parser)
    return parser


EPILOG = (
    "SPEC values: a name ('alibi'), name:key=value,... ('rope:base=500'), an import path with options "
    "('my_pkg.mod:Config@k=v'), or a JSON object. Lists: comma-separated (64,128,256) or JSON ([64, 128]). "
    "true|false flags may be given bare (--model.scan_layers)."
)


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """Every leaf field of Config as a --dotted.option, with what to write and its default in --help."""
    group = parser.add_argument_group("config overrides (applied after get_config)")
    defaults = Config()
    for path, hint, doc in leaf_fields(Config):
        default = defaults
        for part in path.split("."):
            default = getattr(default, part)
        flag = {"nargs": "?", "const": "true"} if hint is bool else {}
        action = group.add_argument(
            f"--{path}", dest=f"override:{path}", metavar=_type_name(hint), default=None,
            help=f"{doc} (default in Config: {default})", **flag,
        )  # fmt: skip
        action.registry = SPEC_REGISTRIES.get(path)


SPEC_REGISTRIES = {
    "data.corpus": "research.data.corpora:CORPORA",
    "data.tokenizer": "research.tokenization:TOKENIZERS",
    "model.positional": "research.positional:POSITIONAL",
    "model.positions": "research.positional.positions:POSITIONS",
    "model.embedding": "research.embedding:EMBEDDINGS",
    "eval.positional": "research.positional:POSITIONAL",
    "task.task": "research.data.tasks:TASKS",
}
"""The registry behind each SPEC field, whose names --help lists (imported only when help is shown)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help with the registered names of every SPEC field, read from its registry when help is printed."""

    def _expand_help(self, action) -> str:
        text = super()._expand_help(action)
        if getattr(action, "registry", None):
            module, name = action.registry.split(":")
            names = getattr(importlib.import_module(module), name).names()
            text += f" Registered: {', '.join(names)}."
        return text


def parse_overrides(argv: list[str]) -> argparse.Namespace:
    """Config overrides only (a sweep's extra arguments); an unknown or abbreviated option is a ConfigError that
    names the closest valid one."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_overrides(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r}" + _did_you_mean(unknown[0]))
    return args


def _did_you_mean(option: str) -> str:
    import difflib

    options = [f"--{path}" for path, _, _ in leaf_fields(Config)]
    close = difflib.get_close_matches(option.split("=")[0], options, n=1)
    return f"; did you mean {close[0]}?" if close else "; `python scripts/train.py --help` lists every option"


def apply_overrides(config: Config, args: argparse.Namespace) -> Config:
    hints = {p: h for p, h, _ in leaf_fields(Config)}
    for key, raw in vars(args).items():
        if not key.startswith("override:") or raw is None:
            continue
        path = key.removeprefix("override:")
        try:
            config = replace_path(config, path, parse_value(raw, hints[path]))
        except ConfigError as e:
            raise ConfigError(f"--{path}: {str(e).removeprefix(path + ': ')}") from None
    return config


def parse_value(raw: str, hint):
    """A command-line value for a field of type `hint`: strings and specs as written; lists as JSON or
    comma-separated; the rest as JSON literals (true, none, 3, 1e-3)."""
    if hint is str or is_spec_type(hint):
        return raw
    if _is_list(hint) and not raw.strip().startswith("["):
        if raw.strip().lower() in ("none", "null"):
            return None
        return [parse_scalar(item.strip()) for item in raw.split(",") if item.strip()]
    return parse_scalar(raw)


def _is_list(hint) -> bool:
    return tuple in (typing.get_origin(hint), *(typing.get_origin(a) for a in typing.get_args(hint)))
