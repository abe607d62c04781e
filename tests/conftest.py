"""Shared fixtures. Tests never read ../shared; data comes from gensim's bundled test data or is generated.

Compiled programs are shared across tests, test processes and the runs tests start as subprocesses through JAX's
persistent compilation cache (under the project's cache folder, research/runtime/cache.py): many tests compile the
same tiny models, and the suite is bound by XLA compiling, not by running. Set JAX_COMPILATION_CACHE_DIR to
another folder (or to an empty string, for none) to override.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from research.runtime.cache import cache_dir

# Before anything imports jax: jax reads these when it starts, and subprocesses inherit them.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache_dir() / "jax-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

from research.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig


def tiny_config(positional: str = "rope", **train) -> Config:
    """A run that trains in seconds on the default corpus."""
    return Config(
        seed=0,
        data=DataConfig(seq_len=16, batch_size=4, max_eval_bytes=3_000),
        model=ModelConfig(d_model=32, num_layers=2, num_heads=4, positional={"name": positional}),
        train=dataclasses.replace(
            TrainConfig(steps=6, warmup_steps=2, log_every=1, eval_every=3, checkpoint_every=2), **train
        ),
        eval=EvalConfig(length_multipliers=(1, 2), batch_size=4, valid_max_windows=4),
    )


@pytest.fixture
def tiny():
    return tiny_config


class Interrupt(Exception):
    """Raised from a log callback to stop a run mid-way, as a kill would."""


def check_resume_equivalence(
    config: Config, tmp_path, *, crash_step: int = 5, checkpoint_step: int = 4
) -> None:
    """Interrupt a run at `crash_step`, rerun it on the same workdir: it resumes from `checkpoint_step`, ends with
    the uninterrupted run's metrics bit for bit, and metrics.jsonl has every step once."""
    from research.training.loop import train_and_evaluate
    from research.training.metrics import read_jsonl

    reference = train_and_evaluate(config, tmp_path / "straight", log=lambda m: None)

    def crash(message):
        if message.startswith(f"step {crash_step}/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_and_evaluate(config, tmp_path / "killed", log=crash)
    assert not (tmp_path / "killed" / "summary.json").exists()  # a sweep would not take it for finished
    messages = []
    resumed = train_and_evaluate(config, tmp_path / "killed", log=messages.append)
    assert f"resumed from checkpoint at step {checkpoint_step}" in messages
    assert resumed["metrics"] == reference["metrics"]  # bitwise: same batches, same compiled steps
    steps = [r["step"] for r in read_jsonl(tmp_path / "killed" / "metrics.jsonl")]
    assert steps == list(range(1, config.train.steps + 1))  # no duplicated or missing steps
