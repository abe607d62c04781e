"""Extending the positional registry without editing it: schemes named by import path, and `per_layer`, which
composes registered (or imported) schemes layer by layer."""

from __future__ import annotations

import dataclasses
import math
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.config import Config, ConfigError, ModelConfig, parse_spec, resolve_spec
from research.model.build import resolve_model
from research.model.transformer import Transformer, parameter_counts
from research.positional import POSITIONAL, Dims
from research.positional.alibi import alibi_bias, alibi_slopes
from research.training.loop import train_and_evaluate, validate
from tests.fixtures.my_pe import CappedALiBiConfig, capped_alibi_bias

from .conftest import tiny_config

IMPORT_PATH = "tests.fixtures.my_pe:CappedALiBiConfig"
DIMS = Dims(d_model=16, num_heads=2, head_dim=8, num_layers=4, max_len=8)


def with_positional(config: Config, positional) -> Config:
    return dataclasses.replace(config, model=dataclasses.replace(config.model, positional=positional))


# --------------------------------------------------------------------------------- scheme by import path


def test_import_path_resolves_an_unregistered_scheme():
    assert all(POSITIONAL.get(name) is not CappedALiBiConfig for name in POSITIONAL.names())
    resolved = validate(tiny_config(IMPORT_PATH))
    assert isinstance(resolved.positional, CappedALiBiConfig) and resolved.positional.max_distance == 64
    # Options ride along as in any spec: `pkg.module:Attr@key=value`, or a dict.
    resolved = validate(with_positional(tiny_config(), parse_spec(f"{IMPORT_PATH}@max_distance=4")))
    assert resolved.positional.max_distance == 4
    with pytest.raises(ConfigError, match="max_distance >= 1"):
        validate(with_positional(tiny_config(), {"name": IMPORT_PATH, "max_distance": 0}))


@pytest.mark.parametrize(
    "name, message",
    [
        (
            "tests.fixtures.my_pee:CappedALiBiConfig",
            "model.positional: cannot import 'tests.fixtures.my_pee'",
        ),
        (
            "tests.fixtures.my_pe:CappedAlibiConfig",
            "module 'tests.fixtures.my_pe' has no 'CappedAlibiConfig'",
        ),
        ("capped_alibi", "unknown positional encoding 'capped_alibi'; valid choices: alibi, "),
    ],
)
def test_import_path_typos_are_clear(name, message):
    with pytest.raises(ConfigError, match=message):
        validate(tiny_config(name))


def test_a_module_anywhere_on_the_path(tmp_path, monkeypatch):
    """A user's own module, outside this repository, works the same way once it is importable."""
    (tmp_path / "my_study_pe.py").write_text(
        textwrap.dedent(
            """
            import dataclasses
            from research.positional.nope import NoPEConfig

            @dataclasses.dataclass(frozen=True, kw_only=True)
            class Mine(NoPEConfig):
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert type(validate(tiny_config("my_study_pe:Mine")).positional).__name__ == "Mine"


@pytest.mark.slow
def test_import_path_scheme_trains_end_to_end(tmp_path):
    summary = train_and_evaluate(tiny_config(IMPORT_PATH, steps=2), tmp_path, log=lambda m: None)
    metrics = summary["metrics"]
    assert metrics and all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    assert math.isfinite(metrics["test/len_32/bpb"])
    assert summary["params"]["positional"] == 0


def test_capped_alibi_reference():
    """The fixture's one reference test: a plain loop over the equation, and ALiBi when nothing is capped."""
    q_pos = jnp.asarray([[0, 1, 2, 3, 4, 5]], jnp.int32)
    slopes = alibi_slopes(3)
    got = np.asarray(capped_alibi_bias(q_pos, q_pos, slopes, max_distance=2))
    want = np.zeros((1, 3, 6, 6), np.float32)
    for h in range(3):
        for i in range(6):
            for j in range(6):
                want[0, h, i, j] = -float(slopes[h]) * min(abs(i - j), 2)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Nothing to cap: exactly ALiBi on every key a causal model sees (j <= i).
    nothing_capped = np.tril(capped_alibi_bias(q_pos, q_pos, slopes, max_distance=6))
    np.testing.assert_allclose(nothing_capped, np.tril(alibi_bias(q_pos, q_pos, slopes)), rtol=1e-6)


# ---------------------------------------------------------------------------------------------- per_layer


def per_layer(*pattern):
    return resolve_spec(POSITIONAL, {"name": "per_layer", "pattern": list(pattern)}, field="model.positional")


def _qk(seed=0, t=6):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(2, t, 2, 8)), jnp.float32)  # [B,T,H,D]
    k = jnp.asarray(rng.normal(size=(2, t, 2, 8)), jnp.float32)
    pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (2, t)) + 3
    return q, k, pos


def test_per_layer_dispatches_by_layer():
    """[rope, rope, rope, nope] (the default, as Llama 4): layers 0-2 rotate as RoPE, layer 3 does nothing, and the
    pattern repeats from layer 4."""
    config = POSITIONAL.get("per_layer")()
    assert [m.registered_name for m in config.members()] == ["rope", "rope", "rope", "nope"]
    pe = config.build(DIMS, rngs=nnx.Rngs(0))
    rope = POSITIONAL.get("rope")().build(DIMS, rngs=nnx.Rngs(0))
    q, k, pos = _qk()
    want_q, want_k = rope.rotate(q, k, pos, pos, layer=0)
    for layer in (0, 2, 4):
        got_q, got_k = pe.rotate(q, k, pos, pos, layer=layer)
        np.testing.assert_array_equal(got_q, want_q)
        np.testing.assert_array_equal(got_k, want_k)
    for layer in (3, 7):
        got_q, got_k = pe.rotate(q, k, pos, pos, layer=layer)
        np.testing.assert_array_equal(got_q, q)
        np.testing.assert_array_equal(got_k, k)
    assert len(pe.members) == 2  # equal entries share one module


