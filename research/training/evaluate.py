"""Loss, per-token perplexity and bits per UTF-8 byte over a token split, at any window length.

The split is cut into non-overlapping windows (no sliding window: each token is predicted once, with the context
that precedes it inside its window); the last window and batch are padded and masked, so one length compiles once.
Over a whole split, bits-per-byte is exact: sum of NLL in bits over every target / UTF-8 bytes of the documents.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from research.data.stream import eval_windows
from research.runtime.mesh import shard_batch, to_host


def token_nll(graphdef, positions, params, inputs, targets):
    """Per-token NLL in nats [B,T] of the model (evaluation positions, no dropout)."""
    model = nnx.merge(graphdef, params)
    pos = positions.sample(inputs.shape[0], inputs.shape[1], key=jax.random.key(0), train=False)
    return optax.softmax_cross_entropy_with_integer_labels(model(inputs, pos), targets)  # [B,T]


def make_eval_step(graphdef, positions):
    """(params, inputs[B,T], targets[B,T], mask[B,T]) -> (sum of NLL in nats, number of targets)."""

    @jax.jit
    def eval_step(params, inputs, targets, mask):
        nll = token_nll(graphdef, positions, params, inputs, targets)
        mask = mask.astype(jnp.float32)
        return jnp.sum(nll * mask), jnp.sum(mask)

    return eval_step


def evaluate_split(eval_step, params, split, *, length, batch_size, mesh, max_windows=None) -> dict:
    """{"loss", "ppl", "bpb", "tokens"} for one split at one window length."""
    total_nll = jnp.zeros((), jnp.float32)
    total_count = jnp.zeros((), jnp.float32)
    for inputs, targets, mask in eval_windows(
        split.tokens, length=length, batch_size=batch_size, max_windows=max_windows, close=split.close
    ):
        nll, count = eval_step(params, *shard_batch((inputs, targets, mask), mesh))
        total_nll, total_count = total_nll + nll, total_count + count  # stays on device: no sync per batch
    nll, count = float(to_host(total_nll)), float(to_host(total_count))
    loss = nll / count
    # Targets of the whole split are tokens[1:]; scale the mean to the whole split's bytes. Exact when the
    # windows cover the split (max_windows=None); a token-weighted estimate otherwise.
    targets_in_split = len(split.tokens) - 1
    bpb = loss / math.log(2) * targets_in_split / split.num_bytes
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "bpb": bpb, "tokens": count}


def frequency_buckets(
    train_tokens, vocab_size: int, edges, unk_id: int | None
) -> tuple[list[str], np.ndarray]:
    """Bucket names and bucket index [V] of every id by its train-split count (see EvalConfig.frequency_buckets)."""

    counts = np.bincount(np.asarray(train_tokens), minlength=vocab_size)[:vocab_size]
    edges = sorted(int(e) for e in edges)
    names = ["oov", "0"]
    bounds = [1, *[e + 1 for e in edges]]
    for lo, hi in zip(bounds, edges):
        names.append(f"{lo}-{hi}")
    names.append(f">{edges[-1]}")
    index = np.where(counts == 0, 1, 2 + np.searchsorted(np.asarray(edges), counts, side="left"))
    if unk_id is not None:
        index[unk_id] = 0
    return names, index.astype(np.int32)


def make_bucket_eval_step(graphdef, positions, bucket_of, num_buckets: int):
    """(params, inputs, targets, mask) -> (NLL sum [K], target count [K]) per bucket of the target id."""
    bucket_of = jnp.asarray(bucket_of)

    @jax.jit
    def step(params, inputs, targets, mask):
        nll = token_nll(graphdef, positions, params, inputs, targets)
        mask = mask.astype(jnp.float32)
        ids = bucket_of[targets].reshape(-1)
        return (
            jax.ops.segment_sum((nll * mask).reshape(-1), ids, num_segments=num_buckets),
            jax.ops.segment_sum(mask.reshape(-1), ids, num_segments=num_buckets),
        )

    return step


def evaluate_buckets(step, params, split, names, *, length, batch_size, mesh) -> dict:
    """{"loss_bucket/<name>": mean NLL (nats), "count_bucket/<name>": targets} over the whole split."""
    total = jnp.zeros(len(names)), jnp.zeros(len(names))
    for inputs, targets, mask in eval_windows(
        split.tokens, length=length, batch_size=batch_size, close=split.close
    ):
        nll, count = step(params, *shard_batch((inputs, targets, mask), mesh))
        total = total[0] + nll, total[1] + count
    out = {}
    for name, nll, count in zip(names, to_host(total[0]).tolist(), to_host(total[1]).tolist()):
        if count:
            out[f"loss_bucket/{name}"] = nll / count
            out[f"count_bucket/{name}"] = count
    return out
