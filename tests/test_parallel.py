"""Data parallelism over simulated devices, and mixed precision.

The multi-device checks run in a subprocess: XLA fixes the host device count when JAX starts, and the test process
has already started it with one device."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest

from research.config import ConfigError
from research.training.loop import train_and_evaluate

from .conftest import tiny_config


def run_on_eight_devices(script: str) -> dict:
    """Run `script` in a fresh Python with 8 simulated CPU devices; its last stdout line is JSON."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


EIGHT_DEVICES = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_num_cpu_devices", 8)
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx
    from research.config import ModelConfig, ConfigError
    from research.model.build import resolve_model
    from research.model.transformer import Transformer
    from research.runtime.mesh import check_batch, make_mesh, replicate, shard_batch
    from research.training.step import make_optimizer, make_train_step
    from research.config import TrainConfig

    assert jax.device_count() == 8
    resolved = resolve_model(ModelConfig(d_model=32, num_layers=2, num_heads=4, positional={"name": "alibi"}),
                             max_len=16, vocab_size=64)
    graphdef, params = nnx.split(Transformer(resolved, vocab_size=64, rngs=nnx.Rngs(0)))
    params = jax.tree.map(np.asarray, params)  # host copies: the train step donates its device buffers
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 64, (16, 16)).astype(np.int32)
    targets = rng.integers(0, 64, (16, 16)).astype(np.int32)

    def loss_fn(p, x, y):
        pos = resolved.positions.sample(x.shape[0], x.shape[1], key=None, train=False)
        logits = nnx.merge(graphdef, p)(x, pos)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    out = {}
    for n in (1, 8):
        mesh = make_mesh(jax.devices()[:n])
        p = replicate(params, mesh)
        x, y = shard_batch((inputs, targets), mesh)
        assert len(x.sharding.device_set) == n
        loss, grads = jax.jit(jax.value_and_grad(loss_fn))(p, x, y)
        tx = make_optimizer(TrainConfig(steps=4, warmup_steps=1))
        step = make_train_step(graphdef, tx, resolved.positions, 0)
        q, opt = replicate(params, mesh), replicate(tx.init(params), mesh)
        for s in range(3):
            q, opt, step_metrics = step(q, opt, x, y, jnp.int32(s))
            step_loss = step_metrics["loss"]
        out[n] = {"loss": float(loss), "grads": [np.asarray(g).tolist() for g in jax.tree.leaves(grads)],
                  "step_loss": float(step_loss), "params": [np.asarray(v).tolist() for v in jax.tree.leaves(q)]}
    try:
        check_batch(12, make_mesh())
        out["error"] = None
    except ConfigError as e:
        out["error"] = str(e)
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_eight_devices_match_one_device():
    """Loss, gradients and three training steps on 8 simulated devices equal the 1-device run on the same global
    batch (within 1e-5 relative); a global batch not divisible by the device count is a clear error."""
    import numpy as np

    out = run_on_eight_devices(EIGHT_DEVICES)
    one, eight = out["1"], out["8"]
    assert eight["loss"] == pytest.approx(one["loss"], rel=1e-5)
    for a, b in zip(one["grads"], eight["grads"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7)
    assert eight["step_loss"] == pytest.approx(one["step_loss"], rel=1e-5)
    for a, b in zip(one["params"], eight["params"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    assert out["error"] == "data.batch_size: expected a multiple of the 8 devices of the data axis, got 12"


@pytest.mark.slow
def test_bfloat16_compute_stays_close_to_float32(tmp_path):
    """train.compute_dtype=bfloat16 (float32 master weights): after 20 steps the test loss is within 1% of the
    float32 run's, and not bitwise equal (the bfloat16 path really runs)."""
    config = tiny_config("rope", steps=20)
    f32 = train_and_evaluate(config, tmp_path / "f32", log=lambda m: None)["metrics"]
    bf16_config = dataclasses.replace(
        config, train=dataclasses.replace(config.train, compute_dtype="bfloat16")
    )
    bf16 = train_and_evaluate(bf16_config, tmp_path / "bf16", log=lambda m: None)["metrics"]
    for key in ("test/len_16/loss", "test/len_32/loss"):
        assert bf16[key] == pytest.approx(f32[key], rel=1e-2)
    assert bf16["test/len_16/loss"] != f32["test/len_16/loss"]
    with pytest.raises(ConfigError, match="train.compute_dtype"):
        bad = dataclasses.replace(config, train=dataclasses.replace(config.train, compute_dtype="fp8"))
        train_and_evaluate(bad, tmp_path / "bad", log=lambda m: None)


@pytest.mark.slow
def test_kill_minus_nine_five_times_then_resume_is_bitwise_equal(tmp_path, monkeypatch):
    """SIGKILL the training process at 5 random moments (inside steps, metric writes and asynchronous checkpoint
    saves: a checkpoint every step), resume each time: the final parameters and optimizer state equal the
    uninterrupted run's bit for bit, and metrics.jsonl holds every step exactly once."""
    from research.training.faults import compare_runs, kill_and_resume, run

    from .test_sweep_report import write_experiment

    monkeypatch.chdir(tmp_path)
    exp = write_experiment(tmp_path)
    extra = ["--train.steps", "60", "--train.checkpoint_every", "1", "--train.log_every", "1"]
    run(f"{exp}:positional=alibi", tmp_path / "reference", extra=extra)
    killed = kill_and_resume(f"{exp}:positional=alibi", tmp_path / "killed", kills=5, extra=extra, seed=1)
    assert len(killed) == 5
    result = compare_runs(tmp_path / "reference", tmp_path / "killed")
    assert result["steps"] == list(range(1, 61))
    assert result["steps_ok"] and result["bitwise_equal"]
    assert (tmp_path / "killed" / "log.txt").read_text().count("### fault: kill") == 5


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, monkeypatch):
    """Two local processes (jax.distributed, gloo CPU collectives; each reads only its rows of every batch) end
    with the same metrics as one process on the same global batch."""
    import socket

    from .test_sweep_report import write_experiment

    monkeypatch.chdir(tmp_path)
    exp = write_experiment(tmp_path)
    train = [sys.executable, os.path.join(os.path.dirname(__file__), "..", "scripts", "train.py")]
    target = f"{exp}:positional=rope"
    one = subprocess.run([*train, target, "--workdir", str(tmp_path / "one")], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen(
            [
                *train,
                target,
                "--workdir",
                str(tmp_path / "two"),
                "--coordinator",
                f"localhost:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-2000:] + outputs[1][-2000:]
    assert "2 cpu device(s)" in outputs[0]
    a = json.loads((tmp_path / "one" / "summary.json").read_text())["metrics"]
    b = json.loads((tmp_path / "two" / "summary.json").read_text())["metrics"]
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-5), key


VOCAB_SHARDED = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_num_cpu_devices", 8)
    import numpy as np
    import optax
    from flax import nnx
    from research.config import ModelConfig
    from research.model.build import resolve_model
    from research.model.transformer import Transformer
    from research.runtime.mesh import make_mesh, shard_batch, shard_params

    resolved = resolve_model(ModelConfig(d_model=32, num_layers=1, num_heads=4,
                                         embedding={"name": "table", "tied": False}), max_len=16, vocab_size=64)
    graphdef, params = nnx.split(Transformer(resolved, vocab_size=64, rngs=nnx.Rngs(0)))
    params = jax.tree.map(np.asarray, params)
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 64, (8, 16)).astype(np.int32)
    targets = rng.integers(0, 64, (8, 16)).astype(np.int32)

    from research.training.loss import fused_mean_nll

    def loss_fn(p, x, y, fused=False):
        pos = resolved.positions.sample(x.shape[0], x.shape[1], key=None, train=False)
        model = nnx.merge(graphdef, p)
        if fused:  # train.loss_chunk: the readout's gradients chunk by chunk
            return fused_mean_nll(model.embedding, model.features(x, pos), y, chunk=48)
        return optax.softmax_cross_entropy_with_integer_labels(model(x, pos), y).mean()

    out = {}
    for model, fused in ((1, False), (4, False), (4, True)):
        mesh = make_mesh(model=model)
        p = shard_params(params, mesh)
        x, y = shard_batch((inputs, targets), mesh)
        loss, grads = jax.jit(jax.value_and_grad(lambda p, x, y: loss_fn(p, x, y, fused)))(p, x, y)
        table = p["embedding"]["table"]
        out[f"{model}{'f' if fused else ''}"] = {"loss": float(loss), "grads": [np.asarray(g).tolist() for g in jax.tree.leaves(grads)],
                      "table_spec": str(table.sharding.spec), "table_shard": list(table.addressable_shards[0].data.shape),
                      "readout_spec": str(p["embedding"]["readout"].sharding.spec)}
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_vocabulary_sharded_embedding_matches_replicated():
    """train.model_axis=4 on 8 simulated devices (a 2 x 4 data x model mesh): the table and readout are split over
    the vocabulary, and loss and gradients equal the replicated (8 x 1) run within 1e-5, with the plain loss and
    with the fused chunked one (train.loss_chunk)."""
    import numpy as np

    out = run_on_eight_devices(VOCAB_SHARDED)
    replicated, sharded, fused = out["1"], out["4"], out["4f"]
    assert sharded["table_spec"] == "P('model', None)" and sharded["table_shard"] == [16, 32]
    assert sharded["readout_spec"] == "P(None, 'model')"
    assert replicated["table_spec"] == "P()"
    assert sharded["loss"] == pytest.approx(replicated["loss"], rel=1e-5)
    for a, b in zip(replicated["grads"], sharded["grads"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7)
    assert fused["loss"] == pytest.approx(
        replicated["loss"], rel=1e-5
    )  # the fused loss on the sharded readout
    for a, b in zip(replicated["grads"], fused["grads"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7)


def test_model_axis_must_divide_the_devices():
    from research.runtime.mesh import make_mesh

    with pytest.raises(ConfigError, match="train.model_axis"):
        make_mesh(model=3)


TASK_MODEL_AXIS = textwrap.dedent(
    """
    import dataclasses, json, tempfile
    import jax
    jax.config.update("jax_num_cpu_devices", 8)
    import numpy as np
    from research.config import Config, DataConfig, ModelConfig, TaskConfig, TrainConfig
    from research.training import loop

    def config(model_axis):
        return Config(
            data=DataConfig(batch_size=8),
            model=ModelConfig(d_model=16, num_layers=1, num_heads=2, positional={"name": "alibi"}),
            train=TrainConfig(steps=3, warmup_steps=1, log_every=1, eval_every=3, checkpoint_every=3,
                              model_axis=model_axis),
            task=TaskConfig(task={"name": "reverse_string", "symbols": 4}, train_max_length=3, eval_max_length=4,
                            eval_examples=8),
        )

    out = {}
    for axis in (1, 2):
        with tempfile.TemporaryDirectory() as workdir:
            c = config(axis)
            objective = loop.objective_for(c)
            loop.validate(c, objective)
            run = loop.setup(c, __import__("pathlib").Path(workdir), objective, lambda m: None)
            out[f"spec{axis}"] = str(run.params["embedding"]["table"].sharding.spec)
            loop.fit(run)
            out[axis] = run.objective.evaluate(run.params, lambda m: None)
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_task_run_shards_the_vocabulary_over_the_model_axis():
    """A synthetic-task run with train.model_axis=2 on 8 simulated devices runs in the same loop as a corpus run:
    its embedding table is split over the vocabulary, and it ends with the replicated run's metrics (1e-5)."""
    out = run_on_eight_devices(TASK_MODEL_AXIS)
    assert out["spec2"] == "PartitionSpec('model', None)" or out["spec2"] == "P('model', None)"
    assert out["spec1"] in ("PartitionSpec()", "P()")
    for key, value in out["1"].items():
        assert out["2"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
