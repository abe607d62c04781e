"""Batches from a token stream, in pure numpy (no JAX).

Training: the stream is cut into non-overlapping chunks of seq_len + 1 tokens (chunk i = tokens[i*T : i*T+T+1]);
each epoch visits every chunk once, in the order of a keyed permutation of the chunk indices (`permute`: a Feistel
network keyed by (seed, epoch), so the chunk at any position of the order is computed on its own, without the
order of the whole epoch), and global batch `step` takes order positions step*B .. step*B+B-1 (running into the
next epoch as needed). A batch is therefore a pure function of (seed, step), computed in O(batch) whatever the size
of the corpus, and a resumed run sees exactly the batches it would have seen. Each process takes its contiguous
block of rows of the global batch. `tokens` may be a memory map (research/data/tokens.py): only the batch's windows
are read.

Evaluation: windows of `length` tokens, `stride` apart, predict every target position 1..N-1 exactly once. With
stride = length (the default) the windows do not overlap; with a smaller stride each window scores only its last
`stride` targets (the first window scores all of them), so every scored target has at least length - stride tokens
of context. The last window and the last batch are padded with mask 0 so that every batch has one shape (no
recompilation).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np


def num_train_chunks(n_tokens: int, seq_len: int) -> int:
    """Chunks of seq_len + 1 tokens (overlapping by one token) that fit in n_tokens."""
    return max(0, (n_tokens - 1) // seq_len)


def train_batch(
    tokens: np.ndarray,
    *,
    seq_len: int,
    batch_size: int,
    seed: int,
    step: int,
    process_index: int = 0,
    process_count: int = 1,
    close: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), each int32 [batch_size / process_count, seq_len]; targets are inputs shifted by one.

    `close=(V, unk)`: ids >= V (words outside the output vocabulary, spelled for the input side) become unk in the
    targets (see close_targets)."""
    if seq_len <= 0 or batch_size <= 0:
        raise ValueError(f"expected positive seq_len and batch_size, got {seq_len} and {batch_size}")
    if batch_size % process_count:
        raise ValueError(f"batch_size {batch_size} is not divisible by process_count {process_count}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if seed < 0 or step < 0:
        raise ValueError(f"expected seed >= 0 and step >= 0, got seed={seed}, step={step}")
    n_chunks = num_train_chunks(len(tokens), seq_len)
    if n_chunks == 0:
        raise ValueError(
            f"the training split has {len(tokens)} tokens; seq_len={seq_len} needs at least {seq_len + 1}"
        )
    rows = batch_size // process_count
    first = step * batch_size + process_index * rows
    positions = np.arange(first, first + rows, dtype=np.int64)  # positions in the endless epoch order
    epochs, offsets = np.divmod(positions, n_chunks)
    chunks = np.empty(rows, dtype=np.int64)
    for epoch in np.unique(epochs):  # a batch spans at most a few epochs
        here = epochs == epoch
        chunks[here] = permute(offsets[here], n_chunks, key=(seed, int(epoch)))
    index = chunks[:, None] * seq_len + np.arange(seq_len + 1)  # [rows, T+1]
    window = np.asarray(tokens[index], dtype=np.int32)
    return window[:, :-1], close_targets(window[:, 1:], close)


_MASK64 = (1 << 64) - 1


def _mix(x: np.ndarray, key: int) -> np.ndarray:
    """A 64-bit mixing function (splitmix64's finaliser) of uint64 x and a key."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(key & _MASK64)) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(31))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(29))


def permute(index: np.ndarray, n: int, *, key) -> np.ndarray:
    """A bijection of [0, n), keyed by `key` (any hashable of ints), applied to `index`: a 4-round Feistel network
    on the smallest domain of 2^(2h) >= n, with cycle walking (an image >= n is permuted again, which stays a
    bijection of [0, n)). O(len(index)) work, the same on every machine."""
    half = max(1, (max(n - 1, 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    seed = int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little")
    keys = [_mix(np.asarray([seed + r], np.uint64), r)[0] for r in range(4)]
    out = np.asarray(index, np.uint64).copy()
    todo = np.ones(out.shape, bool)
    while todo.any():
        x = out[todo]
        left, right = x >> np.uint64(half), x & mask
        for k in keys:
            left, right = right, left ^ (_mix(right, int(k)) & mask)
        out[todo] = (left << np.uint64(half)) | right
        todo[todo] = out[todo] >= n
    return out.astype(np.int64)


def close_targets(targets: np.ndarray, close: tuple[int, int] | None) -> np.ndarray:
    """Targets over the output vocabulary: ids >= V become the unknown id (close = (V, unk)); None: unchanged."""
    if close is None:
        return targets
    vocab, unk = close
    return np.where(targets >= vocab, unk, targets).astype(np.int32)


def num_eval_windows(n_tokens: int, length: int, stride: int | None = None) -> int:
    """Windows of `length`, `stride` apart (default: `length`), needed to cover target positions 1..n_tokens-1."""
    stride = length if stride is None else stride
    targets = n_tokens - 1
    if targets <= 0:
        return 0
    return 1 + max(0, -(-(targets - length) // stride))


def eval_windows(
    tokens: np.ndarray,
    *,
    length: int,
    batch_size: int,
    stride: int | None = None,
    max_windows: int | None = None,
    close: tuple[int, int] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (inputs int32, targets int32, mask float32, target index int64), each [batch_size, length].

    Window w has inputs tokens[w*S : w*S+L] and targets tokens[w*S+1 : w*S+L+1] (S = stride, default L); it scores
    (mask 1) its targets not scored by an earlier window: all of them for w = 0, else the last S. `target index` is
    each target's position in `tokens` (-1 for padding). With max_windows only the first max_windows windows are
    used (a prefix of the split).
    """
    stride = length if stride is None else stride
    if length <= 0 or batch_size <= 0 or not 0 < stride <= length:
        raise ValueError(
            f"expected positive length and batch_size and 0 < stride <= length, got {length}, {batch_size}, {stride}"
        )
    tokens = np.asarray(tokens)
    n = len(tokens)
    if n < 2:
        raise ValueError(f"evaluation needs at least 2 tokens, got {n}")
    windows = num_eval_windows(n, length, stride)
    if max_windows is not None:
        windows = min(windows, max_windows)
    j = np.arange(length)
    for start in range(0, windows, batch_size):
        w = np.arange(start, start + batch_size)[:, None]  # [B,1]
        pos = w * stride + j  # [B,L] input positions
        valid = (pos + 1 < n) & (w < windows)
        scored = valid & ((w == 0) | (j >= length - stride))
        safe = np.where(valid, pos, 0)
        inputs = np.where(valid, tokens[safe], 0).astype(np.int32)
        targets = np.where(valid, tokens[np.where(valid, pos + 1, 0)], 0).astype(np.int32)
        index = np.where(scored, pos + 1, -1).astype(np.int64)
        yield inputs, close_targets(targets, close), scored.astype(np.float32), index
