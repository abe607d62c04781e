"""End-to-end: a tiny run through train_and_evaluate, the run-directory contract, and resume equivalence."""

from __future__ import annotations

import json

import pytest

from research.metrics import read_jsonl
from research.train import train_and_evaluate

from .conftest import tiny_config


class Interrupt(Exception):
    pass


def test_tiny_run_writes_the_run_directory(tmp_path):
    summary = train_and_evaluate(tiny_config("learned"), tmp_path, log=lambda m: None)
    for name in ("config.json", "command.txt", "metrics.jsonl", "summary.json"):
        assert (tmp_path / name).exists(), name
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())[-1] == "6"
    m = summary["metrics"]
    for length in (16, 32):  # 2x the training length: learned clamps positions past its table
        assert 0 < m[f"test/len_{length}/bpb"] < 12 and m[f"test/len_{length}/ppl"] > 1
    assert summary["params"]["positional"] == 16 * 32
    assert {"git_sha", "versions", "device", "wall_time_s"} <= set(summary)
    steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert json.loads((tmp_path / "summary.json").read_text())["metrics"] == m


def test_resume_gives_the_same_final_metrics(tmp_path):
    config = tiny_config("alibi")
    reference = train_and_evaluate(config, tmp_path / "straight", log=lambda m: None)

    def crash_at_step_5(message):
        if message.startswith("step 5/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_and_evaluate(config, tmp_path / "killed", log=crash_at_step_5)
    assert not (tmp_path / "killed" / "summary.json").exists()  # a sweep would not take it for finished
    messages = []
    resumed = train_and_evaluate(config, tmp_path / "killed", log=messages.append)
    assert "resumed from checkpoint at step 4" in messages
    assert resumed["metrics"] == reference["metrics"]  # bitwise: same batches, same compiled steps
    steps = [r["step"] for r in read_jsonl(tmp_path / "killed" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]  # no duplicated or missing steps


def test_workdir_with_another_config_is_refused(tmp_path):
    from research.config import ConfigError

    train_and_evaluate(tiny_config("nope", steps=2), tmp_path, log=lambda m: None)
    with pytest.raises(ConfigError, match="different config"):
        train_and_evaluate(tiny_config("rope", steps=2), tmp_path, log=lambda m: None)


def test_eval_positional_swaps_a_parameter_free_change(tmp_path):
    """eval.positional evaluates the trained parameters under another parameter-free scheme variant."""
    from research.config import ConfigError, replace_path

    config = tiny_config("rope", steps=2)
    plain = train_and_evaluate(config, tmp_path / "plain", log=lambda m: None)
    swapped_config = replace_path(config, "eval.positional", "rope:interleaved=true")
    swapped = train_and_evaluate(swapped_config, tmp_path / "swapped", log=lambda m: None)
    key = "test/len_16/loss"
    assert plain["metrics"][key] != swapped["metrics"][key]  # same weights, other rotation convention
    with pytest.raises(ConfigError, match="eval.positional"):
        train_and_evaluate(replace_path(config, "eval.positional", "learned"), tmp_path / "bad", log=print)
    assert not (tmp_path / "bad" / "checkpoints").exists() or not any(
        (tmp_path / "bad" / "checkpoints").iterdir()
    )
