"""Length-generalisation runs (research/training/task.py): padding is exact, batches are pure functions of (seed, step),
the run directory and resume follow the corpus-run contract, and bad task configs fail before compiling."""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.config import Config, ConfigError, DataConfig, ModelConfig, TaskConfig, TrainConfig
from research.data.tasks import PAD, TASKS
from research.model.transformer import Transformer
from research.training.loop import train_and_evaluate, validate
from research.training.metrics import read_jsonl
from research.training.task import (
    eval_batch,
    max_sequence_length,
    pad,
    sequence_length,
    summarise,
    train_batch,
)

from .conftest import check_resume_equivalence


def task_config(positional="rope", positions="contiguous", task="reverse_string", **train) -> Config:
    positions_spec = {"name": positions, **({"max_len": 64} if positions == "randomized" else {})}
    return Config(
        seed=0,
        data=DataConfig(batch_size=4),
        model=ModelConfig(
            d_model=16, num_layers=1, num_heads=2, positional={"name": positional}, positions=positions_spec
        ),
        train=dataclasses.replace(
            TrainConfig(steps=6, warmup_steps=1, log_every=1, eval_every=3, checkpoint_every=2), **train
        ),
        task=TaskConfig(task={"name": task}, train_max_length=3, eval_max_length=6, eval_examples=4),
    )


def test_tiny_task_run_writes_per_length_accuracy(tmp_path):
    summary = train_and_evaluate(task_config(), tmp_path, log=lambda m: None)
    m = summary["metrics"]
    for n in range(1, 7):
        assert 0.0 <= m[f"test/len_{n}/token_accuracy"] <= 1.0
        assert 0.0 <= m[f"test/len_{n}/sequence_accuracy"] <= m[f"test/len_{n}/token_accuracy"] + 1e-9
    np.testing.assert_allclose(
        m["test/in_dist/token_accuracy"], np.mean([m[f"test/len_{n}/token_accuracy"] for n in (1, 2, 3)])
    )
    np.testing.assert_allclose(
        m["test/ood/token_accuracy"], np.mean([m[f"test/len_{n}/token_accuracy"] for n in (4, 5, 6)])
    )
    for name in ("config.json", "command.txt", "metrics.jsonl", "summary.json"):
        assert (tmp_path / name).exists(), name
    assert summary["task"]["name"] == "reverse_string"
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert json.loads((tmp_path / "summary.json").read_text())["metrics"] == m


def test_task_run_resumes_to_the_same_result(tmp_path):
    check_resume_equivalence(task_config("alibi", "randomized"), tmp_path)


@pytest.mark.parametrize("positional", ["rope", "alibi", "t5_bias", "learned", "nope"])
def test_right_padding_leaves_real_token_logits_unchanged(positional):
    """Causal attention + padding after the real tokens: logits at real positions equal the unpadded run's."""
    from research.model.build import resolve_model

    resolved = resolve_model(
        ModelConfig(d_model=16, num_layers=2, num_heads=2, positional={"name": positional}),
        max_len=32,
        vocab_size=8,
    )
    model = Transformer(resolved, vocab_size=8, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(2, 8, size=(2, 9)), jnp.int32)
    padded = jnp.pad(tokens, ((0, 0), (0, 23)), constant_values=PAD)
    positions = jnp.broadcast_to(jnp.arange(32), (2, 32)).astype(jnp.int32)
    short = model(tokens, positions[:, :9])
    long = model(padded, positions)
    np.testing.assert_allclose(long[:, :9], short, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "positional,positions",
    [("rope", "contiguous"), ("alibi", "contiguous"), ("t5_bias", "contiguous"), ("learned", "randomized")],
)
def test_padding_each_length_to_its_own_bucket_scores_as_padding_to_the_longest(positional, positions):
    """evaluate_lengths pads each input length to its rounded-up sequence length (PAD_MULTIPLE) instead of the
    longest: every per-example count, teacher-forced and free-running, and every loss is the same."""
    from research.model.build import resolve_model
    from research.runtime.mesh import make_mesh
    from research.training.task import evaluate_lengths, make_eval_step, make_generate_step, resolve_task

    config = task_config(positional, positions)
    task = resolve_task(config)
    positions_spec = (
        {**config.model.positions, "eval_mode": "randomized"} if positions == "randomized" else {}
    )
    model_config = dataclasses.replace(config.model, positions=positions_spec or config.model.positions)
    resolved = resolve_model(model_config, max_len=64, vocab_size=task.vocab_size)
    graphdef, params = nnx.split(Transformer(resolved, vocab_size=task.vocab_size, rngs=nnx.Rngs(1)))
    steps = (make_eval_step(graphdef, resolved.positions), make_generate_step(graphdef, resolved.positions))
    longest = max_sequence_length(task, 24)
    runs = [
        evaluate_lengths(
            steps, params, task, max_n=24, examples=4, length=longest, mesh=make_mesh(), multiple=multiple
        )
        for multiple in (None, 16)
    ]
    assert runs[0][1] == runs[1][1]  # per-example counts
    for n in range(1, 25):
        np.testing.assert_allclose(runs[0][0][n]["loss"], runs[1][0][n]["loss"], rtol=1e-5)


