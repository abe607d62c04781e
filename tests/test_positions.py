"""Position samplers (research/positional/positions.py): values, keys, evaluation behaviour. Every sampler composed
with every scheme is a contract of the public checker (research/analysis/contract.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.config import ConfigError, resolve_spec
from research.positional import POSITIONAL, POSITIONS, Dims
from research.positional.positions import check_compatible

TRAIN_LEN = 8
OPTIONS = {
    "interpolated": {"train_len": TRAIN_LEN},
    "randomized": {"max_len": 64},
    "shifted": {"max_offset": 16},
}


def sampler(name: str, **options):
    spec = {"name": name, **OPTIONS.get(name, {}), **options}
    s = resolve_spec(POSITIONS, spec, field="model.positions")
    s.validate(TRAIN_LEN)
    return s


def arange(b, t):
    return np.broadcast_to(np.arange(t), (b, t))


def rows(pos, b):
    """Positions as [b,T]: a sampler may return [1,T] when every row gets the same ones (broadcast by the model)."""
    assert pos.shape[0] in (1, b), pos.shape
    return np.broadcast_to(np.asarray(pos), (b, pos.shape[1]))


# ----------------------------------------------------------------------------------------- every sampler


@pytest.mark.parametrize("name", POSITIONS.names())
def test_evaluation_is_contiguous_by_default(name):
    """Unless asked otherwise, evaluation up to the training length sees 0..T-1 whatever the key."""
    for key in (jax.random.key(0), jax.random.key(1)):
        pos = sampler(name).sample(2, TRAIN_LEN, key=key, train=False)
        assert pos.dtype == jnp.int32
        np.testing.assert_array_equal(rows(pos, 2), arange(2, TRAIN_LEN))


@pytest.mark.parametrize("name", POSITIONS.names())
def test_sampling_under_jit_with_a_folded_key(name):
    """As the train step does: sample inside jit, key = fold_in(key(seed), step); same step -> same positions."""
    s = sampler(name)
    step_fn = jax.jit(
        lambda step: s.sample(4, TRAIN_LEN, key=jax.random.fold_in(jax.random.key(0), step), train=True)
    )
    a, again = step_fn(3), step_fn(3)
    np.testing.assert_array_equal(a, again)
    assert rows(a, 4).shape == (4, TRAIN_LEN)


# ------------------------------------------------------------------------------------------- randomized


def test_randomized_is_a_sorted_subset_of_the_range():
    s = sampler("randomized", max_len=50)
    pos = np.asarray(s.sample(16, 20, key=jax.random.key(3), train=True))
    assert pos.shape == (16, 20) and pos.dtype == np.int32
    assert (np.diff(pos, axis=-1) > 0).all()  # sorted and unique
    assert pos.min() >= 0 and pos.max() < 50
    assert len({tuple(row) for row in pos}) == 16  # one draw per sequence
    assert pos.max() > 20  # really uses the wider range


def test_randomized_keys():
    s = sampler("randomized")
    a = s.sample(2, TRAIN_LEN, key=jax.random.key(0), train=True)
    np.testing.assert_array_equal(a, s.sample(2, TRAIN_LEN, key=jax.random.key(0), train=True))
    assert not np.array_equal(a, s.sample(2, TRAIN_LEN, key=jax.random.key(1), train=True))
    with pytest.raises(ValueError, match="PRNG key"):
        s.sample(2, TRAIN_LEN, key=None, train=True)


def test_randomized_covers_the_range_uniformly():
    pos = np.asarray(sampler("randomized", max_len=10).sample(500, 5, key=jax.random.key(0), train=True))
    counts = np.bincount(pos.ravel(), minlength=10) / pos.size
    np.testing.assert_allclose(counts, 0.1, atol=0.03)  # each value is in a subset with probability 5/10


def test_randomized_at_evaluation_on_request():
    s = sampler("randomized", eval_mode="randomized")
    pos = np.asarray(s.sample(2, 4 * TRAIN_LEN, key=jax.random.key(0), train=False))
    assert (np.diff(pos, axis=-1) > 0).all() and pos.max() < 64
    assert not np.array_equal(pos, arange(2, 4 * TRAIN_LEN))


def test_randomized_errors():
    with pytest.raises(ValueError, match="max_len >= the training length 8"):
        POSITIONS.get("randomized")(max_len=4).validate(TRAIN_LEN)
    s = sampler("randomized", max_len=10, eval_mode="randomized")
    with pytest.raises(ValueError, match="cannot draw 12 distinct positions"):  # raised while tracing
        jax.jit(lambda key: s.sample(1, 12, key=key, train=False))(jax.random.key(0))
    # Contiguous evaluation has no such limit.
    assert sampler("randomized", max_len=10).sample(1, 12, key=None, train=False).shape == (1, 12)
    with pytest.raises(ConfigError, match="eval_mode"):
        resolve_spec(POSITIONS, {"name": "randomized", "eval_mode": "random"}, field="model.positions")


# ---------------------------------------------------------------------------------------------- shifted


def test_shifted_offsets_within_range():
    s = sampler("shifted", max_offset=5)
    pos = np.asarray(s.sample(500, 6, key=jax.random.key(0), train=True))
    offsets = pos[:, 0]
    np.testing.assert_array_equal(pos, offsets[:, None] + np.arange(6))  # each row is a shifted arange
    assert offsets.min() == 0 and offsets.max() == 5  # both ends reachable (inclusive range)
    assert not np.array_equal(pos, s.sample(500, 6, key=jax.random.key(1), train=True))


def test_shifted_at_evaluation_on_request():
    pos = np.asarray(
        sampler("shifted", eval_mode="shifted").sample(64, 4, key=jax.random.key(0), train=False)
    )
    assert (pos[:, 0] > 0).any() and (pos[:, 0] <= 16).all()
    with pytest.raises(ValueError, match="max_offset >= 0"):
        POSITIONS.get("shifted")(max_offset=-1).validate(TRAIN_LEN)


# ----------------------------------------------------------------------------------------- interpolated


def test_interpolated_scales_at_evaluation_only():
    s = sampler("interpolated")
    pos = s.sample(2, 4 * TRAIN_LEN, key=None, train=False)
    assert pos.dtype == jnp.float32
    np.testing.assert_allclose(pos, arange(2, 4 * TRAIN_LEN) / 4)  # i * 8 / 32
    assert float(pos.max()) < TRAIN_LEN  # squeezed into the trained range
    np.testing.assert_allclose(s.sample(1, 12, key=None, train=False)[0, :3], [0, 8 / 12, 16 / 12], rtol=1e-6)
    train = s.sample(2, 4 * TRAIN_LEN, key=None, train=True)  # training never scales
    assert train.dtype == jnp.int32
    np.testing.assert_array_equal(rows(train, 2), arange(2, 4 * TRAIN_LEN))


def test_interpolated_needs_the_training_length():
    with pytest.raises(ValueError, match="positions=interpolated:train_len=64"):
        POSITIONS.get("interpolated")().validate(64)


# ---------------------------------------------------------------------------------------- compatibility

DIMS = Dims(d_model=16, num_heads=2, head_dim=8, num_layers=2, max_len=TRAIN_LEN)


def test_fractional_positions_and_integer_only_schemes():
    """`learned` indexes a table: it cannot take interpolated positions, and says so before compiling."""
    with pytest.raises(ValueError, match="positional=learned cannot take them"):
        check_compatible(POSITIONAL.get("learned")(), sampler("interpolated"), DIMS)
    # A composite with an integer-only member is caught the same way.
    per_layer = resolve_spec(POSITIONAL, {"name": "per_layer", "pattern": ["learned", "rope"]}, field="p")
    with pytest.raises(ValueError, match="cannot take them"):
        check_compatible(per_layer, sampler("interpolated"), DIMS)
    for name in ("rope", "alibi", "sinusoidal", "t5_bias", "nope"):
        check_compatible(POSITIONAL.get(name)(), sampler("interpolated"), DIMS)
    for name in POSITIONS.names():  # integer samplers go with every scheme
        if not POSITIONS.get(name).fractional:
            check_compatible(POSITIONAL.get("learned")(), sampler(name), DIMS)


# ------------------------------------------------------------------------------- right-padded rows (lengths)


def test_randomized_ragged_rows_are_sorted_subsets_of_their_own_size():
    """With `lengths`, row b gets lengths[b] distinct sorted positions in its first slots, padding after."""
    lengths = jnp.array([1, 5, 12, 20, 7], jnp.int32)
    pos = np.asarray(
        sampler("randomized", max_len=40).sample(5, 20, key=jax.random.key(2), train=True, lengths=lengths)
    )
    assert pos.shape == (5, 20) and pos.dtype == np.int32
    for row, n in zip(pos, np.asarray(lengths)):
        real = row[:n]
        assert (np.diff(real) > 0).all() and real.min() >= 0 and real.max() < 40
        np.testing.assert_array_equal(row[n:], 39)  # padding slots: max_len - 1
    assert pos[3].max() > 20  # full rows still use the wider range


def test_randomized_ragged_is_uniform_over_the_range():
    """Each value of [0, 10) lies in a random 4-subset with probability 4/10, whatever the padded length."""
    lengths = jnp.full((2000,), 4, jnp.int32)
    pos = np.asarray(
        sampler("randomized", max_len=10).sample(2000, 7, key=jax.random.key(0), train=True, lengths=lengths)
    )
    real = pos[:, :4]
    counts = np.bincount(real.ravel(), minlength=10) / len(real)
    np.testing.assert_allclose(counts, 0.4, atol=0.04)
    # The first position is the minimum of a uniform 4-subset of 10: P(min = 0) = 4/10.
    assert abs(np.mean(real[:, 0] == 0) - 0.4) < 0.04


def test_randomized_ragged_full_rows_match_the_unpadded_distribution():
    """A row whose length fills the array draws from the same family as the unpadded sampler (sorted, distinct)."""
    s = sampler("randomized", max_len=12)
    pos = np.asarray(
        s.sample(3, 12, key=jax.random.key(1), train=True, lengths=jnp.full((3,), 12, jnp.int32))
    )
    np.testing.assert_array_equal(pos, arange(3, 12))  # 12 of 12: the only subset is the whole range


def test_interpolated_scales_each_padded_row_by_its_own_length():
    s = sampler("interpolated")  # train_len 8
    lengths = jnp.array([32, 16, 4], jnp.int32)
    pos = np.asarray(s.sample(3, 32, key=None, train=False, lengths=lengths))
    np.testing.assert_allclose(pos[0], np.arange(32) * 8 / 32)
    np.testing.assert_allclose(pos[1, :16], np.arange(16) * 8 / 16)
    np.testing.assert_allclose(pos[2, :4], np.arange(4))  # within the training length: unscaled
    np.testing.assert_array_equal(
        rows(s.sample(3, 32, key=None, train=True, lengths=lengths), 3), arange(3, 32)
    )


@pytest.mark.parametrize("name", POSITIONS.names())
def test_lengths_leave_evaluation_contiguous_by_default(name):
    lengths = jnp.array([3, TRAIN_LEN], jnp.int32)
    pos = sampler(name).sample(2, TRAIN_LEN, key=jax.random.key(0), train=False, lengths=lengths)
    np.testing.assert_array_equal(rows(pos, 2), arange(2, TRAIN_LEN))
