"""Loss, per-token perplexity and bits per UTF-8 byte over a token split, at any window length.

The split is cut into non-overlapping windows (no sliding window: each token is predicted once, with the context
that precedes it inside its window); the last window and batch are padded and masked, so one length compiles once.
Over a whole split, bits-per-byte is exact: sum of NLL in bits over every target / UTF-8 bytes of the documents.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from research.data.stream import eval_windows
from research.parallel import shard_batch


def make_eval_step(graphdef, positions):
    """(params, inputs[B,T], targets[B,T], mask[B,T]) -> (sum of NLL in nats, number of targets)."""

    @jax.jit
    def eval_step(params, inputs, targets, mask):
        model = nnx.merge(graphdef, params)
        pos = positions.sample(inputs.shape[0], inputs.shape[1], key=jax.random.key(0), train=False)
        logits = model(inputs, pos)  # [B,T,V]
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [B,T]
        mask = mask.astype(jnp.float32)
        return jnp.sum(nll * mask), jnp.sum(mask)

    return eval_step


def evaluate_split(eval_step, params, split, *, length, batch_size, mesh, max_windows=None) -> dict:
    """{"loss", "ppl", "bpb", "tokens"} for one split at one window length."""
    total_nll = jnp.zeros((), jnp.float32)
    total_count = jnp.zeros((), jnp.float32)
    for inputs, targets, mask in eval_windows(
        split.tokens, length=length, batch_size=batch_size, max_windows=max_windows
    ):
        nll, count = eval_step(params, *shard_batch((inputs, targets, mask), mesh))
        total_nll, total_count = total_nll + nll, total_count + count  # stays on device: no sync per batch
    nll, count = float(total_nll), float(total_count)
    loss = nll / count
    # Targets of the whole split are tokens[1:]; scale the mean to the whole split's bytes. Exact when the
    # windows cover the split (max_windows=None); a token-weighted estimate otherwise.
    targets_in_split = len(split.tokens) - 1
    bpb = loss / math.log(2) * targets_in_split / split.num_bytes
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "bpb": bpb, "tokens": count}