def test_batches_are_pure_functions_of_seed_and_step():
    task = TASKS.get("bucket_sort")()
    length = max_sequence_length(task, 5)
    a = train_batch(task, seed=1, step=7, batch_size=4, max_n=5, length=length)
    b = train_batch(task, seed=1, step=7, batch_size=4, max_n=5, length=length)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # Over many steps every input length 1..N is drawn, and nothing longer.
    real = {
        int(train_batch(task, seed=1, step=s, batch_size=2, max_n=5, length=length)[3][0]) for s in range(60)
    }
    assert real == {sequence_length(task, n) for n in range(1, 6)}
    # The test set does not depend on the run's seed: it is a function of (task, length) only.
    e1, e2 = eval_batch(task, 4, examples=3, length=length), eval_batch(task, 4, examples=3, length=length)
    np.testing.assert_array_equal(e1[0], e2[0])


def test_pad_marks_real_tokens_and_lengths():
    batch = TASKS.get("reverse_string")().sample(np.random.default_rng(0), 3, 2)
    inputs, targets, mask, lengths = pad(batch, 10)
    t = batch.inputs.shape[1]
    assert inputs.shape == targets.shape == mask.shape == (3, 10)
    np.testing.assert_array_equal(inputs[:, :t], batch.inputs)
    assert (inputs[:, t:] == PAD).all() and (mask[:, t:] == 0).all()
    np.testing.assert_array_equal(mask[:, :t], batch.mask)
    np.testing.assert_array_equal(lengths, t)
    with pytest.raises(ValueError, match="does not fit"):
        pad(batch, t - 1)


def test_summarise_means_over_in_and_out_of_distribution_lengths():
    per_length = {n: {"token_accuracy": n / 10, "sequence_accuracy": 0.0, "loss": 1.0} for n in range(1, 6)}
    m = summarise(per_length, train_max=2)
    assert m["test/in_dist/token_accuracy"] == pytest.approx(0.15)
    assert m["test/ood/token_accuracy"] == pytest.approx(0.4)
    assert m["test/len_3/token_accuracy"] == 0.3


def test_bad_task_configs_name_the_field():
    with pytest.raises(ConfigError, match=r"task\.task.*reverse_string"):
        validate(dataclasses.replace(task_config(), task=TaskConfig(task={"name": "reverse"})))
    with pytest.raises(ConfigError, match="task.eval_max_length"):
        validate(
            dataclasses.replace(
                task_config(),
                task=TaskConfig(task={"name": "reverse_string"}, train_max_length=8, eval_max_length=4),
            )
        )
    with pytest.raises(ConfigError, match="model.positional"):
        validate(dataclasses.replace(task_config(), model=ModelConfig(positional={"name": "no_such"})))


def test_task_run_stops_on_non_finite_parameters_and_keeps_the_last_good_checkpoint(tmp_path):
    """The task objective runs in the one training loop: an absurd learning rate stops it naming the step, no
    summary is written, and the latest checkpoint holds finite parameters."""
    from research.training.faults import final_state
    from research.training.loop import TrainingDiverged

    config = task_config("nope", steps=6, learning_rate=1e38, checkpoint_every=1, warmup_steps=0)
    with pytest.raises(TrainingDiverged, match=r"non-finite .* step"):
        train_and_evaluate(config, tmp_path, log=lambda m: None)
    assert not (tmp_path / "summary.json").exists()
    leaves = final_state(tmp_path)
    assert all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.floating))


