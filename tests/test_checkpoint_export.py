"""Named checkpoints (research/training/checkpoint.py), params-only train.init_from, checkpoints of older runs, and
the safetensors export (research/training/export.py, scripts/export.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from research.training.loop import train_and_evaluate

from .conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = lambda message: None  # noqa: E731


def model_paths(params) -> list[str]:
    """The model's own parameter paths, from NNX's flat state (independent of the checkpoint's naming)."""
    return sorted("/".join(map(str, path)) for path, _ in params.flat_state())


def same(a, b) -> bool:
    """Equal structure, and every leaf equal in value, dtype and sharding."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        x.dtype == y.dtype and x.sharding == y.sharding and np.array_equal(x, y) for x, y in zip(la, lb)
    )


def fresh_state(config, vocab_size: int = 257):
    """(params, opt_state) of a freshly initialised tiny model, as the training loop builds them."""
    from research.model.build import build_model, resolve_model
    from research.training.step import make_optimizer

    resolved = resolve_model(config.model, max_len=config.data.seq_len, vocab_size=vocab_size)
    _, params = nnx.split(build_model(resolved, vocab_size=vocab_size, seed=config.seed))
    return params, make_optimizer(config.train).init(params)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (steps 6, checkpoints at 4 and 6) and its summary."""
    run = tmp_path_factory.mktemp("trained") / "run"
    return run, train_and_evaluate(tiny_config("rope"), run, log=QUIET)


def test_a_checkpoint_holds_named_params_and_optimizer_state(tmp_path):
    """<step>/params and <step>/opt_state on disk, named by the model's paths; restoring gives back the structure,
    dtypes, shardings and values of the saved state, and the parameters alone restore without the optimizer's."""
    from research.training.checkpoint import Checkpointer, read_checkpoint

    config = tiny_config("learned")
    params, opt_state = fresh_state(config)
    ckpt = Checkpointer(tmp_path / "checkpoints")
    ckpt.save(3, (params, opt_state))
    ckpt.wait()
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "3").iterdir() if p.is_dir()) == [
        "opt_state",
        "params",
    ]
    saved = read_checkpoint(tmp_path / "checkpoints")
    names = sorted(n.removeprefix("params/") for n in saved if n.startswith("params/"))
    assert names == model_paths(params) and "blocks/0/attn/qkv/kernel" in names
    assert np.array_equal(saved["params/positional/table"], params["positional"]["table"][...])
    assert any(n.startswith("opt_state/") and n.endswith("/mu/embedding/table") for n in saved)
    restored = ckpt.restore(3, (params, opt_state))
    assert same(restored, (params, opt_state))
    ckpt.close()
    shutil.rmtree(tmp_path / "checkpoints" / "3" / "opt_state")  # the parameters need nothing else
    ckpt = Checkpointer(tmp_path / "checkpoints", async_save=False)
    assert same(ckpt.restore_params(3, params), params)
    ckpt.close()


def test_parameters_that_do_not_fit_name_the_first_difference(tmp_path):
    from research.training.checkpoint import Checkpointer, ParamsMismatch

    config = tiny_config("rope")
    ckpt = Checkpointer(tmp_path, async_save=False)
    ckpt.save(1, fresh_state(config))
    wider, _ = fresh_state(dataclasses.replace(config, model=dataclasses.replace(config.model, d_model=48)))
    with pytest.raises(
        ParamsMismatch, match=r"blocks/0/attn/out/kernel: saved \(32, 32\), this model \(48, 48\)"
    ):
        ckpt.restore_params(1, wider)
    learned, _ = fresh_state(tiny_config("learned"))
    with pytest.raises(
        ParamsMismatch, match=r"positional/table \(16, 32\) of this model is not in the checkpoint"
    ):
        ckpt.restore_params(1, learned)
    ckpt.close()


def test_init_from_loads_parameters_alone_under_another_optimizer(trained, tmp_path):
    """train.init_from with another learning rate, weight decay and betas: the parameters load (steps=0 evaluates
    them exactly) and a fine-tune trains; a model of another width is refused naming the first parameter."""
    from research.config import ConfigError

    run, summary = trained
    other = tiny_config("rope", steps=0, warmup_steps=0, learning_rate=3e-4, weight_decay=0.0, b2=0.9)
    other = dataclasses.replace(other, train=dataclasses.replace(other.train, init_from=str(run)))
    messages = []
    again = train_and_evaluate(other, tmp_path / "again", log=messages.append)
    assert again["metrics"] == summary["metrics"]
    assert f"initialised from {run}" in messages
    wider = dataclasses.replace(other, model=dataclasses.replace(other.model, d_model=48))
    with pytest.raises(
        ConfigError, match=r"train.init_from: .* do not fit .*blocks/0/attn/out/kernel: saved \(32, 32\)"
    ):
        train_and_evaluate(wider, tmp_path / "wider", log=QUIET)


