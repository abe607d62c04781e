"""Experiment tracking: TensorBoard events hold exactly metrics.jsonl's records (train/lr and train/grad_norm
included), a resumed run shows each step once, the learning rate follows the schedule, W&B offline stays in the
run directory; configs saved before the tracking fields existed still match; the sweep's ETA."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from research.config import Config, ConfigError, from_dict, replace_path, to_dict
from research.training.loop import train_and_evaluate
from research.training.metrics import TENSORBOARD, progress_bar, read_jsonl

from .conftest import Interrupt, tiny_config


def read_events(logdir) -> list[tuple[int, dict]]:
    """[(step, {tag: value})] of a folder of event files as TensorBoard shows them: files in name order, each
    record in tfrecord framing (8-byte length, its masked CRC, the Event, its masked CRC, little-endian), and a
    SessionLog START at step s hiding the scalars of steps >= s read before it (TensorBoard's purge)."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    from tensorboardX.record_writer import masked_crc32c

    events = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset + 12 <= len(data):
            header = data[offset : offset + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[offset + 8 : offset + 12])[0] == masked_crc32c(header)
            payload = data[offset + 12 : offset + 12 + length]
            assert struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])[0] == masked_crc32c(
                payload
            )
            offset += 16 + length
            event = Event.FromString(payload)
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                events = [(step, values) for step, values in events if step < event.step]
            elif event.HasField("summary"):
                events.append((event.step, {v.tag: v.simple_value for v in event.summary.value}))
    return events


