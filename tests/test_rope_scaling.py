"""RoPE options: context scaling methods against numpy ports of Hugging Face's `modeling_rope_utils.py` formulas,
the REFERENCES check values, partial rotary, and the config errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.config import ConfigError, ModelConfig, resolve_spec
from research.model.build import resolve_model
from research.positional import POSITIONAL, Dims
from research.positional.rope import RoPEConfig, apply_rope, rope_frequencies, rope_parameters
from research.positional.rope_scaling import ROPE_SCALING, YaRN

DIMS = Dims(d_model=32, num_heads=4, head_dim=8, num_layers=2, max_len=16)

# ------------------------------------------------------------- numpy ports of HF's formulas (float64)


def hf_default(dim, base):
    return 1.0 / base ** (np.arange(0, dim, 2) / dim)


def hf_linear(dim, base, factor):
    return hf_default(dim, base) / factor


def hf_ntk(dim, base, factor):
    return hf_default(dim, base * factor ** (dim / (dim - 2)))


def hf_dynamic(dim, base, factor, l0, seq_len):
    seq_len = seq_len if seq_len > l0 else l0
    return hf_default(dim, base * (factor * seq_len / l0 - (factor - 1)) ** (dim / (dim - 2)))


def hf_yarn(dim, base, factor, l0, beta_fast=32, beta_slow=1, truncate=True):
    def corr(rot):
        return dim * math.log(l0 / (rot * 2 * math.pi)) / (2 * math.log(base))

    low, high = corr(beta_fast), corr(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2) - low) / (high - low), 0, 1)
    extrapolation_factor = 1 - ramp
    pos = base ** (np.arange(0, dim, 2) / dim)
    inv = (1 / (factor * pos)) * (1 - extrapolation_factor) + (1 / pos) * extrapolation_factor
    return inv, 0.1 * math.log(factor) + 1.0


def hf_llama3(dim, base, factor, low_ff, high_ff, l0):
    inv = hf_default(dim, base)
    wavelen = 2 * math.pi / inv
    out = np.where(wavelen > l0 / low_ff, inv / factor, inv)
    smooth = (l0 / wavelen - low_ff) / (high_ff - low_ff)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < l0 / high_ff) & ~(wavelen > l0 / low_ff)
    return np.where(medium, smoothed, out)


def hf_proportional(head_dim, base, p, factor=1.0):
    angles = int(p * head_dim // 2)
    rotated = 1.0 / base ** (np.arange(0, 2 * angles, 2) / head_dim)
    return np.concatenate([rotated, np.zeros(head_dim // 2 - angles)]) / factor


def hf_longrope(dim, base, short, long, max_len, l0, seq_len):
    factor = max_len / l0
    attention = math.sqrt(1 + math.log(factor) / math.log(l0)) if factor > 1 else 1.0
    ext = np.asarray(long if seq_len and seq_len > l0 else short)
    return 1.0 / (ext * base ** (np.arange(0, dim, 2) / dim)), attention


def _scaled(dim, base, spec, length=None):
    inv, factor = rope_parameters(dim, base, resolve_spec(ROPE_SCALING, spec, field="test"), length=length)
    assert inv.dtype == jnp.float32 and inv.shape == (dim // 2,)
    return np.asarray(inv), factor


# ------------------------------------------------------------------------------ frequencies vs HF

PARAMS = [(8, 10000.0), (64, 10000.0), (128, 500000.0)]


@pytest.mark.parametrize("dim, base", PARAMS)
@pytest.mark.parametrize("factor", [1.0, 2.0, 16.0])
def test_linear_and_ntk_match_hf(dim, base, factor):
    inv, att = _scaled(dim, base, {"name": "linear", "factor": factor})
    np.testing.assert_allclose(inv, hf_linear(dim, base, factor), rtol=1e-6)
    assert att == 1.0
    inv, att = _scaled(dim, base, {"name": "ntk", "factor": factor})
    np.testing.assert_allclose(inv, hf_ntk(dim, base, factor), rtol=1e-6)
    assert att == 1.0


@pytest.mark.parametrize("dim, base", PARAMS)
@pytest.mark.parametrize("factor, l0", [(2.0, 64), (8.0, 4096)])
def test_dynamic_ntk_matches_hf_and_only_changes_past_l0(dim, base, factor, l0):
    spec = {"name": "dynamic_ntk", "factor": factor, "original_max_len": l0}
    plain = hf_default(dim, base)
    for length in (1, l0 // 2, l0):
        np.testing.assert_allclose(_scaled(dim, base, spec, length)[0], plain, rtol=1e-6)
    for length in (l0 + 1, 3 * l0, 16 * l0):
        inv = _scaled(dim, base, spec, length)[0]
        np.testing.assert_allclose(inv, hf_dynamic(dim, base, factor, l0, length), rtol=1e-6)
        if factor > 1:
            assert inv[-1] < plain[-1]  # slowest pair slowed down
    np.testing.assert_allclose(inv[0], plain[0], rtol=1e-6)  # fastest pair (theta_0 = 1) never moves


@pytest.mark.parametrize("dim, base", PARAMS)
@pytest.mark.parametrize("factor, l0", [(2.0, 64), (16.0, 4096), (4.0, 2048)])
@pytest.mark.parametrize("truncate", [True, False])
def test_yarn_matches_hf(dim, base, factor, l0, truncate):
    spec = {"name": "yarn", "factor": factor, "original_max_len": l0, "truncate": truncate}
    inv, att = _scaled(dim, base, spec)
    ref_inv, ref_att = hf_yarn(dim, base, factor, l0, truncate=truncate)
    np.testing.assert_allclose(inv, ref_inv, rtol=1e-6)
    assert att == pytest.approx(ref_att if factor > 1 else 1.0)


def test_yarn_check_values_and_options():
    yarn = YaRN(factor=16.0, original_max_len=4096)
    assert yarn.correction_range(128, 1e4) == (20, 46)
    inv, att = yarn.parameters(128, 1e4)
    assert att == pytest.approx(1.2773, abs=1e-4)
    theta = hf_default(128, 1e4)
    np.testing.assert_allclose(inv[:21], theta[:21], rtol=1e-6)  # pairs <= low: extrapolated (unchanged)
    np.testing.assert_allclose(inv[46:], theta[46:] / 16, rtol=1e-6)  # pairs >= high: interpolated
    assert YaRN(factor=16.0, original_max_len=4096, attention_factor=1.5).parameters(128, 1e4)[1] == 1.5
    low, high = YaRN(factor=16.0, original_max_len=4096, truncate=False).correction_range(128, 1e4)
    assert 20 < low < 21 and 45 < high < 46


@pytest.mark.parametrize(
    "dim, base, factor, low_ff, high_ff, l0",
    [
        (128, 500000.0, 8.0, 1.0, 4.0, 8192),
        (64, 10000.0, 4.0, 1.0, 4.0, 256),
        (32, 10000.0, 2.0, 2.0, 8.0, 64),
    ],
)
def test_llama3_matches_hf(dim, base, factor, low_ff, high_ff, l0):
    spec = {"name": "llama3", "factor": factor, "low_freq_factor": low_ff, "high_freq_factor": high_ff}
    inv, att = _scaled(dim, base, {**spec, "original_max_len": l0})
    np.testing.assert_allclose(inv, hf_llama3(dim, base, factor, low_ff, high_ff, l0), rtol=1e-6)
    assert att == 1.0


def test_llama3_check_counts_with_defaults():
    inv, _ = _scaled(128, 500000.0, {"name": "llama3"})  # factor 8, 1, 4, L0 8192 are the defaults
    theta = hf_default(128, 500000.0)
    kept = np.isclose(inv, theta, rtol=1e-6)
    divided = np.isclose(inv, theta / 8, rtol=1e-6)
    assert (kept.sum(), divided.sum(), (~kept & ~divided).sum()) == (29, 29, 6)
    assert kept[:29].all() and divided[-29:].all()  # fast pairs kept, slow ones divided, a band between


@pytest.mark.parametrize("dim, base", PARAMS)
@pytest.mark.parametrize("p, factor", [(0.25, 1.0), (0.5, 2.0), (1.0, 1.0), (0.0, 1.0), (0.3, 1.0)])
def test_proportional_matches_hf(dim, base, p, factor):
    inv, att = _scaled(dim, base, {"name": "proportional", "p": p, "factor": factor})
    np.testing.assert_allclose(inv, hf_proportional(dim, base, p, factor), rtol=1e-6)
    rotating = int(p * dim // 2)
    assert (inv[rotating:] == 0).all() and (inv[:rotating] > 0).all() and att == 1.0


@pytest.mark.parametrize("dim, base, max_len, l0", [(8, 10000.0, 64, 16), (64, 10000.0, 131072, 4096)])
def test_longrope_matches_hf(dim, base, max_len, l0):
    rng = np.random.default_rng(dim)
    short, long = rng.uniform(1, 2, dim // 2).tolist(), rng.uniform(1, 40, dim // 2).tolist()
    spec = {"name": "longrope", "short_factor": short, "long_factor": long, "max_len": max_len}
    for length in (1, l0, l0 + 1, 4 * l0):
        inv, att = _scaled(dim, base, {**spec, "original_max_len": l0}, length)
        ref_inv, ref_att = hf_longrope(dim, base, short, long, max_len, l0, length)
        np.testing.assert_allclose(inv, ref_inv, rtol=1e-6)
        assert att == pytest.approx(ref_att)


def test_rope_frequencies_accepts_a_spec():
    np.testing.assert_allclose(
        rope_frequencies(8, 100.0, scaling={"name": "linear", "factor": 4.0}),
        hf_default(8, 100.0) / 4,
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="original_max_len"):  # None = training length, unknown here
        rope_frequencies(8, scaling={"name": "yarn", "factor": 4.0})


# ----------------------------------------------------------------------------------- the module


def _np_rope(x, pos, inv_freq, interleaved, scale=1.0):
    """Rotation of each (a, b) pair of the first 2 * len(inv_freq) features, pair by pair; the rest kept."""
    out = np.array(x, dtype=np.float64)
    r = 2 * len(inv_freq)
    for k, f in enumerate(inv_freq):
        ang = pos[:, :, None] * f  # [B,T,1]
        ia, ib = (2 * k, 2 * k + 1) if interleaved else (k, k + r // 2)
        a, b = x[..., ia], x[..., ib]
        out[..., ia] = scale * (a * np.cos(ang) - b * np.sin(ang))
        out[..., ib] = scale * (b * np.cos(ang) + a * np.sin(ang))
    return out


def _rotate(config, q, k, q_pos, k_pos, dims=DIMS):
    config.validate(dims)
    module = config.build(dims, rngs=nnx.Rngs(0))
    return jax.jit(lambda *a: module.rotate(*a, layer=0))(q, k, q_pos, k_pos)


def _qk(t, d=8, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(2, t, 4, d)).astype(np.float32)
    k = rng.normal(size=(2, t, 2, d)).astype(np.float32)
    pos = np.arange(t)[None] + np.array([[0], [5]])
    return q, k, pos


@pytest.mark.parametrize("interleaved", [False, True])
def test_partial_rotary_rotates_the_head_and_keeps_the_tail(interleaved):
    q, k, pos = _qk(6, d=16)
    dims = Dims(d_model=64, num_heads=4, head_dim=16, num_layers=1, max_len=16)
    config = RoPEConfig(fraction=0.3, interleaved=interleaved)  # int(0.3 * 16) = 4 features rotate
    assert config.rot_dim(16) == 4
    rq, rk = _rotate(config, q, k, pos, pos, dims)
    np.testing.assert_array_equal(rq[..., 4:], q[..., 4:])
    np.testing.assert_array_equal(rk[..., 4:], k[..., 4:])
    inv = 10000.0 ** (-np.arange(0, 4, 2) / 4)  # theta over the rotary dim, as GPT-NeoX
    np.testing.assert_allclose(rq, _np_rope(q, pos, inv, interleaved), atol=1e-5)
    np.testing.assert_allclose(rk, _np_rope(k, pos, inv, interleaved), atol=1e-5)
    assert not np.allclose(rq[:, 1:, :, :4], q[:, 1:, :, :4], atol=1e-3)


def test_apply_rope_checks_rot_dim():
    x = jnp.zeros((1, 2, 1, 8))
    with pytest.raises(ValueError, match="rot_dim"):
        apply_rope(x, jnp.zeros((1, 2)), rope_frequencies(8), rot_dim=4)
    with pytest.raises(ValueError, match="rot_dim"):
        apply_rope(x, jnp.zeros((1, 2)), rope_frequencies(4))  # 4 features, 8 given, rot_dim not said


def test_scaled_module_uses_static_length_and_attention_factor():
    """yarn with L0 = training length 16, at length 32: rotation by the yarn frequencies, cos/sin x factor; the
    dot product still depends only on the offset."""
    q, k, pos = _qk(32)
    config = RoPEConfig(scaling={"name": "yarn", "factor": 4.0})
    rq, rk = _rotate(config, q, k, pos, pos)
    inv, att = hf_yarn(8, 10000.0, 4.0, DIMS.max_len)
    np.testing.assert_allclose(rq, _np_rope(q, pos, inv, False, att), atol=1e-5)
    rq2, rk2 = _rotate(config, q, k, pos + 100, pos + 100)
    logits = lambda a, b: np.einsum("bthd,bshd->bhts", a, np.repeat(b, 2, axis=2))
    np.testing.assert_allclose(logits(rq2, rk2), logits(rq, rk), atol=1e-4)


def test_dynamic_ntk_module_is_plain_rope_up_to_the_training_length():
    q, k, pos = _qk(16)
    plain = _rotate(RoPEConfig(), q, k, pos, pos)
    dyn = RoPEConfig(scaling={"name": "dynamic_ntk", "factor": 2.0})  # L0 = 16 = DIMS.max_len
    np.testing.assert_allclose(_rotate(dyn, q, k, pos, pos)[0], plain[0], atol=1e-6)
    q, k, pos = _qk(48)  # the static length (48 > 16) switches scaling on, whatever the position values
    rq = _rotate(dyn, q, k, pos, pos)[0]
    np.testing.assert_allclose(rq, _np_rope(q, pos, hf_dynamic(8, 10000.0, 2.0, 16, 48), False), atol=1e-5)
    assert not np.allclose(rq, _rotate(RoPEConfig(), q, k, pos, pos)[0], atol=1e-3)


def test_scaling_adds_no_parameters_and_parses_from_the_command_line():
    """What `eval.positional` relies on: `rope:scaling=...` takes exactly the parameters of plain `rope` (none)."""
    config = resolve_spec(POSITIONAL, "rope:scaling=yarn:factor=4", field="model.positional")
    assert config.scaling == {"name": "yarn", "factor": 4}
    module = config.build(DIMS, rngs=nnx.Rngs(0))
    assert module.scaling == YaRN(factor=4.0, original_max_len=DIMS.max_len)  # bound to the training length
    plain = RoPEConfig().build(DIMS, rngs=nnx.Rngs(0))
    assert jax.tree.structure(nnx.state(module)) == jax.tree.structure(nnx.state(plain))
    assert jax.tree.leaves(nnx.state(module)) == []
    longrope = {"name": "longrope", "max_len": 64, "short_factor": [1.0] * 4, "long_factor": [2.0] * 4}
    model = ModelConfig(d_model=32, num_heads=4, positional={"name": "rope", "scaling": longrope})
    assert resolve_model(model, max_len=16).positional.resolved_scaling().long_factor == (2.0,) * 4


# ---------------------------------------------------------------------------------------- errors


def test_unknown_scaling_lists_the_valid_names():
    with pytest.raises(ConfigError) as e:
        RoPEConfig(scaling={"name": "bogus"}).validate(DIMS)
    assert "model.positional.scaling" in str(e.value)
    assert ", ".join(ROPE_SCALING.names()) in str(e.value)
    assert ROPE_SCALING.names() == [
        "dynamic_ntk",
        "linear",
        "llama3",
        "longrope",
        "ntk",
        "proportional",
        "yarn",
    ]
    with pytest.raises(ConfigError, match="valid choices"):
        resolve_model(ModelConfig(positional="rope:scaling=bogus"), max_len=16)


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"name": "linear", "factor": 0.5}, "rope.scaling.factor"),
        ({"name": "yarn", "factor": 0.9}, "rope.scaling.factor"),
        ({"name": "yarn", "factor": 2.0, "beta_fast": 0.5}, "rope.scaling.beta_fast"),
        ({"name": "llama3", "high_freq_factor": 0.5}, "rope.scaling.high_freq_factor"),
        ({"name": "proportional", "p": 1.5}, "rope.scaling.p"),
        ({"name": "dynamic_ntk", "factor": 2.0, "original_max_len": 0}, "rope.scaling.original_max_len"),
        ({"name": "linear"}, "factor"),  # required
        ({"name": "linear", "factor": 2.0, "fator": 3}, "fator"),  # unknown option
    ],
)
def test_bad_scaling_options_name_the_field(spec, field):
    with pytest.raises(ConfigError, match=field):
        RoPEConfig(scaling=spec).validate(DIMS)


def test_bad_fraction_and_factor_lengths():
    with pytest.raises(ValueError, match="rope.fraction"):
        RoPEConfig(fraction=0.1).validate(DIMS)  # int(0.8) = 0 rotated features
    with pytest.raises(ValueError, match="rope.fraction"):
        RoPEConfig(fraction=1.5).validate(DIMS)
    longrope = {"name": "longrope", "max_len": 64, "short_factor": [1.0] * 4, "long_factor": [1.0] * 4}
    RoPEConfig(scaling=longrope).validate(DIMS)  # 4 pairs for head_dim 8
    with pytest.raises(ValueError, match="rope.scaling.short_factor"):
        RoPEConfig(scaling=longrope, fraction=0.5).validate(DIMS)  # 2 pairs when half the head rotates


def test_pair_plan_names_what_each_pair_gets():
    """scripts/rope_plan.py's table: YaRN's defaults on a 32-wide head trained at 64 tokens keep only the fastest
    pair (none turns 32 times); on Llama's 128-wide head at 4096 they keep the pairs turning >= 32 times."""
    from research.positional.rope_scaling import YaRN, pair_plan

    plain = pair_plan(None, 32, 10000.0, 64)
    assert {r["status"] for r in plain} == {"kept"} and plain[0]["turns_in_training"] == pytest.approx(
        64 / (2 * math.pi)
    )
    small = pair_plan(YaRN(factor=8.0), 32, 10000.0, 64)
    assert [r["status"] for r in small[:2]] == ["kept", "ramp"] and small[-1]["status"] == "interpolated"
    assert small[0]["attention_factor"] == pytest.approx(0.1 * math.log(8) + 1)
    assert small[-1]["frequency_ratio"] == pytest.approx(1 / 8, rel=1e-5)
    llama = pair_plan(YaRN(factor=8.0), 128, 10000.0, 4096)
    kept = [r for r in llama if r["status"] == "kept"]
    assert len(kept) >= 20 and all(r["turns_in_training"] > 30 for r in kept)
    derived = pair_plan(YaRN(factor=8.0, beta_fast=2.0), 32, 10000.0, 64)
    assert [r["status"] for r in derived[:4]] == ["kept", "kept", "kept", "ramp"]


def test_rope_plan_cli(capsys):
    import sys

    sys.path.insert(0, "scripts")
    from rope_plan import main

    assert main(["--head-dim", "32", "--train-len", "64", "--scaling", "yarn:factor=8,beta_fast=2"]) == 0
    out = capsys.readouterr().out
    assert "attention factor 1.208" in out and out.count("kept") == 3
    assert main(["--head-dim", "32", "--train-len", "64", "--scaling", "yarn:factor=0.5"]) == 2
