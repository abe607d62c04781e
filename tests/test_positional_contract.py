"""Registry-wide contract of positional encodings: every name in POSITIONAL (and POSITIONS) is covered for free.

The scheme contracts are the public checker's (research/analysis/contract.py: the same function a researcher runs
on a scheme in their own package): the hooks in a miniature attention forward with grouped-query shapes, then the
scheme in a small transformer. Every scheme is built from its config defaults (so a default must be a working
scheme: `per_layer` defaults to [rope, rope, rope, nope]); `relative` is read from the config instance, since a
composite scheme computes it.
"""

import jax
import jax.numpy as jnp
import pytest

from research.analysis.contract import CONTRACTS, check_contract, subject
from research.config import resolve_spec
from research.positional import POSITIONAL, POSITIONS

# Schemes that live outside the package, named by import path: the suite covers them like registered ones.
EXTERNAL = ["tests.fixtures.my_pe:CappedALiBiConfig"]
SUBJECTS = {name: subject(name) for name in POSITIONAL.names() + EXTERNAL}


@pytest.mark.parametrize("contract", list(CONTRACTS))
@pytest.mark.parametrize("name", list(SUBJECTS))
def test_scheme_contract(name, contract):
    check_contract(SUBJECTS[name], contract)


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
