"""`model.scan_layers`: the layers stacked and run with nnx.scan compute the same function as the Python loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.config import ConfigError, ModelConfig
from research.model.build import resolve_model
from research.model.transformer import Transformer
from research.positional import POSITIONAL

# one scheme per hook and per-layer parameter layout in the default run; every scheme with -m slow
QUICK = ("rope", "alibi", "fire")
SCHEMES = [
    name if name in QUICK else pytest.param(name, marks=pytest.mark.slow)
    for name in POSITIONAL.names()
    if name != "per_layer"
]


def _pair(scheme: str):
    """A looped and a scanned model holding the same parameters."""
    config = ModelConfig(d_model=32, num_layers=3, num_heads=4, positional={"name": scheme})
    loop = Transformer(resolve_model(config, max_len=16, vocab_size=40), vocab_size=40, rngs=nnx.Rngs(0))
    scanned_config = ModelConfig(
        d_model=32, num_layers=3, num_heads=4, positional={"name": scheme}, scan_layers=True
    )
    scan = Transformer(
        resolve_model(scanned_config, max_len=16, vocab_size=40), vocab_size=40, rngs=nnx.Rngs(1)
    )
    nnx.update(scan.blocks, jax.tree.map(lambda *xs: jnp.stack(xs), *[nnx.state(b) for b in loop.blocks]))
    for name in ("embedding", "positional", "final_norm"):
        nnx.update(getattr(scan, name), nnx.state(getattr(loop, name)))
    return loop, scan


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scan_equals_loop(scheme):
    loop, scan = _pair(scheme)
    tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, 40)
    pos = jnp.broadcast_to(jnp.arange(16), (2, 16))
    np.testing.assert_allclose(scan(tokens, pos), loop(tokens, pos), rtol=1e-5, atol=1e-5)

    def loss(model):
        return jnp.mean(model(tokens, pos) ** 2)

    g_loop, g_scan = nnx.jit(nnx.grad(loss))(loop), nnx.jit(nnx.grad(loss))(scan)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[g_loop.blocks[i] for i in range(3)])
    for a, b in zip(jax.tree.leaves(stacked), jax.tree.leaves(g_scan.blocks)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_scan_keeps_parameter_count_and_refuses_per_layer():
    loop, scan = _pair("rope")
    count = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))  # noqa: E731
    assert count(loop) == count(scan)
    config = ModelConfig(positional={"name": "per_layer", "pattern": ["rope", "nope"]}, scan_layers=True)
    with pytest.raises(ConfigError, match="model.scan_layers"):
        resolve_model(config, max_len=16, vocab_size=40)


@pytest.mark.slow
def test_scanned_run_trains_and_resumes(tmp_path, tiny):
    import dataclasses

    from .conftest import check_resume_equivalence

    config = tiny("alibi")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, scan_layers=True))
    check_resume_equivalence(config, tmp_path)
