"""Bad input fails early, naming the field and the valid choices, before any compilation."""

from __future__ import annotations

import dataclasses

import pytest

from research.config import Config, ConfigError, from_dict, leaf_fields, parse_spec, replace_path, to_dict
from research.specs import is_spec_type
from research.training.loop import validate

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


def test_saved_configs_without_a_later_field_keep_its_old_default():
    """train.loss_chunk became 1024 after runs had been saved without the field (then the plain loss, 0): such a
    config reads back as 0, a config that names the field keeps it, and a new config takes the new default."""
    from research.config import LEGACY_DEFAULTS, differences

    assert LEGACY_DEFAULTS["train.loss_chunk"] == 0 and Config().train.loss_chunk == 1024
    saved = to_dict(Config())
    del saved["train"]["loss_chunk"]
    old = from_dict(Config, saved)
    assert old.train.loss_chunk == 0
    assert differences(old, Config()) == ["train.loss_chunk"]
    assert from_dict(Config, to_dict(Config())).train.loss_chunk == 1024
    assert differences(to_dict(Config()), Config()) == []


def test_round_trip_and_spec_syntax():
    config = tiny_config("alibi")
    assert from_dict(Config, to_dict(config)) == config
    assert parse_spec("rope:base=500,interleaved=true") == {"name": "rope", "base": 500, "interleaved": True}
    assert parse_spec('{"name": "t5_bias", "num_buckets": 16}')["num_buckets"] == 16
    assert dataclasses.is_dataclass(config)


def test_help_shows_what_to_write_and_every_registered_name():
    """--help names each field's form (SPEC, {choices}, INT, true|false, lists) and, for a SPEC field, every name
    registered in its registry (so a new scheme shows up without editing the help)."""
    from research.positional import POSITIONAL
    from research.studies.cli import SPEC_REGISTRIES, build_parser
    from research.tokenization import TOKENIZERS

    text = " ".join(build_parser("train").format_help().split())
    for form in ("--model.positional SPEC", "--data.tokenizer SPEC", "--train.compute_dtype {float32,bfloat16}",
                 "--data.train_docs [FLOAT,FLOAT]", "--model.scan_layers [true|false]", "--config CONFIG_JSON"):  # fmt: skip
        assert form in text, form
    for name in (*POSITIONAL.names(), *TOKENIZERS.names()):
        assert f" {name}," in text or f" {name}." in text, name
    assert set(SPEC_REGISTRIES) == {p for p, h, _ in leaf_fields(Config) if is_spec_type(h)}


def test_tracking_fields_never_make_a_run_another_run(tmp_path):
    """Switching TensorBoard or W&B for a run directory (or a --reuse) is not a different config."""
    from research.config import result_differences
    from research.training.rundir import check_config, prepare_workdir

    config = tiny_config()
    prepare_workdir(config, tmp_path)
    tracked = replace_path(replace_path(config, "train.tensorboard", False), "train.wandb", "proj")
    assert result_differences(config, tracked) == []
    check_config(tracked, tmp_path)  # accepted
    with pytest.raises(ConfigError, match="train.steps"):
        check_config(replace_path(config, "train.steps", 7), tmp_path)
