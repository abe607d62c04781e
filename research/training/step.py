"""The training step and its optimizer: a pure, jitted, donated function of (parameters, optimizer state, batch, step).

    make_schedule(train) -> optax schedule: the learning rate of the update at step count c (0-based)
    make_optimizer(train, pretrained) -> optax transformation: global-norm clipping, AdamW with warmup + cosine decay
                                         (the pretrained table on its own branch when frozen)
    make_train_step(graphdef, tx, positions, seed, ...) -> step(params, opt_state, inputs, targets, step[, mask,
                                         lengths]) -> (params, opt_state, {"loss", "grad_norm"})
Randomness (positions, dropout) is folded from (seed, step), so a resumed run computes exactly the same steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from research.config import ConfigError
from research.training.loss import fused_mean_nll, mean_nll


@jax.jit
def all_finite(tree) -> jax.Array:
    """True iff every floating-point leaf is finite."""
    leaves = [
        jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def make_schedule(t) -> optax.Schedule:
    """Linear warmup from 0 to train.learning_rate over warmup_steps, then cosine decay to learning_rate *
    min_lr_ratio at train.steps: count -> learning rate. The update of loop step s (1-based) uses count s - 1."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=t.learning_rate,
        warmup_steps=t.warmup_steps,
        decay_steps=max(t.steps, t.warmup_steps + 1),  # optax needs a non-empty decay phase
        end_value=t.learning_rate * t.min_lr_ratio,
    )


def make_optimizer(t, pretrained=None) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW with `make_schedule(t)`. With `pretrained` (model.pretrained) in mode
    'frozen' or 'frozen_then_finetune', the embedding table gets its own branch of an optax.multi_transform:
    zero updates, or AdamW scaled by 0 before step freeze_steps and by 1 from then on."""
    schedule = make_schedule(t)
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # no decay on gains
    adamw = lambda: optax.adamw(schedule, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay, mask=decay_mask)
    mode = "finetune" if pretrained is None else pretrained.mode  # without a path: the random table, frozen
    if mode == "finetune":
        inner = adamw()
    else:
        frozen = (
            optax.set_to_zero()
            if mode == "frozen"
            else optax.chain(adamw(), optax.scale_by_schedule(lambda count: count >= pretrained.freeze_steps))
        )
        inner = optax.multi_transform({"rest": adamw(), "pretrained": frozen}, pretrained_labels)
    return optax.chain(optax.clip_by_global_norm(t.grad_clip), inner)


PRETRAINED_TABLE = "['embedding']['table']"


def pretrained_labels(params):
    """'pretrained' for the embedding table, 'rest' for every other parameter; ConfigError when the embedding design
    has no table to freeze."""
    label = lambda path, _: (
        "pretrained" if jax.tree_util.keystr(path).startswith(PRETRAINED_TABLE) else "rest"
    )
    labels = jax.tree_util.tree_map_with_path(label, params)
    if "pretrained" not in jax.tree.leaves(labels):
        raise ConfigError(
            f"model.pretrained.mode: freezes the embedding table (params{PRETRAINED_TABLE}), which this embedding "
            "design does not have; use the 'table' or 'factorized' design, or mode='finetune'"
        )
    return labels


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def cast_floating(tree, dtype):
    """Floating-point leaves cast to `dtype` (the compute copy of float32 master parameters); others unchanged."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_train_step(graphdef, tx, positions, seed: int, compute_dtype=jnp.float32, loss_chunk: int = 0):
    """Pure (params, opt_state, inputs[B,T], targets[B,T], step[, mask, lengths]) -> (params, opt_state, metrics);
    donated state. `metrics` holds scalars: "loss" (the mean loss) and "grad_norm" (the gradients' global norm,
    before clipping).

    `mask` [B,T] (right-padded task batches, research/training/task.py) restricts the mean loss to the marked
    targets, and `lengths` [B] tells the position sampler each row's real length; without them every target
    counts. With compute_dtype bfloat16 the forward and backward pass run on a bfloat16 copy of the parameters;
    the gradients flow back through the cast to the float32 parameters, and the loss is computed in float32.
    `loss_chunk` > 0 computes the loss and the readout's gradients chunk by chunk without the [B,T,V] logits
    (research/training/loss.py); same value up to summation order."""
    base_key = jax.random.key(seed)

    def loss_fn(params, inputs, targets, pos, key, mask):
        compute = params if compute_dtype == jnp.float32 else cast_floating(params, compute_dtype)
        model = nnx.merge(graphdef, compute)
        if loss_chunk:
            hidden = model.features(inputs, pos, key=key, dtype=compute_dtype)  # [B,T,E]
            return fused_mean_nll(model.embedding, hidden, targets, mask, chunk=loss_chunk)
        return mean_nll(model(inputs, pos, key=key, dtype=compute_dtype), targets, mask)  # [B,T,V] float32

    def train_step(params, opt_state, inputs, targets, step, mask=None, lengths=None):
        key = jax.random.fold_in(base_key, step)
        pos = positions.sample(inputs.shape[0], inputs.shape[1], key=key, train=True, lengths=lengths)
        loss, grads = jax.value_and_grad(loss_fn)(
            params, inputs, targets, pos, jax.random.fold_in(key, 1), mask
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        # The reduction that optax.clip_by_global_norm computes too: XLA computes it once.
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        return optax.apply_updates(params, updates), opt_state, metrics

    return jax.jit(train_step, donate_argnums=(0, 1))


def config_train_step(config, graphdef, tx, positions):
    """`make_train_step` as `config` asks for it: its seed, train.compute_dtype and train.loss_chunk."""
    t = config.train
    return make_train_step(
        graphdef, tx, positions, config.seed, COMPUTE_DTYPES[t.compute_dtype], loss_chunk=t.loss_chunk
    )
