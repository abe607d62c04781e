"""Loss, per-token perplexity and bits per UTF-8 byte over a token split, at any window length and stride.

Windows (research/data/stream.py: eval_windows) predict every target of the split exactly once: non-overlapping by
default, or sliding with a smaller stride (each window scores its last `stride` targets, with at least
length - stride tokens of context). The last window and batch are padded and masked, so one length compiles once.

Every evaluation also returns
- per-document totals: for each document of the split, [UTF-8 bytes, targets, NLL in bits] (a separator target
  belongs to the document it opens). Bits per byte is their ratio of sums, exactly, so any statistic over documents
  (a bootstrap interval, a paired difference) can be recomputed from a run's summary;
- the loss by position inside the window: mean bits per target in POSITION_BUCKETS equal buckets of the window's
  positions, where extrapolation past the training length shows.
Sums are accumulated on the device in float32 per batch and summed over documents in float64 on the host.
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

POSITION_BUCKETS = 16
LN2 = math.log(2)


def token_nll(graphdef, positions, params, inputs, targets):
    """Per-token NLL in nats [B,T] of the model (evaluation positions, no dropout)."""
    model = nnx.merge(graphdef, params)
    pos = positions.sample(inputs.shape[0], inputs.shape[1], key=jax.random.key(0), train=False)
    return optax.softmax_cross_entropy_with_integer_labels(model(inputs, pos), targets)  # [B,T]


def make_eval_step(graphdef, positions):
    """(params, inputs[B,T], targets[B,T], mask[B,T], docs[B,T], *, num_documents) -> (NLL per document [D],
    targets per document [D], NLL per position bucket [K], targets per position bucket [K]), NLL in nats."""

    def eval_step(params, inputs, targets, mask, docs, *, num_documents: int):
        nll = token_nll(graphdef, positions, params, inputs, targets) * mask  # [B,T]
        t = inputs.shape[1]
        bucket = jnp.broadcast_to(jnp.arange(t) * POSITION_BUCKETS // t, nll.shape)  # [B,T]
        per = lambda x, ids, n: jax.ops.segment_sum(x.reshape(-1), ids.reshape(-1), num_segments=n)  # noqa: E731
        return (
            per(nll, docs, num_documents),
            per(mask, docs, num_documents),
            per(nll, bucket, POSITION_BUCKETS),
            per(mask, bucket, POSITION_BUCKETS),
        )

    return jax.jit(eval_step, static_argnames="num_documents")


def document_totals(step, params, split, *, mesh, **windows) -> tuple[np.ndarray, ...]:
    """`step(params, inputs, targets, mask, docs, *, num_documents)` over the split's evaluation windows (`windows`:
    eval_windows' arguments), each target tagged with its document (docs [B,T]), its outputs summed on the device
    over batches -> host float64 arrays."""
    tokens = np.asarray(split.tokens)
    document = split.document_of(np.arange(len(tokens)))  # [N] document of each stream position
    num_documents, totals = int(document.max()) + 1, None
    for inputs, targets, mask, index in eval_windows(tokens, close=split.close, **windows):
        docs = np.where(index >= 0, document[np.maximum(index, 0)], 0).astype(np.int32)
        out = step(params, *shard_batch((inputs, targets, mask, docs), mesh), num_documents=num_documents)
        totals = out if totals is None else tuple(a + b for a, b in zip(totals, out))  # on device: no sync
    return tuple(np.asarray(to_host(x), np.float64) for x in totals)


def evaluate_split(
    eval_step, params, split, *, length, batch_size, mesh, stride=None, max_windows=None
) -> dict:
    """{"loss", "ppl", "bpb", "tokens", "per_document", "by_position"} for one split at one window length.

    `per_document` ([[bytes, targets, bits], ...] in document order) is None for a prefix of the split
    (`max_windows`), whose bits per byte is then a token-weighted estimate."""
    tokens = np.asarray(split.tokens)
    doc_nll, doc_count, pos_nll, pos_count = document_totals(
        eval_step, params, split, mesh=mesh,
        length=length, batch_size=batch_size, stride=stride, max_windows=max_windows,
    )  # fmt: skip
    bits, count = doc_nll / LN2, float(doc_count.sum())
    loss = float(doc_nll.sum()) / count
    whole = max_windows is None and split.doc_bytes is not None
    per_document = (
        [[int(b), int(n), float(x)] for b, n, x in zip(split.doc_bytes, doc_count, bits, strict=True)]
        if whole
        else None
    )
    if whole:
        bpb = sum(x for _, _, x in per_document) / sum(b for b, _, _ in per_document)
    else:  # a prefix: its mean scaled to the whole split's targets and bytes
        bpb = loss / LN2 * (len(tokens) - 1) / split.num_bytes
    by_position = {
        "bits_per_token": (pos_nll / LN2 / np.maximum(pos_count, 1)).tolist(),
        "tokens": pos_count.astype(int).tolist(),
    }
    return {
        "loss": loss, "ppl": math.exp(min(loss, 700.0)), "bpb": bpb, "tokens": count,
        "per_document": per_document, "by_position": by_position,
    }  # fmt: skip


def frequency_buckets(
    train_tokens, vocab_size: int, edges, unk_id: int | None, *, num_ids: int | None = None
) -> tuple[list[str], np.ndarray]:
    """Bucket names and bucket index [num_ids] of every id by its train-split count (see EvalConfig.frequency_buckets):
    `oov` (the unknown id, and ids past the output vocabulary: spelled unknown words), `0` (in the vocabulary, never
    seen in training), then by count edges."""
    num_ids = max(num_ids or vocab_size, vocab_size)
    counts = np.bincount(np.asarray(train_tokens), minlength=num_ids)[:num_ids]
    edges = sorted(int(e) for e in edges)
    names = ["oov", "0"]
    bounds = [1, *[e + 1 for e in edges]]
    for lo, hi in zip(bounds, edges):
        names.append(f"{lo}-{hi}")
    names.append(f">{edges[-1]}")
    index = np.where(counts == 0, 1, 2 + np.searchsorted(np.asarray(edges), counts, side="left"))
    index[vocab_size:] = 0
    if unk_id is not None:
        index[unk_id] = 0
    return names, index.astype(np.int32)


def make_bucket_eval_step(graphdef, positions, bucket_of, num_buckets: int):
    """(params, inputs, targets, mask, docs, *, num_documents) -> (NLL sum [D, K], target count [D, K]) per test
    document and bucket of the target id, and the same per bucket of the input id (the token just read: the loss of
    the prediction after a rare or unknown word)."""
    bucket_of = jnp.asarray(bucket_of)

    def step(params, inputs, targets, mask, docs, *, num_documents: int):
        nll = token_nll(graphdef, positions, params, inputs, targets)
        mask = mask.astype(jnp.float32)
        n = num_documents * num_buckets

        def per(x, bucket):  # [B,T] summed per (document, bucket) -> [D, K]
            ids = (docs * num_buckets + bucket).reshape(-1)
            return jax.ops.segment_sum(x.reshape(-1), ids, num_segments=n).reshape(-1, num_buckets)

        after = bucket_of[jnp.minimum(inputs, bucket_of.shape[0] - 1)]
        return (
            per(nll * mask, bucket_of[targets]),
            per(mask, bucket_of[targets]),
            per(nll * mask, after),
            per(mask, after),
        )

    return jax.jit(step, static_argnames="num_documents")


def evaluate_buckets(step, params, split, names, *, length, batch_size, mesh) -> dict:
    """{"loss_bucket/<name>": mean NLL (nats), "count_bucket/<name>": targets} by the target's train frequency, and
    {"loss_after/<name>", "count_after/<name>"} by the train frequency of the input token before it, over the
    whole split; "per_document": {"loss_bucket/<name>" or "loss_after/<name>": [[targets, NLL in bits], ...] per
    test document}, so an interval over documents can be recomputed from a run's summary."""
    target_nll, target_n, after_nll, after_n = document_totals(
        step, params, split, mesh=mesh, length=length, batch_size=batch_size
    )  # [D, K] each
    out, per_document = {}, {}
    for kind, nlls, counts in (("bucket", target_nll, target_n), ("after", after_nll, after_n)):
        for k, name in enumerate(names):
            count = float(counts[:, k].sum())
            if count:
                out[f"loss_{kind}/{name}"] = float(nlls[:, k].sum()) / count
                out[f"count_{kind}/{name}"] = count
                per_document[f"loss_{kind}/{name}"] = [
                    [int(c), float(x) / LN2] for c, x in zip(counts[:, k], nlls[:, k], strict=True)
                ]
    return {**out, "per_document": per_document}
