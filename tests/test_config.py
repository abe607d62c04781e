"""Bad input fails early, naming the field and the valid choices, before any compilation."""

from __future__ import annotations

import dataclasses

import pytest

from research.config import Config, ConfigError, from_dict, parse_spec, replace_path, to_dict
from research.train import validate

from .conftest import tiny_config


def with_(config, path, value):
    return replace_path(config, path, value)


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("model.positional", "rotary", "valid choices: alibi"),
        ("data.corpus", "wikipedia", "valid choices:"),
        ("data.tokenizer", "wordpiece", "valid choices:"),
        ("model.positional", "rope:bass=5", "valid options"),
        ("model.d_model", 30, "model.d_model: expected a multiple of model.num_heads=4, got 30"),
        ("train.steps", 0, "train.steps"),
    ],
)
def test_bad_config_is_one_clear_error(path, value, expected):
    config = with_(tiny_config(), path, value)
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        validate(config)


def test_odd_head_dim_with_rope():
    config = with_(with_(tiny_config(), "model.d_model", 36), "model.num_heads", 4)  # head_dim 9
    with pytest.raises(ConfigError, match="head_dim"):
        validate(config)


def test_missing_corpus_file(tmp_path):
    config = with_(tiny_config(), "data.corpus", {"name": "text", "path": str(tmp_path / "nope.txt")})
    with pytest.raises(ConfigError, match="nope.txt"):
        validate(config)


def test_unknown_field_and_wrong_type():
    with pytest.raises(ConfigError, match="unknown config field"):
        replace_path(Config(), "train.stepz", 3)
    with pytest.raises(ConfigError, match="train.steps: expected an integer"):
        replace_path(Config(), "train.steps", "many")


def test_round_trip_and_spec_syntax():
    config = tiny_config("alibi")
    assert from_dict(Config, to_dict(config)) == config
    assert parse_spec("rope:base=500,interleaved=true") == {"name": "rope", "base": 500, "interleaved": True}
    assert parse_spec('{"name": "t5_bias", "num_buckets": 16}')["num_buckets"] == 16
    assert dataclasses.is_dataclass(config)
