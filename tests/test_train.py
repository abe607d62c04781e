"""End-to-end: a tiny run through train_and_evaluate, the run-directory contract, and resume equivalence."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest

from research.training.loop import train_and_evaluate
from research.training.metrics import read_jsonl

from .conftest import check_resume_equivalence, tiny_config


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
    check_resume_equivalence(tiny_config("alibi"), tmp_path)


def test_workdir_with_another_config_is_refused(tmp_path):
    from research.config import ConfigError

    train_and_evaluate(tiny_config("nope", steps=2), tmp_path, log=lambda m: None)
    with pytest.raises(ConfigError, match="different config .*model.positional.name differ"):
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


def test_init_from_fine_tunes_and_evaluates_the_loaded_parameters(tmp_path):
    """train.init_from: steps=0 evaluates the source run's final parameters exactly; a fine-tune starts from them."""
    import dataclasses

    from research.config import ConfigError, replace_path

    base_config = tiny_config("rope", steps=4)
    base = train_and_evaluate(base_config, tmp_path / "base", log=lambda m: None)
    evaluate_only = replace_path(replace_path(base_config, "train.steps", 0), "train.warmup_steps", 0)
    evaluate_only = replace_path(evaluate_only, "train.init_from", "base")  # a sibling run directory
    messages = []
    again = train_and_evaluate(evaluate_only, tmp_path / "again", log=messages.append)
    assert again["metrics"] == base["metrics"]  # the same parameters, evaluated the same way
    assert any(m.startswith("initialised from") for m in messages)
    from research.runtime import (
        hostmem,  # a CPU run in a process started without huge pages says how to get them
    )

    assert (hostmem.missing_hint() in messages) == (hostmem.missing_hint() is not None)
    assert again["init_from"] == str((tmp_path / "base").absolute())
    # Fine-tune at twice the length with absolute evaluation lengths.
    longer = dataclasses.replace(
        base_config,
        data=dataclasses.replace(base_config.data, seq_len=32, batch_size=2),
        train=dataclasses.replace(base_config.train, steps=2, warmup_steps=1, init_from="base"),
        eval=dataclasses.replace(base_config.eval, lengths=(16, 32)),
    )
    tuned = train_and_evaluate(longer, tmp_path / "tuned", log=lambda m: None)
    assert sorted(k for k in tuned["metrics"] if k.endswith("/bpb")) == ["test/len_16/bpb", "test/len_32/bpb"]
    assert tuned["metrics"]["test/len_16/bpb"] != base["metrics"]["test/len_16/bpb"]  # it trained
    # Errors name the field: an unfinished source, a model whose parameters differ, steps=0 without a source.
    with pytest.raises(ConfigError, match="train.init_from.*not a finished run"):
        train_and_evaluate(
            replace_path(evaluate_only, "train.init_from", "nowhere"), tmp_path / "x", log=print
        )
    learned = replace_path(evaluate_only, "model.positional", "learned")
    with pytest.raises(ConfigError, match="train.init_from.*do not fit"):
        train_and_evaluate(learned, tmp_path / "y", log=print)
    with pytest.raises(ConfigError, match="train.steps"):
        train_and_evaluate(replace_path(base_config, "train.steps", 0), tmp_path / "z", log=print)


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    """An absurd learning rate makes parameters and loss non-finite: the run stops with a message naming the step,
    writes no summary, and the latest checkpoint holds finite parameters."""
    import numpy as np

    from research.training.faults import final_state
    from research.training.loop import TrainingDiverged

    config = tiny_config("nope", steps=6, learning_rate=1e38, checkpoint_every=1, warmup_steps=0)
    with pytest.raises(TrainingDiverged, match=r"non-finite .* step"):
        train_and_evaluate(config, tmp_path, log=lambda m: None)
    assert not (tmp_path / "summary.json").exists()
    leaves = final_state(tmp_path)
    assert all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.floating))


def test_summary_holds_per_document_totals_that_add_up_to_the_bits_per_byte(tmp_path):
    """For every evaluation length the summary holds each test document's [bytes, targets, bits]: their ratio of
    sums is the reported bits per byte, exactly, their targets cover the split, and the number of documents
    scored is recorded (the whole split when data.max_eval_bytes is None). The loss by position in the window is
    stored too, its token counts covering every target."""
    import dataclasses

    from research.data.pipeline import prepare_data

    config = tiny_config("alibi", steps=2)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, max_eval_bytes=None))
    summary = train_and_evaluate(config, tmp_path, log=lambda m: None)
    test = prepare_data(config.data).splits["test"]
    assert summary["evaluation"]["documents"] == test.num_documents > 1
    assert (
        summary["evaluation"]["bytes"] == test.num_bytes
        and "non-overlapping" in summary["evaluation"]["mode"]
    )
    for length in (16, 32):
        rows = summary["per_document"][f"test/len_{length}"]
        assert len(rows) == test.num_documents
        assert [b for b, _, _ in rows] == test.doc_bytes.tolist()
        assert sum(b for b, _, _ in rows) == test.num_bytes
        assert sum(n for _, n, _ in rows) == len(test.tokens) - 1
        bits = sum(x for _, _, x in rows)
        assert summary["metrics"][f"test/len_{length}/bpb"] == bits / sum(b for b, _, _ in rows)  # exactly
        curve = summary["by_position"][f"test/len_{length}"]
        assert len(curve["bits_per_token"]) == 16 and sum(curve["tokens"]) == len(test.tokens) - 1


