"""The model's own pieces: parameter bookkeeping, the tied readout, jit, attention's bias and query blocks, dense
layers. Causality, 4x the training length and query blocks against one block, for every scheme, are contracts of
the public checker (research/analysis/contract.py, run by tests/test_positional_contract.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.config import ModelConfig
from research.embedding import EMBEDDINGS
from research.model.build import resolve_model
from research.model.transformer import Transformer, parameter_counts

VOCAB, T = 50, 12


def build(positional: str, **kw) -> Transformer:
    cfg = ModelConfig(d_model=32, num_layers=2, num_heads=4, positional={"name": positional}, **kw)
    return Transformer(resolve_model(cfg, max_len=T, vocab_size=VOCAB), vocab_size=VOCAB, rngs=nnx.Rngs(0))


def positions(b: int, t: int):
    return jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))


def test_parameter_counts_split():
    model = build("learned")
    counts = parameter_counts(model)
    assert counts["embedding"] == VOCAB * 32  # tied: one table
    assert counts["positional"] == T * 32  # learned absolute table [max_len, E]
    assert counts["readout"] == 0
    assert counts["total"] == counts["embedding"] + counts["readout"] + counts["positional"] + counts["rest"]
    untied = parameter_counts(build("nope", embedding={"name": "table", "tied": False}))
    assert untied["embedding"] == VOCAB * 32 and untied["readout"] == VOCAB * 32 and untied["positional"] == 0


def test_tied_readout_shares_the_table():
    """Gradient of the logits w.r.t. the single table flows through both the lookup and the readout."""
    emb = EMBEDDINGS.get("table")(tied=True).build(vocab_size=VOCAB, d_model=8, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(emb)
    assert len(jax.tree.leaves(state)) == 1
    x = jnp.ones((1, 1, 8))
    np.testing.assert_allclose(emb.unembed(x)[0, 0], emb.table[...] @ jnp.ones(8), rtol=1e-6)


def test_jit_does_not_retrace():
    model = build("rope")
    graphdef, state = nnx.split(model)
    traces = []

    @jax.jit
    def forward(state, tokens, pos):
        traces.append(1)
        return nnx.merge(graphdef, state)(tokens, pos)

    for seed in range(3):
        tokens = jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, (2, T)), jnp.int32)
        forward(state, tokens, positions(2, T) + seed)
    assert len(traces) == 1


@pytest.mark.parametrize("batch", [1, 5, 8])
@pytest.mark.parametrize("bias_shape", ["shared", "shared_heads", "per_row"])
def test_add_bias_matches_broadcast_addition_and_its_gradient(batch, bias_shape):
    """attention.add_bias sums a batch-shared bias's gradient with a tree of adds (odd batches too): value and
    gradients equal plain broadcasting addition."""
    from research.model.attention import add_bias

    heads, t = 3, 6
    rng = np.random.default_rng(batch)
    shape = {"shared": (1, heads, t, t), "shared_heads": (1, 1, t, t), "per_row": (batch, heads, t, t)}[
        bias_shape
    ]
    logits = jnp.asarray(rng.normal(size=(batch, heads, t, t)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=shape), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(batch, heads, t, t)), jnp.float32)

    def loss(add):
        return lambda x, b: jnp.sum(jnp.tanh(add(x, b)) * weights)

    np.testing.assert_array_equal(add_bias(logits, bias), logits + bias)
    got = jax.grad(loss(add_bias), argnums=(0, 1))(logits, bias)
    want = jax.grad(loss(jnp.add), argnums=(0, 1))(logits, bias)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_dense_is_linear_on_flattened_rows():
    """layers.Dense (rows flattened to 2-D for speed) has nnx.Linear's parameters and computes x @ kernel on any
    leading shape."""
    from research.model.layers import dense

    layer = dense(8, 5, std=0.1, rngs=nnx.Rngs(0))
    reference = nnx.Linear(8, 5, use_bias=False, kernel_init=nnx.initializers.normal(0.1), rngs=nnx.Rngs(0))
    assert jax.tree.map(jnp.shape, nnx.state(layer)) == jax.tree.map(jnp.shape, nnx.state(reference))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4, 8)), jnp.float32)
    np.testing.assert_allclose(
        layer(x), np.einsum("abcd,de->abce", x, layer.kernel[...]), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(layer(x), reference(x), rtol=1e-5, atol=1e-6)
    assert layer(x[0, 0, 0]).shape == (5,)


def test_query_blocks_divide_evenly_into_long_enough_blocks():
    from research.model.attention import query_blocks

    got = {t: query_blocks(t) for t in (1, 8, 63, 64, 65, 66, 96, 128, 256, 2048)}
    assert got == {1: 1, 8: 1, 63: 1, 64: 2, 65: 1, 66: 2, 96: 2, 128: 4, 256: 4, 2048: 4}
