"""The positional diagnostics read schemes through their hooks only."""

from __future__ import annotations

import numpy as np
import pytest

from research.analysis.positional import plot_scheme, probe
from research.positional import Dims

DIMS = Dims(d_model=32, num_heads=4, head_dim=8, num_layers=2, max_len=16)


def test_probe_finds_the_hooks_each_scheme_uses():
    assert probe("nope", dims=DIMS, length=16) == {}
    assert set(probe("sinusoidal", dims=DIMS, length=16)) == {"similarity"}
    assert set(probe("rope", dims=DIMS, length=16)) == {"envelope"}
    alibi = probe("alibi", dims=DIMS, length=16)["bias"]  # [H, distance]
    slopes = 2.0 ** -(8 * np.arange(1, 5) / 4)
    np.testing.assert_allclose(alibi, -slopes[:, None] * np.arange(16)[None], rtol=1e-6)


def test_similarity_diagonal_and_rope_envelope_peak():
    sim = probe("sinusoidal", dims=DIMS, length=16)["similarity"]
    np.testing.assert_allclose(np.diag(sim), 1.0, rtol=1e-5)
    env = probe("rope", dims=DIMS, length=16)["envelope"]
    assert np.argmax(env) == 0  # aligned all-ones vectors score highest at distance 0


def test_plot_writes_a_png(tmp_path):
    assert plot_scheme("alibi", tmp_path, dims=DIMS, length=16).stat().st_size > 1000


def test_mean_attention_distance_formula():
    """Uniform causal attention over S = T keys: query i averages distances 0..i, i.e. i/2; a one-hot on the key
    k steps back gives k."""
    from research.analysis.positional import mean_attention_distance

    t = 6
    uniform = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]  # [T,S]
    got = mean_attention_distance(uniform[None, None])  # [1 head]
    np.testing.assert_allclose(got, [np.mean(np.arange(t) / 2)])
    back2 = np.zeros((t, t))
    for i in range(t):
        back2[i, max(i - 2, 0)] = 1.0
    np.testing.assert_allclose(
        mean_attention_distance(back2[None, None]), [np.mean(np.minimum(np.arange(t), 2))]
    )


@pytest.mark.slow
def test_trained_run_attention_distance(tmp_path):
    """From a run directory: the sown weights of every layer and head; ALiBi's steepest head attends closer than
    its flattest one, and the figure is written."""
    from research.analysis.positional import plot_attention_distance
    from research.training.loop import train_and_evaluate

    from .conftest import tiny_config

    train_and_evaluate(tiny_config("alibi", steps=2), tmp_path / "run", log=lambda m: None)
    path, values = plot_attention_distance(tmp_path / "run", multipliers=(1, 2), windows=2)
    assert path.stat().st_size > 1000
    assert sorted(values) == [16, 32]
    assert values[16].shape == (2, 4)  # layers x heads
    assert (values[32] > 0).all() and (values[16] <= 15 / 2 + 1e-6).all()
    assert values[32][0, 0] < values[32][0, -1]  # slope 1/4 (head 0) vs 1/256 (head 3)
