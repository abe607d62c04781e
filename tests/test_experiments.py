"""The experiment files: every run of every committed sweep builds a config that validates (what `scripts/sweep.py
--dry-run` checks), evaluation-only runs depend on the run they evaluate, and bad knobs name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from research.studies.experiment import load_experiment
from research.studies.sweep import plan

EXPERIMENTS = sorted(p.name for p in Path("experiments").glob("*.py"))
TARGETS = [f"experiments/{name}" for name in EXPERIMENTS] + [
    "experiments/length_generalization.py:paper_eval,small",
    "experiments/reproductions.py:ablation=yarn",
]


@pytest.mark.parametrize("target", TARGETS)
def test_every_run_of_every_sweep_validates(target, tmp_path):
    study, runs = plan(target, tmp_path)
    assert runs and len({r.name for r in runs}) == len(runs)
    for run in runs:  # an evaluation-only run waits for the run it evaluates, in the same sweep
        if run.settings.train.steps == 0:
            assert run.after is not None and run.after in {r.workdir.absolute() for r in runs}, run.name


def test_randomized_evaluation_is_an_evaluation_only_run_of_the_randomized_run(tmp_path):
    study, runs = plan("experiments/length_generalization.py:paper_eval,small", tmp_path)
    run = next(r for r in runs if "eval_positions=randomized" in r.name)
    assert run.settings.model.positions["eval_mode"] == "randomized"
    assert run.after.name == run.name.replace("eval_positions=randomized,", "")
    module = load_experiment(Path("experiments/length_generalization.py"))
    with pytest.raises(ValueError, match="eval_positions"):
        module.get_config("positions=contiguous,eval_positions=randomized")


def test_the_reproductions_recipes_change_one_setting_each():
    module = load_experiment(Path("experiments/reproductions.py"))
    base = module.get_config("positional=t5_bias")
    scaled = module.get_config("positional=t5_bias,recipe=scaled_buckets")
    assert {**base.model.positional, "num_buckets": 16, "max_distance": 32} == scaled.model.positional
    assert base.train == scaled.train and base.data == scaled.data
    with pytest.raises(ValueError, match="recipe"):
        module.get_config("recipe=nope")
