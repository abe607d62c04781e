"""Registry-wide contract of positional encodings: every name in POSITIONAL (and POSITIONS) is covered for free.

The forward pass below is the transformer's use of the hooks in miniature: embed -> project to q/k -> rotate ->
logits / sqrt(D) + bias. Grouped-query shapes (K = 2 kv heads for H = 4) check that rotate accepts K != H.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.positional import POSITIONAL, POSITIONS, Dims

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


@pytest.mark.parametrize("name", POSITIONAL.names())
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


@pytest.mark.parametrize("name", POSITIONAL.names())
def test_bf16_rotation_tracks_float32(name):
    forward, state, _ = _forward(name)
    *_, logits32 = forward(state, *_inputs(16, 16, jnp.float32))
    *_, logits16 = forward(state, *_inputs(16, 16, jnp.bfloat16))
    np.testing.assert_allclose(logits16, logits32, atol=0.15)  # bf16 inputs, float32 angles


@pytest.mark.parametrize("name", POSITIONAL.names())
def test_jit_once_and_shift_behaviour(name):
    forward, state, traces = _forward(name)
    xq, xk, wq, wk, q_pos, k_pos = _inputs(16, 16, jnp.float32)
    *_, before = forward(state, xq, xk, wq, wk, q_pos, k_pos)
    traced = len(traces)  # the cache may already hold this shape from another test; count from here
    *_, after = forward(state, xq, xk, wq, wk, q_pos + 7, k_pos + 7)
    forward(state, xq * 2, xk * 2, wq, wk, q_pos + 1, k_pos + 1)
    assert len(traces) == traced, "new values of the same shapes must not retrace"
    if POSITIONAL.get(name).relative:
        np.testing.assert_allclose(after, before, atol=1e-5)
    else:
        assert not np.allclose(after, before, atol=1e-3), "absolute scheme ignored its positions"


@pytest.mark.parametrize("name", POSITIONS.names())
@pytest.mark.parametrize("train", [True, False])
def test_position_samplers(name, train):
    pos = POSITIONS.get(name)().sample(3, 10, key=jax.random.key(0), train=train)
    assert pos.shape == (3, 10) and pos.dtype == jnp.int32
    assert bool((pos >= 0).all())
