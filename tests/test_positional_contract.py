"""Registry-wide contract of positional encodings: every name in POSITIONAL (and POSITIONS) is covered for free.

The forward pass below is the transformer's use of the hooks in miniature: embed -> project to q/k -> rotate ->
logits / sqrt(D) + bias. Grouped-query shapes (K = 2 kv heads for H = 4) check that rotate accepts K != H.
Every scheme is built from its config defaults (so a default must be a working scheme: `per_layer` defaults to
[rope, rope, rope, nope]); `relative` is read from the config instance, since a composite scheme computes it.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.config import ModelConfig, resolve_spec
from research.model.build import resolve_model
from research.model.transformer import Transformer
from research.positional import POSITIONAL, POSITIONS, Dims

# Schemes that live outside the package, named by import path: the suite covers them like registered ones.
EXTERNAL = ["tests.fixtures.my_pe:CappedALiBiConfig"]
SCHEMES = POSITIONAL.names() + EXTERNAL

DIMS = Dims(d_model=32, num_heads=4, head_dim=8, num_layers=2, max_len=16)
B, H, K, D, E = 2, DIMS.num_heads, 2, DIMS.head_dim, DIMS.d_model


@functools.cache  # one build and one jit cache per scheme, shared by the tests below to keep compiles few
def _forward(name):
    """(jitted forward(state, ...), state, trace list) for the scheme registered as `name`."""
    config = POSITIONAL.get(name)()
    config.validate(DIMS)
    graphdef, state = nnx.split(config.build(DIMS, rngs=nnx.Rngs(0)))
    traces = []

    @jax.jit
    def forward(state, xq, xk, wq, wk, q_pos, k_pos):
        traces.append(1)  # runs only while tracing
        module = nnx.merge(graphdef, state)
        hq, hk = module.embed(xq, q_pos), module.embed(xk, k_pos)  # [B,T,E], [B,S,E]
        q = (hq @ wq.astype(hq.dtype)).reshape(*hq.shape[:2], H, D)  # [B,T,H,D]
        k = (hk @ wk.astype(hk.dtype)).reshape(*hk.shape[:2], K, D)  # [B,S,K,D]
        q, k = module.rotate(q, k, q_pos, k_pos, layer=1)
        bias = module.bias(q_pos, k_pos, layer=1, q=q, k=k)
        k_heads = jnp.repeat(k, H // K, axis=2).astype(jnp.float32)  # [B,S,H,D]
        logits = jnp.einsum("bthd,bshd->bhts", q.astype(jnp.float32), k_heads) / math.sqrt(D)
        if bias is not None:
            logits = logits + bias  # [B,H,T,S]
        return hq, q, k, bias, logits

    return forward, state, traces


def _inputs(t, s, dtype, seed=0):
    rng = np.random.default_rng(seed)
    xk = jnp.asarray(rng.normal(size=(B, s, E)), dtype)
    wq = jnp.asarray(rng.normal(size=(E, H * D)) / math.sqrt(E), jnp.float32)
    wk = jnp.asarray(rng.normal(size=(E, K * D)) / math.sqrt(E), jnp.float32)
    k_pos = jnp.arange(s, dtype=jnp.int32)[None] + jnp.array([[0], [3]], jnp.int32)  # rows start at 0 and 3
    return xk[:, -t:], xk, wq, wk, k_pos[:, -t:], k_pos  # queries are the last t keys (as when decoding)


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize(
    "t, s, dtype",
    [(16, 16, jnp.float32), (64, 64, jnp.float32), (16, 16, jnp.bfloat16), (4, 16, jnp.float32)],
    ids=["train_len", "4x_train_len", "bf16", "t_lt_s"],  # 4x: evaluation past the training length
)
def test_hook_shapes_and_dtypes(name, t, s, dtype):
    forward, state, _ = _forward(name)
    hq, q, k, bias, logits = forward(state, *_inputs(t, s, dtype))
    assert hq.shape == (B, t, E) and hq.dtype == dtype
    assert q.shape == (B, t, H, D) and q.dtype == dtype
    assert k.shape == (B, s, K, D) and k.dtype == dtype
    if bias is not None:
        assert bias.ndim == 4 and bias.shape[0] in (1, B) and bias.shape[1:] == (H, t, s)
        assert bias.dtype == jnp.float32
        assert bool(jnp.isfinite(bias).all())
    assert bool(jnp.isfinite(logits).all())


@pytest.mark.parametrize("name", SCHEMES)
def test_bf16_rotation_tracks_float32(name):
    forward, state, _ = _forward(name)
    *_, logits32 = forward(state, *_inputs(16, 16, jnp.float32))
    *_, logits16 = forward(state, *_inputs(16, 16, jnp.bfloat16))
    np.testing.assert_allclose(logits16, logits32, atol=0.15)  # bf16 inputs, float32 angles


@pytest.mark.parametrize("name", SCHEMES)
def test_jit_once_and_shift_behaviour(name):
    forward, state, traces = _forward(name)
    xq, xk, wq, wk, q_pos, k_pos = _inputs(16, 16, jnp.float32)
    *_, before = forward(state, xq, xk, wq, wk, q_pos, k_pos)
    traced = len(traces)  # the cache may already hold this shape from another test; count from here
    *_, after = forward(state, xq, xk, wq, wk, q_pos + 7, k_pos + 7)
    forward(state, xq * 2, xk * 2, wq, wk, q_pos + 1, k_pos + 1)
    assert len(traces) == traced, "new values of the same shapes must not retrace"
    if POSITIONAL.get(name)().relative:
        np.testing.assert_allclose(after, before, atol=1e-5)
    else:
        assert not np.allclose(after, before, atol=1e-3), "absolute scheme ignored its positions"


# Options a sampler needs beyond its defaults (interpolated must be told the training length).
SAMPLER_OPTIONS = {"interpolated": {"train_len": 10}}


@pytest.mark.parametrize("name", POSITIONS.names())
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("length", [10, 20])  # the training length, and 2x it (evaluation beyond it)
def test_position_samplers(name, train, length):
    sampler = resolve_spec(
        POSITIONS, {"name": name, **SAMPLER_OPTIONS.get(name, {})}, field="model.positions"
    )
    sampler.validate(10)
    pos = sampler.sample(3, length, key=jax.random.key(0), train=train)
    assert pos.shape in ((3, length), (1, length))  # [1,T]: the same positions for every row
    assert pos.dtype == jnp.int32 or (sampler.fractional and pos.dtype == jnp.float32), pos.dtype
    assert bool((pos >= 0).all())
    assert bool((jnp.diff(pos, axis=-1) > 0).all()), "positions must increase along the sequence"


# ------------------------------------------------------------------------------- no silent no-op
VOCAB, T = 32, 8


def _tiny_model(name: str, base: Transformer | None = None) -> Transformer:
    """A 2-layer, d=16 model with `name` as its scheme; with `base`, every non-positional parameter is copied from
    it, so that the positional encoding is the only difference (parameterised schemes draw from the same Rngs and
    would otherwise shift every later initialiser)."""
    cfg = ModelConfig(d_model=16, num_layers=2, num_heads=2, positional={"name": name})
    model = Transformer(resolve_model(cfg, max_len=T, vocab_size=VOCAB), vocab_size=VOCAB, rngs=nnx.Rngs(0))
    if base is not None:
        for part in ("embedding", "blocks", "final_norm"):
            nnx.update(getattr(model, part), nnx.state(getattr(base, part)))
    return model


@functools.cache
def _nope_reference():
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (2, T)), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (2, T))
    base = _tiny_model("nope")
    return base, tokens, pos, np.asarray(base(tokens, pos))


# Schemes whose parameters start at zero by design (name -> reason); the no-op check perturbs their parameters.
ZERO_INIT: dict[str, str] = {}


@pytest.mark.parametrize("name", [n for n in SCHEMES if n != "nope"])
def test_no_silent_no_op(name):
    """With everything else equal, a scheme must change the logits of a NoPE model at initialisation.

    A scheme whose parameters start at zero by design would fail here; it must then initialise them to small
    nonzero values (as t5_bias does) or be listed with its reason in ZERO_INIT, where the check perturbs them.
    """
    base, tokens, pos, reference = _nope_reference()
    model = _tiny_model(name, base)
    if name in ZERO_INIT:
        params = nnx.state(model.positional, nnx.Param)
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.key(1), max(len(leaves), 1))
        noisy = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
        nnx.update(model.positional, jax.tree.unflatten(treedef, noisy))
    logits = np.asarray(model(tokens, pos))
    assert np.isfinite(logits).all()
    assert np.abs(logits - reference).max() > 1e-6, (
        f"{name} gives the same logits as nope: its hooks do nothing"
    )


@pytest.mark.parametrize("name", SCHEMES)
def test_batch_shared_positions_broadcast(name):
    """Positions [1,T] (what contiguous samplers return) give the same logits as the same positions per row [B,T]:
    every scheme broadcasts them over the batch."""
    base, tokens, pos, _ = _nope_reference()
    model = _tiny_model(name, base)
    np.testing.assert_allclose(
        np.asarray(model(tokens, pos[:1])), np.asarray(model(tokens, pos)), rtol=1e-5, atol=1e-6
    )


def _shared_bias_schemes():
    return [n for n in SCHEMES if POSITIONAL.get(n)().build(DIMS, rngs=nnx.Rngs(0)).shared_bias]


@pytest.mark.parametrize("name", _shared_bias_schemes())
def test_shared_bias_flag_is_true_to_the_hook(name):
    """A scheme that sets `shared_bias` (the transformer then computes its bias once for all layers) must return the
    same bias for every layer and for any q and k; every other scheme keeps the per-layer call."""
    module = POSITIONAL.get(name)().build(DIMS, rngs=nnx.Rngs(0))
    _, xk, wq, wk, _, k_pos = _inputs(16, 16, jnp.float32)
    q = (xk @ wq).reshape(B, 16, H, D)
    k = (xk @ wk).reshape(B, 16, K, D)
    first = module.bias(k_pos, k_pos, layer=0, q=q, k=k)
    assert first is not None
    for layer in range(DIMS.num_layers):
        for qq, kk in ((None, None), (q * 2.0, k - 1.0)):
            np.testing.assert_array_equal(module.bias(k_pos, k_pos, layer=layer, q=qq, k=kk), first)
