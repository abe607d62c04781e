"""The documented import path of the experiment-file API (`parse_knobs`, `schedule`, ...); it lives in
research/studies/experiment.py."""

from research.studies.experiment import (
    expand_sweep,
    format_knobs,
    load_experiment,
    parse_knobs,
    schedule,
    split_target,
    study_name,
)

__all__ = [
    "expand_sweep",
    "format_knobs",
    "load_experiment",
    "parse_knobs",
    "schedule",
    "split_target",
    "study_name",
]
