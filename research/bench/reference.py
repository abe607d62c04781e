"""The reference config of the benchmark and its model, built as a run builds it, with one fixed random batch.

Model FLOPs per token (PaLM appendix B convention, forward + backward = 3x forward):
    6 * (non-embedding parameters + readout V*E) + 12 * L * T * E     (attention scores and mixing, no causal halving)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from research.config import ComputeDtype, ModelConfig, TrainConfig
from research.model.build import build_model, resolve_model
from research.model.transformer import parameter_counts
from research.specs import coerce
from research.training.step import COMPUTE_DTYPES, make_optimizer, make_train_step

REFERENCE = dict(vocab_size=8192, d_model=256, num_layers=4, num_heads=4, seq_len=256, batch_size=16)
"""The reference config. A `ref` dict may also carry "compute_dtype" (a key of train.COMPUTE_DTYPES; default
"float32"): the training step's forward and backward dtype, and the dtype of the matmul rate MFU is taken against."""


def compute_dtype(ref: dict) -> str:
    """The ref's compute dtype name, checked as train.compute_dtype is."""
    return coerce(ref.get("compute_dtype", "float32"), ComputeDtype, "compute_dtype")


def model_flops_per_token(
    counts: dict, *, vocab_size: int, d_model: int, num_layers: int, seq_len: int
) -> float:
    readout = vocab_size * d_model
    return 6 * (counts["rest"] + counts["positional"] + readout) + 12 * num_layers * seq_len * d_model


@dataclasses.dataclass
class Reference:
    """The reference model and its jitted training step (donating), with one fixed random batch."""

    resolved: object
    graphdef: object
    params: object
    counts: dict
    tx: optax.GradientTransformation
    opt_state: object
    step_fn: object
    inputs: jax.Array
    targets: jax.Array

    def compile(self):
        """The training step lowered and compiled for this batch (timed by `compile_seconds`)."""
        return self.step_fn.lower(
            self.params, self.opt_state, self.inputs, self.targets, jnp.int32(0)
        ).compile()

    def runner(self, compiled):
        """i -> loss of step i: `compiled` applied to this reference's own state, which it donates and replaces."""
        state = [self.params, self.opt_state]

        def one(i):
            state[0], state[1], out = compiled(state[0], state[1], self.inputs, self.targets, jnp.int32(i))
            return out["loss"]

        return one


def reference(
    positional: str, ref: dict = REFERENCE, *, loss_chunk: int | None = None, scan_layers: bool = False
):
    """The reference config with `positional` (optionally another train.loss_chunk than the default, or scanned
    layers) -> Reference."""
    model_config = ModelConfig(
        d_model=ref["d_model"],
        num_layers=ref["num_layers"],
        num_heads=ref["num_heads"],
        positional={"name": positional},
        scan_layers=scan_layers,
    )
    resolved = resolve_model(model_config, max_len=ref["seq_len"], vocab_size=ref["vocab_size"])
    model = build_model(resolved, vocab_size=ref["vocab_size"], seed=0)
    counts = parameter_counts(model)
    graphdef, params = nnx.split(model)
    train = TrainConfig(steps=1000, warmup_steps=10)
    tx = make_optimizer(train)
    loss_chunk = train.loss_chunk if loss_chunk is None else loss_chunk
    dtype = COMPUTE_DTYPES[compute_dtype(ref)]
    step_fn = make_train_step(
        graphdef, tx, resolved.positions, seed=0, compute_dtype=dtype, loss_chunk=loss_chunk
    )
    rng = np.random.default_rng(0)
    shape = (ref["batch_size"], ref["seq_len"])
    inputs = jnp.asarray(rng.integers(0, ref["vocab_size"], shape), jnp.int32)
    targets = jnp.asarray(rng.integers(0, ref["vocab_size"], shape), jnp.int32)
    return Reference(resolved, graphdef, params, counts, tx, tx.init(params), step_fn, inputs, targets)