def test_only_the_primary_process_writes_the_run_files(tmp_path, monkeypatch):
    """On a process other than 0 a task run writes no config.json, command.txt, metrics.jsonl or summary.json
    (it still takes part in the checkpoints, as every process does), and logs nothing."""
    import research.training.loop as loop
    import research.training.rundir as rundir

    monkeypatch.setattr(loop, "is_primary", lambda: False)
    monkeypatch.setattr(rundir, "is_primary", lambda: False)
    messages = []
    summary = train_and_evaluate(task_config(steps=2, eval_every=1), tmp_path, log=messages.append)
    assert 0.0 <= summary["metrics"]["test/ood/token_accuracy"] <= 1.0
    for name in ("config.json", "command.txt", "metrics.jsonl", "summary.json"):
        assert not (tmp_path / name).exists(), name
    assert (tmp_path / "checkpoints").is_dir() and messages == []


def test_task_summary_has_free_running_accuracy_and_the_trivial_baselines(tmp_path):
    """Free-running (greedy, autoregressive) accuracy beside teacher-forced: a sequence is all right in one mode
    exactly when it is in the other (a fully right prefix is the true prefix), example by example; one output
    token (parity) scores the same either way. Baselines are scored on the same test set, per example."""
    summary = train_and_evaluate(task_config(steps=4), tmp_path / "reverse", log=lambda m: None)
    m = summary["metrics"]
    for split in ("in_dist", "ood"):
        for b in ("copy_previous", "input_order", "majority"):
            assert 0.0 <= m[f"test/{split}/baseline/{b}/token_accuracy"] <= 1.0
        assert 0.0 <= m[f"test/{split}/free_token_accuracy"] <= 1.0
    assert m["test/in_dist/free_sequence_accuracy"] == m["test/in_dist/sequence_accuracy"]
    for n in range(1, 7):
        counts = summary["per_example"][f"len_{n}"]
        teacher_right = [a == t for a, t in zip(counts["teacher"], counts["total"], strict=True)]
        free_right = [a == t for a, t in zip(counts["free"], counts["total"], strict=True)]
        assert teacher_right == free_right
    parity = train_and_evaluate(
        task_config(task="parity_check", steps=2), tmp_path / "parity", log=lambda m: None
    )
    for n in range(1, 7):
        counts = parity["per_example"][f"len_{n}"]
        assert counts["free"] == counts["teacher"]


def test_baselines_on_a_hand_built_batch():
    """copy_previous predicts the token just read, input_order the k-th input symbol for the k-th output, majority
    one token everywhere; each scored on the output targets only."""
    from research.training.task import baseline_correct

    # bucket_sort of [4, 2, 3] -> [2, 3, 4]; sequence 4 2 3 SEP 2 3 4 (inputs drop the last, targets the first)
    seq = np.array([[4, 2, 3, 1, 2, 3, 4]])
    inputs, targets = seq[:, :-1], seq[:, 1:]
    mask = np.array([[0, 0, 0, 1, 1, 1]], np.float32)  # the output targets 2 3 4, at positions 3, 4, 5
    got = baseline_correct(inputs, targets, mask, start=3, majority=3)
    # copy_previous: inputs at 3..5 = SEP 2 3 vs 2 3 4 -> none right; input_order: 4 2 3 vs 2 3 4 -> none;
    # majority 3: one right
    assert {k: int(v[0]) for k, v in got.items()} == {"copy_previous": 0, "input_order": 0, "majority": 1}
    # reverse of [2, 2, 5] -> [5, 2, 2]: copy_previous gets the repeated 2 right, input_order the middle one
    seq = np.array([[2, 2, 5, 1, 5, 2, 2]])
    got = baseline_correct(seq[:, :-1], seq[:, 1:], mask, start=3, majority=2)
    assert {k: int(v[0]) for k, v in got.items()} == {"copy_previous": 1, "input_order": 1, "majority": 2}
