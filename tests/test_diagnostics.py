"""The positional diagnostics read schemes through their hooks only."""

from __future__ import annotations

import numpy as np

from research.diagnostics import plot_scheme, probe
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
