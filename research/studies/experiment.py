"""Experiment files and their knobs (big_vision style).

An experiment is a Python file in `experiments/` defining
    get_config(arg: str) -> Config     arg = comma-separated knobs, e.g. "demo,positional=alibi,seed=1"
    sweep(add, arg: str)               calls add(knob=value, ...) once per run
    metrics() -> list[str]             summary metrics the report tabulates
It is named on the command line as `experiments/<study>.py[:knobs]`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from research.config import ConfigError, parse_scalar


def split_target(target: str) -> tuple[Path, str]:
    """'experiments/x.py:demo,seed=1' -> (Path('experiments/x.py'), 'demo,seed=1')."""
    path, _, arg = target.partition(".py")
    path = Path(path + ".py")
    arg = arg.removeprefix(":")
    if not path.exists():
        raise ConfigError(f"experiment file not found: {path}")
    return path, arg


def load_experiment(path: str | Path) -> ModuleType:
    path = Path(path).resolve()
    name = f"experiment_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    for required in ("get_config",):
        if not hasattr(module, required):
            raise ConfigError(f"{path}: an experiment file must define {required}()")
    return module


def parse_knobs(arg: str, **defaults: Any):
    """Parse 'demo,positional=alibi,seed=1' against typed defaults.

    Flags (a bare word) must be booleans in `defaults`; unknown knobs fail with the list of valid ones.
    Returns a frozen namespace whose attributes are the knobs.
    """
    values = dict(defaults)
    for item in filter(None, (s.strip() for s in (arg or "").split(","))):
        key, eq, raw = item.partition("=")
        if key not in defaults:
            raise ConfigError(f"unknown experiment knob {key!r}; valid knobs: {', '.join(sorted(defaults))}")
        if not eq:
            if not isinstance(defaults[key], bool):
                raise ConfigError(f"knob {key!r} needs a value ({key}=...)")
            values[key] = True
            continue
        value = parse_scalar(raw)
        if isinstance(defaults[key], str) and not isinstance(value, str):
            value = raw
        if isinstance(defaults[key], float) and isinstance(value, int):
            value = float(value)
        if defaults[key] is not None and not isinstance(value, type(defaults[key])):
            raise ConfigError(f"knob {key!r}: expected {type(defaults[key]).__name__}, got {raw!r}")
        values[key] = value
    cls = dataclasses.make_dataclass("Knobs", list(values), frozen=True)
    return cls(**values)


def format_knobs(knobs: dict) -> str:
    """Deterministic, readable run name: sorted 'k=v' pairs joined by commas."""
    return ",".join(f"{k}={v}" for k, v in sorted(knobs.items()))


def expand_sweep(module: ModuleType, arg: str) -> list[dict]:
    """The runs of an experiment: one knob dict per `add(...)` call, in call order."""
    runs: list[dict] = []
    if not hasattr(module, "sweep"):
        raise ConfigError(f"{module.__file__}: no sweep(add, arg) defined")
    module.sweep(lambda **knobs: runs.append(knobs), arg)
    names = [format_knobs(r) for r in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"sweep adds the same run more than once: {duplicates}")
    return runs


def join_arg(base: str, knobs: dict) -> str:
    return ",".join(filter(None, [base, format_knobs(knobs)]))


def study_name(path: Path, arg: str) -> str:
    """Directory name for a study: the file stem, plus the flag knobs (e.g. 'pe_extrapolation_demo')."""
    flags = [s for s in (arg or "").split(",") if s and "=" not in s]
    return "_".join([path.stem, *flags])


def schedule(steps: int, learning_rate: float, *, evals: int = 2, **options):
    """The TrainConfig most studies use: warm-up over a tenth of the steps, a log line every 50 steps (or a
    quarter of the run), validation and a checkpoint `evals` times per run; other fields via `options`."""
    from research.config import TrainConfig

    return TrainConfig(
        steps=steps,
        learning_rate=learning_rate,
        warmup_steps=max(1, steps // 10),
        log_every=max(1, min(50, steps // 4)),
        eval_every=max(1, steps // evals),
        checkpoint_every=max(1, steps // evals),
        **options,
    )