def test_a_checkpoint_of_an_older_run_still_resumes_and_initialises(tmp_path):
    """A checkpoint in the unnamed layout of older runs (<step>/default: the leaves of (params, opt_state)) resumes
    to the same final metrics as an uninterrupted run, and its parameters load alone; the next save is named."""
    from research.training.checkpoint import Checkpointer, _save_legacy

    config = tiny_config("nope", steps=4, checkpoint_every=2)
    reference = train_and_evaluate(config, tmp_path / "straight", log=QUIET)
    run = tmp_path / "old"  # the same run stopped after step 2, its checkpoint rewritten in the old layout
    shutil.copytree(tmp_path / "straight", run)
    (run / "summary.json").unlink()
    shutil.rmtree(run / "checkpoints" / "4")
    ckpt = Checkpointer(run / "checkpoints", async_save=False)
    state = ckpt.restore(2, fresh_state(config))
    ckpt.close()
    _save_legacy(tmp_path / "legacy", 2, state)
    shutil.rmtree(run / "checkpoints" / "2")
    shutil.move(tmp_path / "legacy" / "2", run / "checkpoints" / "2")
    assert sorted(p.name for p in (run / "checkpoints" / "2").iterdir() if p.is_dir()) == ["default"]
    ckpt = Checkpointer(run / "checkpoints", async_save=False)
    assert same(ckpt.restore_params(2, state[0]), state[0])
    ckpt.close()
    messages = []
    resumed = train_and_evaluate(config, run, log=messages.append)
    assert "resumed from checkpoint at step 2" in messages
    assert resumed["metrics"] == reference["metrics"]
    assert (run / "checkpoints" / "4" / "params").is_dir()


def test_export_reloads_into_a_model_with_the_trained_logits(trained, tmp_path):
    """model.safetensors holds the model's parameter paths; the model rebuilt from the export computes the same
    logits as the trained run's model (restored through the run's own loader); --step exports an earlier step."""
    from safetensors.numpy import load_file

    from research.analysis.trained import load_trained_model
    from research.positional.positions import contiguous
    from research.training.export import export_run, load_exported

    run, summary = trained
    out = export_run(run, tmp_path / "export", log=QUIET)
    meta = json.loads((out / "export.json").read_text())
    assert meta["step"] == 6 and meta["params"] == summary["params"] and meta["tokenizer"] == "byte"
    assert json.loads((out / "config.json").read_text()) == json.loads((run / "config.json").read_text())
    _, trained_model, _ = load_trained_model(run)
    arrays = load_file(out / "model.safetensors")
    assert sorted(arrays) == model_paths(nnx.state(trained_model))
    exported = load_exported(out)
    tokens = np.random.default_rng(0).integers(0, meta["vocab_size"], (2, 16), dtype=np.int32)
    pos = contiguous(2, 16)
    assert np.array_equal(exported(tokens, pos), trained_model(tokens, pos))
    earlier = load_file(export_run(run, tmp_path / "step4", step=4, log=QUIET) / "model.safetensors")
    assert sorted(earlier) == sorted(arrays)
    assert not np.array_equal(earlier["embedding/table"], arrays["embedding/table"])


def test_export_errors_are_one_line(trained, tmp_path, capsys):
    """scripts/export.py: not a run directory, a run without checkpoints, a missing step: one line, status 1."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from export import main

    run, _ = trained
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(run / "config.json", bare / "config.json")
    cases = [
        ([str(tmp_path / "nowhere")], r"nowhere is not a run directory \(no config.json\)"),
        ([str(bare)], r"bare has no checkpoint to export"),
        ([str(run), "--step", "5", "--out", str(tmp_path / "x")], r"no checkpoint at step 5; steps: 4, 6"),
    ]
    for argv, pattern in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert (
            len(err.splitlines()) == 1 and err.startswith("error: ") and __import__("re").search(pattern, err)
        )
    assert main([str(run), "--out", str(tmp_path / "ok")]) == 0
    assert (tmp_path / "ok" / "model.safetensors").is_file()