def assert_events_equal_metrics(workdir) -> None:
    """The TensorBoard scalars of a run are its metrics.jsonl records, step for step (float32), each step once."""
    events = read_events(workdir / TENSORBOARD)
    records = read_jsonl(workdir / "metrics.jsonl")
    assert [step for step, _ in events] == [r["step"] for r in records]
    for (step, values), record in zip(events, records):
        expected = {k: np.float32(v) for k, v in record.items() if k != "step"}
        assert values == expected, step


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny run logging every step, and its summary."""
    workdir = tmp_path_factory.mktemp("run")
    return workdir, train_and_evaluate(tiny_config("rope"), workdir, log=lambda m: None)


def test_tensorboard_events_hold_the_metrics_records(tiny_run):
    workdir, _ = tiny_run
    assert_events_equal_metrics(workdir)
    records = read_jsonl(workdir / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    for r in records:
        assert {"train/loss", "train/grad_norm", "train/lr", "train/tokens_per_s"} <= set(r)
        assert math.isfinite(r["train/grad_norm"]) and r["train/grad_norm"] > 0
    assert {"valid/loss", "valid/bpb"} <= set(records[2])  # eval_every=3
    assert len(list((workdir / TENSORBOARD).iterdir())) == 1


def test_logged_learning_rate_follows_warmup_and_cosine_decay(tiny_run):
    """train/lr of step s is the learning rate of its update (optax count s - 1): linear warmup from 0 over
    warmup_steps, then cosine decay to learning_rate * min_lr_ratio at train.steps (written out here)."""
    from research.training.step import make_schedule

    workdir, _ = tiny_run
    t = tiny_config("rope").train
    peak, warmup, low = t.learning_rate, t.warmup_steps, t.learning_rate * t.min_lr_ratio
    for r in read_jsonl(workdir / "metrics.jsonl"):
        count = r["step"] - 1
        if count < warmup:
            expected = peak * count / warmup
        else:
            expected = low + (peak - low) * 0.5 * (
                1 + math.cos(math.pi * (count - warmup) / (t.steps - warmup))
            )
        assert r["train/lr"] == pytest.approx(expected, rel=1e-6, abs=1e-12)
        assert r["train/lr"] == float(make_schedule(t)(count))


def test_window_means_of_loss_and_grad_norm(tiny_run, tmp_path):
    """With log_every=3 a record holds the means of the per-step values of its three steps."""
    workdir, _ = tiny_run
    every_step = read_jsonl(workdir / "metrics.jsonl")
    train_and_evaluate(tiny_config("rope", log_every=3), tmp_path, log=lambda m: None)
    windows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in windows] == [3, 6]
    for r in windows:
        steps = every_step[r["step"] - 3 : r["step"]]
        for key in ("train/loss", "train/grad_norm"):
            assert r[key] == pytest.approx(np.mean([s[key] for s in steps]), rel=1e-5), key
    assert_events_equal_metrics(tmp_path)


def test_grad_norm_is_the_global_norm_before_clipping():
    """The step's grad_norm equals the norm of jax.grad of the same loss, even when clipping scales it down."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from research.config import ModelConfig, TrainConfig
    from research.model.build import resolve_model
    from research.model.transformer import Transformer
    from research.training.step import make_optimizer, make_train_step

    resolved = resolve_model(ModelConfig(d_model=16, num_layers=1, num_heads=2), max_len=8, vocab_size=32)
    graphdef, params = nnx.split(Transformer(resolved, vocab_size=32, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    inputs, targets = (jnp.asarray(rng.integers(0, 32, (2, 8)), jnp.int32) for _ in range(2))

    def loss_fn(p):
        pos = resolved.positions.sample(2, 8, key=None, train=False)
        logits = nnx.merge(graphdef, p)(inputs, pos)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    expected = float(optax.tree.norm(jax.jit(jax.grad(loss_fn))(params)))
    tx = make_optimizer(TrainConfig(steps=4, warmup_steps=1, grad_clip=1e-3))
    step = make_train_step(graphdef, tx, resolved.positions, 0, loss_chunk=0)
    _, _, out = step(jax.tree.map(jnp.copy, params), tx.init(params), inputs, targets, jnp.int32(0))
    assert float(out["grad_norm"]) == pytest.approx(expected, rel=1e-5)
    assert expected > 1e-3  # the clipping threshold: the logged norm is the unclipped one


def test_a_resumed_run_shows_every_step_once(tmp_path):
    """Interrupted after step 5 (checkpoint at 4), resumed: the second event file starts with a purge at step 5,
    and TensorBoard's view holds steps 1..6 once, equal to metrics.jsonl."""
    from tensorboardX.proto.event_pb2 import Event

    config = tiny_config("alibi")

    def crash(message):
        if message.startswith("step 5/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_and_evaluate(config, tmp_path, log=crash)
    assert [step for step, _ in read_events(tmp_path / TENSORBOARD)] == [1, 2, 3, 4, 5]
    train_and_evaluate(config, tmp_path, log=lambda m: None)
    files = sorted((tmp_path / TENSORBOARD).glob("events.out.tfevents.*"))
    assert len(files) == 2
    data = files[1].read_bytes()
    offset = 16 + struct.unpack("<Q", data[:8])[0]  # after the file_version record
    start = Event.FromString(
        data[offset + 12 : offset + 12 + struct.unpack("<Q", data[offset : offset + 8])[0]]
    )
    assert start.HasField("session_log") and start.step == 5
    assert_events_equal_metrics(tmp_path)


@pytest.mark.slow
def test_killed_and_resumed_process_shows_every_step_once(tmp_path, monkeypatch):
    """SIGKILLs at random moments (research/training/faults.py): TensorBoard still shows metrics.jsonl's records,
    every step once (events are on disk when the step is logged)."""
    from research.training.faults import kill_and_resume

    from .test_sweep_report import write_experiment

    monkeypatch.chdir(tmp_path)
    exp = write_experiment(tmp_path)
    extra = ["--train.steps", "60", "--train.checkpoint_every", "7", "--train.log_every", "1"]
    kills = kill_and_resume(f"{exp}:positional=alibi", tmp_path / "run", kills=3, extra=extra, seed=1)
    assert len(kills) == 3
    assert len(list((tmp_path / "run" / TENSORBOARD).iterdir())) == 4
    assert_events_equal_metrics(tmp_path / "run")
    assert [r["step"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == list(range(1, 61))


def test_tensorboard_off_writes_no_events(tmp_path):
    train_and_evaluate(tiny_config("nope", steps=2, tensorboard=False), tmp_path, log=lambda m: None)
    assert not (tmp_path / TENSORBOARD).exists() and len(read_jsonl(tmp_path / "metrics.jsonl")) == 2


@pytest.mark.slow
def test_wandb_offline_writes_its_files_in_the_run_directory(tmp_path, monkeypatch):
    """train.wandb with wandb_mode offline: no network, the W&B run under <run>/wandb/, the same id on resume."""
    pytest.importorskip("wandb")
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = tiny_config("nope", steps=4, wandb="research-tests")

    def crash(message):
        if message.startswith("step 3/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_and_evaluate(config, tmp_path / "run", log=crash)
    run_id = (tmp_path / "run" / "wandb" / "id").read_text().strip()
    train_and_evaluate(config, tmp_path / "run", log=lambda m: None)
    assert (tmp_path / "run" / "wandb" / "id").read_text().strip() == run_id
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert runs and all(r.name.endswith(run_id) for r in runs)
    assert all((r / f"run-{run_id}.wandb").stat().st_size > 0 for r in runs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_wandb_without_the_package_is_a_config_error(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name)
    )
    with pytest.raises(ConfigError, match=r"train.wandb: .*pip install -e .\[wandb\]"):
        replace_path(Config(), "train.wandb", "project").validate()
    Config().validate()  # off: the package is not needed


def test_configs_saved_before_the_tracking_fields_read_back_equal(tmp_path):
    """A config.json without train.tensorboard/wandb/wandb_mode means today's defaults: the run directory of such
    a run accepts today's config, and the tracking fields never enter run names (those come from overrides)."""
    from research.training.rundir import check_config

    config = tiny_config("rope")
    saved = to_dict(config)
    for key in ("tensorboard", "wandb", "wandb_mode"):
        del saved["train"][key]
    assert from_dict(Config, saved) == config
    (tmp_path / "config.json").write_text(json.dumps(saved))
    check_config(config, tmp_path)  # no ConfigError
    assert replace_path(config, "train.wandb_mode", "online").train.wandb_mode == "online"
    with pytest.raises(ConfigError, match="wandb_mode"):
        replace_path(config, "train.wandb_mode", "sometimes")


def test_progress_bar_shows_steps_and_eta(capsys):
    with progress_bar(10, 2, enabled=False) as advance:
        advance(3)
    assert capsys.readouterr().out == ""
    with progress_bar(10, 2, enabled=True) as advance:
        for step in range(3, 11):
            advance(step)
    out = capsys.readouterr().out
    assert "10/10" in out and "ETA" in out


def test_sweep_eta_from_finished_runs():
    """ETA: queued runs and the rest of the running ones at the mean duration of the finished runs, over the slots."""
    import time
    from pathlib import Path

    from research.studies.sweep import Run, Scheduler, _duration

    assert [_duration(s) for s in (42, 310, 7380)] == ["42s", "5m10s", "2h03m"]
    runs = [Run(f"r{i}", "", Path(f"r{i}")) for i in range(6)]
    scheduler = Scheduler(runs, runs, jobs=2, extra_args=(), out=print)
    assert "ETA" not in scheduler.eta()  # nothing finished yet
    scheduler.todo.clear()
    scheduler.todo.extend(runs[3:])  # 3 queued, 2 running for 40 s, mean 100 s: (300 + 60 + 60) / 2
    scheduler.running = runs[1:3]
    for r in scheduler.running:
        r.started = time.time() - 40
    scheduler.durations = [80.0, 120.0]
    assert scheduler.eta().endswith("ETA 3m30s")
