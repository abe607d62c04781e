"""Shared fixtures. Tests never read ../shared; data comes from gensim's bundled test data or is generated."""

from __future__ import annotations

import dataclasses

import pytest

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