def test_per_layer_local_and_global_bases_and_biases():
    pe = per_layer({"name": "rope", "base": 10000}, {"name": "rope", "base": 1000000}).build(
        DIMS, rngs=nnx.Rngs(0)
    )
    q, k, pos = _qk()
    slow = POSITIONAL.get("rope")(base=1e6).build(DIMS, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(
        pe.rotate(q, k, pos, pos, layer=1)[0], slow.rotate(q, k, pos, pos, layer=1)[0]
    )
    assert not np.allclose(pe.rotate(q, k, pos, pos, layer=0)[0], pe.rotate(q, k, pos, pos, layer=1)[0])
    biased = per_layer("alibi", "nope", IMPORT_PATH).build(
        DIMS, rngs=nnx.Rngs(0)
    )  # members by import path too
    np.testing.assert_allclose(biased.bias(pos, pos, layer=0), alibi_bias(pos, pos, alibi_slopes(2)))
    assert biased.bias(pos, pos, layer=1) is None
    capped = capped_alibi_bias(pos, pos, alibi_slopes(2), 64)
    np.testing.assert_allclose(biased.bias(pos, pos, layer=2), capped)


def test_per_layer_parameters_live_in_the_model_state():
    def model(*pattern):
        cfg = ModelConfig(
            d_model=16, num_layers=2, num_heads=2, positional={"name": "per_layer", "pattern": list(pattern)}
        )
        return Transformer(resolve_model(cfg, max_len=8, vocab_size=32), vocab_size=32, rngs=nnx.Rngs(0))

    shared = model("t5_bias", "rope", "t5_bias")
    assert parameter_counts(shared)["positional"] == 32 * 2  # one [num_buckets, H] table, shared
    two = model("t5_bias", {"name": "t5_bias", "num_buckets": 16}, "learned")
    params = nnx.state(two.positional, nnx.Param)
    assert sorted(x.shape for x in jax.tree.leaves(params)) == [(8, 16), (16, 2), (32, 2)]
    assert parameter_counts(two)["positional"] == 32 * 2 + 16 * 2 + 8 * 16
    tokens = jnp.zeros((1, 8), jnp.int32)
    pos = jnp.arange(8, dtype=jnp.int32)[None]
    graphdef, state = nnx.split(two)
    grads = jax.jit(jax.grad(lambda s: nnx.merge(graphdef, s)(tokens, pos).sum()))(state)
    # Every member's parameters are trained: t5 tables through layers 0 and 1, the learned table through embed.
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads["positional"]))


def test_per_layer_embeds_absolute_members_once():
    pe = per_layer("sinusoidal", "rope", "sinusoidal").build(DIMS, rngs=nnx.Rngs(0))
    sinusoidal = POSITIONAL.get("sinusoidal")().build(DIMS, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 6, 16))
    _, _, pos = _qk()
    np.testing.assert_allclose(pe.embed(x, pos), sinusoidal.embed(x, pos))


def test_per_layer_relative_only_if_every_member_is():
    assert POSITIONAL.get("per_layer")().relative is True
    assert per_layer("rope", "alibi", "t5_bias").relative is True
    assert per_layer("rope", "learned").relative is False


@pytest.mark.parametrize(
    "pattern, message",
    [
        (
            ["rope", "ropee"],
            r"model.positional.pattern\[1\]: unknown positional encoding 'ropee'; valid choices",
        ),
        (
            ["nope", {"name": "rope", "bass": 1}],
            r"model.positional.pattern\[1\]: 'rope' has no option\(s\) \['bass'\]",
        ),
        (
            [{"name": "t5_bias", "num_buckets": 1}],
            r"model.positional.pattern\[0\]: t5_bias: expected num_buckets",
        ),
        ([], r"model.positional.pattern: expected at least one scheme spec"),
    ],
)
def test_per_layer_errors_name_the_entry(pattern, message):
    config = with_positional(tiny_config(), {"name": "per_layer", "pattern": pattern})
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_per_layer_member_errors_from_dims_and_eval():
    odd_heads = dataclasses.replace(tiny_config().model, d_model=12, num_heads=4)  # head_dim 3
    config = dataclasses.replace(tiny_config(), model=odd_heads)
    with pytest.raises(
        ConfigError, match=r"model.positional.pattern\[0\]: rope: expected head_dim divisible by 2"
    ):
        validate(with_positional(config, {"name": "per_layer", "pattern": ["rope", "nope"]}))
    bad_eval = dataclasses.replace(
        tiny_config(), eval=dataclasses.replace(tiny_config().eval, positional=parse_spec("per_layer"))
    )
    validate(bad_eval)  # the default pattern is valid at evaluation too
    bad_eval = dataclasses.replace(
        bad_eval, eval=dataclasses.replace(bad_eval.eval, positional={"name": "per_layer", "pattern": ["x"]})
    )
    with pytest.raises(ConfigError, match=r"eval.positional.pattern\[0\]: unknown positional encoding 'x'"):
        validate(bad_eval)


def test_per_layer_from_the_command_line():
    spec = parse_spec('{"name": "per_layer", "pattern": ["rope", "rope:base=500", "nope"]}')
    config = resolve_spec(POSITIONAL, spec, field="model.positional")
    assert [m.registered_name for m in config.members()] == ["rope", "rope", "nope"]
    assert config.members()[1].base == 500.0