def test_sliding_window_evaluation_scores_every_target_once(tmp_path):
    """eval.stride: the same targets are scored (each once), with more context, so the sums still add up; at the
    training length the stride is capped at the window (non-overlapping), and the summary names the mode."""
    import dataclasses

    config = tiny_config("alibi", steps=2)
    plain = train_and_evaluate(config, tmp_path / "plain", log=lambda m: None)
    sliding = dataclasses.replace(config, eval=dataclasses.replace(config.eval, stride=4))
    slid = train_and_evaluate(sliding, tmp_path / "sliding", log=lambda m: None)
    assert slid["evaluation"]["mode"] == "sliding windows, stride 4 tokens"
    for length in (16, 32):
        key = f"test/len_{length}"
        assert slid["metrics"][f"{key}/tokens"] == plain["metrics"][f"{key}/tokens"]
        a, b = plain["per_document"][key], slid["per_document"][key]
        assert [n for _, n, _ in a] == [n for _, n, _ in b]
        assert slid["metrics"][f"{key}/bpb"] == sum(x for _, _, x in b) / sum(n for n, _, _ in b)
        assert slid["metrics"][f"{key}/bpb"] != plain["metrics"][f"{key}/bpb"]  # other contexts


@pytest.mark.parametrize("damage", ["truncated file", "missing file", "stray temporary folder"])
def test_a_damaged_checkpoint_never_blocks_the_run(tmp_path, damage):
    """A run whose latest checkpoint is damaged (a data file truncated or deleted) moves it aside, says so, resumes
    from the one before and ends exactly as the undamaged run; a stray temporary folder of an interrupted save is
    ignored. When no checkpoint restores, the error is one line naming the fix."""
    import shutil

    from research.training.checkpoint import CheckpointError

    config = tiny_config("nope", steps=4, checkpoint_every=1, keep_checkpoints=3)
    reference = train_and_evaluate(config, tmp_path / "reference", log=lambda m: None)
    run = tmp_path / "run"
    train_and_evaluate(config, run, log=lambda m: None)
    (run / "summary.json").unlink()
    data = sorted(
        (p for p in (run / "checkpoints" / "4").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    if damage == "truncated file":
        with open(data[-1], "r+b") as f:
            f.truncate(data[-1].stat().st_size // 2)
    elif damage == "missing file":
        data[-1].unlink()
    else:
        stray = run / "checkpoints" / "5.orbax-checkpoint-tmp-1700000000"
        shutil.copytree(run / "checkpoints" / "4", stray)
    messages = []
    resumed = train_and_evaluate(config, run, log=messages.append)
    assert resumed["metrics"] == reference["metrics"]
    if damage != "stray temporary folder":
        assert any(m.startswith("checkpoint at step 4 does not restore") for m in messages)
        assert "resumed from checkpoint at step 3" in messages
        assert [p.name.split("-")[0] for p in (run / "checkpoints_unreadable").iterdir()] == ["4"]
        for step in ("2", "3", "4"):  # now damage every checkpoint: one line with the fix
            if (run / "checkpoints" / step).exists():
                for f in (run / "checkpoints" / step).rglob("*"):
                    if f.is_file() and "ocdbt.process_0/d/" in str(f):
                        f.unlink()
        (run / "summary.json").unlink()
        with pytest.raises(
            CheckpointError, match=r"no checkpoint in .* restores .* delete .* from the start"
        ):
            train_and_evaluate(config, run, log=lambda m: None)


def test_best_valid_scores_the_parameters_of_the_best_validation(tmp_path, monkeypatch):
    """train.final_params=best_valid: the final evaluation scores the parameters saved at the validation with the
    lowest valid loss (here step 2, by a scripted validation), not the last step's; the run still trains to the end."""
    from research.training.checkpoint import read_checkpoint
    from research.training.lm import LanguageModel

    scripted = itertools.cycle([5.0, 1.0, 3.0, 4.0, 2.0, 6.0])  # valid losses of steps 1..6: the best is 2
    validation = LanguageModel.validation
    monkeypatch.setattr(
        LanguageModel, "validation", lambda self, p: {**validation(self, p), "valid/loss": next(scripted)}
    )
    config = tiny_config(
        "rope", eval_every=1, checkpoint_every=1, keep_checkpoints=6, final_params="best_valid"
    )
    summary = train_and_evaluate(config, tmp_path / "best", log=lambda m: None)
    assert summary["selected"] == {"step": 2, "metric": "valid/loss", "value": 1.0}
    assert [p.name for p in (tmp_path / "best" / "best").iterdir() if p.name.isdigit()] == [
        "2"
    ]  # the best only
    best, step2 = (
        read_checkpoint(tmp_path / "best" / "best"),
        read_checkpoint(tmp_path / "best" / "checkpoints", 2),
    )
    assert {k: v.tolist() for k, v in best.items()} == {k: v.tolist() for k, v in step2.items()}
    assert (
        sorted(p.name for p in (tmp_path / "best" / "checkpoints").iterdir() if p.name.isdigit())[-1] == "6"
    )
    last = train_and_evaluate(dataclasses.replace(config, train=dataclasses.replace(
        config.train, final_params="last")), tmp_path / "last", log=lambda m: None)  # fmt: skip
    assert last["selected"] is None
    assert last["metrics"]["test/len_16/loss"] != summary["metrics"]["test/len_16/loss"]


def test_best_valid_resumes_to_the_same_selection(tmp_path):
    check_resume_equivalence(tiny_config("rope", eval_every=1, final_params="best_valid"), tmp_path)


def test_best_valid_needs_periodic_validation_and_a_valid_split():
    from research.config import ConfigError
    from research.training.loop import validate

    with pytest.raises(ConfigError, match="train.final_params: 'best_valid' .* train.eval_every > 0"):
        validate(tiny_config("rope", eval_every=0, final_params="best_valid"))
    with pytest.raises(ConfigError, match=r"train.final_params: expected one of \['last', 'best_valid'\]"):
        validate(tiny_config("rope", final_params="early"))


def test_stop_when_ends_training_at_the_first_validation_that_meets_it(tmp_path, monkeypatch):
    """train.stop_when: a scripted valid loss meets 'valid/loss<=2' at step 4 -> training stops there, the last
    checkpoint is step 4, the summary says so; a rerun of the finished directory does nothing more."""
    from research.training.lm import LanguageModel

    scripted = itertools.cycle([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    validation = LanguageModel.validation
    monkeypatch.setattr(
        LanguageModel, "validation", lambda self, p: {**validation(self, p), "valid/loss": next(scripted)}
    )
    config = tiny_config("rope", eval_every=1, checkpoint_every=5, stop_when="valid/loss<=2")
    summary = train_and_evaluate(config, tmp_path, log=lambda m: None)
    assert summary["stopped_at"] == 4
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())[-1] == 4


def test_a_run_stopped_early_and_killed_resumes_into_evaluation(tmp_path, monkeypatch):
    from research.training.lm import LanguageModel

    from .conftest import Interrupt

    validation = LanguageModel.validation
    monkeypatch.setattr(
        LanguageModel, "validation", lambda self, p: {**validation(self, p), "valid/loss": 1.0}
    )
    config = tiny_config("rope", eval_every=3, stop_when="valid/loss<=2")

    def crash(message):
        if message.startswith("stopped at step 3"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_and_evaluate(config, tmp_path, log=crash)
    messages = []
    summary = train_and_evaluate(config, tmp_path, log=messages.append)
    assert summary["stopped_at"] == 3 and not any(m.startswith("step 4/") for m in messages)


def test_stop_when_names_the_valid_metrics():
    from research.config import ConfigError
    from research.training.loop import validate

    with pytest.raises(ConfigError, match=r"train.stop_when: expected 'METRIC>=VALUE'"):
        validate(tiny_config("rope", stop_when="loss<2"))
    with pytest.raises(
        ConfigError, match=r"'valid/accuracy' is not a validation metric .* valid/loss, valid/ppl"
    ):
        validate(tiny_config("rope", stop_when="valid/accuracy>=0.9"))


def test_validation_runs_at_its_own_cadence_whatever_the_log_cadence(tmp_path):
    """eval_every 3 with log_every 4: validations at steps 3 and 6, each logged with its step (they used to run
    only where both cadences met)."""
    config = tiny_config("rope", log_every=4, eval_every=3)
    train_and_evaluate(config, tmp_path, log=lambda m: None)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [3, 4, 6]
    assert [r["step"] for r in records if "valid/loss" in r] == [3, 6]
