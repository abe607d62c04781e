"""The fused chunked loss (research/training/loss.py) equals the plain loss on full logits, value and gradients, for every
readout (tied table, untied, factorized, char-aware), with masks, padding to the chunk and bfloat16."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from research.config import ConfigError, ModelConfig
from research.model.build import resolve_model
from research.model.transformer import Transformer
from research.training.loss import fused_mean_nll, mean_nll

B, T, V = 3, 10, 50


def numpy_mean_nll(logits, targets, mask):
    """Cross-entropy from its definition, in float64."""
    logits = np.asarray(logits, np.float64)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    nll = lse - np.take_along_axis(logits, np.asarray(targets)[..., None], -1)[..., 0]
    return (nll * mask).sum() / max(mask.sum(), 1.0)


def build(embedding, **model):
    config = ModelConfig(d_model=16, num_layers=1, num_heads=2, embedding=embedding, **model)
    resolved = resolve_model(config, max_len=T, vocab_size=V)
    pieces = [f"w{i}" for i in range(V)] if resolved.embedding.needs_pieces else None
    return Transformer(resolved, vocab_size=V, rngs=nnx.Rngs(0), pieces=pieces)


EMBEDDINGS = [
    {"name": "table"},
    {"name": "table", "tied": False},
    {"name": "factorized", "embed_dim": 8},
    {"name": "char_cnn"},
]


CASES = [(e, 7, True) for e in EMBEDDINGS] + [  # 7: the last chunk of 30 tokens is padded
    (EMBEDDINGS[0], 30, False),  # chunks that divide B*T
    (EMBEDDINGS[0], 1000, False),  # one chunk holding every token
]


@pytest.mark.parametrize(
    "embedding,chunk,masked",
    CASES,
    ids=lambda x: ",".join(map(str, x.values())) if isinstance(x, dict) else str(x),
)
def test_fused_equals_plain(embedding, chunk, masked):
    model = build(embedding)
    graphdef, params = nnx.split(model)
    k1, k2 = jax.random.split(jax.random.key(1))
    tokens = jax.random.randint(k1, (B, T), 0, V)
    targets = jax.random.randint(k2, (B, T), 0, V)
    pos = jnp.broadcast_to(jnp.arange(T), (B, T))
    mask = (jnp.arange(T)[None] < jnp.array([[10], [4], [0]])).astype(jnp.float32) if masked else None

    def plain(p):
        return mean_nll(nnx.merge(graphdef, p)(tokens, pos), targets, mask)

    def fused(p):
        m = nnx.merge(graphdef, p)
        return fused_mean_nll(m.embedding, m.features(tokens, pos), targets, mask, chunk=chunk)

    (lp, gp), (lf, gf) = (
        jax.jit(jax.value_and_grad(plain))(params),
        jax.jit(jax.value_and_grad(fused))(params),
    )
    ref = numpy_mean_nll(model(tokens, pos), targets, np.ones((B, T)) if mask is None else np.asarray(mask))
    np.testing.assert_allclose(float(lf), ref, rtol=1e-6)
    np.testing.assert_allclose(float(lf), float(lp), rtol=1e-6)
    flat_p, flat_f = jax.tree.leaves(gp), jax.tree.leaves(gf)
    assert len(flat_p) == len(flat_f)
    for a, b in zip(flat_p, flat_f):
        scale = float(jnp.abs(a).max()) or 1.0
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5 * scale, rtol=1e-5)
    readout = [a for a in flat_p if a.shape and V in a.shape]
    assert readout and all(float(jnp.abs(a).max()) > 0 for a in readout)  # the readout does get gradients


@pytest.mark.slow
def test_fused_bfloat16_and_train_step_agree():
    """The training step with loss_chunk gives the plain step's losses over three updates (float32 and bf16)."""
    from research.positional.positions import Contiguous
    from research.training.step import make_train_step

    model = build({"name": "table"})
    graphdef, params = nnx.split(model)
    tx = optax.adam(1e-2)
    positions = Contiguous()
    tokens = jax.random.randint(jax.random.key(3), (B, T), 0, V)
    targets = jnp.roll(tokens, -1, axis=1)
    losses = {}
    for chunk in (0, 8):
        for dtype in (jnp.float32, jnp.bfloat16):
            p = jax.tree.map(jnp.copy, params)
            opt = tx.init(p)
            step = make_train_step(graphdef, tx, positions, 0, dtype, loss_chunk=chunk)
            trace = []
            for i in range(3):
                p, opt, metrics = step(p, opt, tokens, targets, jnp.int32(i))
                trace.append(float(metrics["loss"]))
            losses[chunk, dtype] = trace
    np.testing.assert_allclose(losses[8, jnp.float32], losses[0, jnp.float32], rtol=1e-5)
    np.testing.assert_allclose(losses[8, jnp.bfloat16], losses[0, jnp.bfloat16], rtol=2e-2)
    assert losses[0, jnp.float32][2] < losses[0, jnp.float32][0]


def test_negative_loss_chunk_is_refused():
    from research.config import Config, TrainConfig
    from research.training.loop import validate

    with pytest.raises(ConfigError, match="train.loss_chunk"):
        validate(Config(train=TrainConfig(loss_chunk=-1)))
