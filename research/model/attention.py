"""Causal multi-head attention as named slots: project, (rotate), logits, (+ bias), mask, softmax, mix, output.

The positional hooks are *passed in* by the transformer (this module never decides which scheme runs): `rotate`
transforms q and k, `bias` returns additive logits [B|1,H,T,S] added after the 1/sqrt(D) scaling. The `bias` hook
also receives the block's own scaled logits q·k/sqrt(D) (`logits=`, before any bias and the mask), so a scheme whose
bias is a function of them (CoPE's gates) neither recomputes them nor runs a second backward through q·k.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from research.model.layers import dense
from research.positional.base import causal_mask_of


def add_bias(logits: jax.Array, bias: jax.Array) -> jax.Array:
    """logits [B,H,T,S] + bias [B|1,H|1,T,S]: plain addition, except that a bias shared by every row (leading axis
    1, B > 1: position-only biases of shared positions) gets its gradient summed over the batch by a tree of adds.

    XLA's CPU backend reduces over the leading axis of a [B,H,T,S] array about 15x slower than it adds the B
    slices (19 ms against 1.3-2 ms at the reference shape, once per layer in every learned-bias scheme's
    backward); the tree is exact float32 addition in another order.
    """
    if bias.ndim != logits.ndim or bias.shape[0] != 1 or logits.shape[0] == 1:
        return logits + bias
    return _add_shared(tuple(bias.shape), jnp.dtype(bias.dtype), logits, bias)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _add_shared(shape, dtype, logits, bias):
    return logits + bias


def _add_shared_fwd(shape, dtype, logits, bias):
    return logits + bias, None


def _add_shared_bwd(shape, dtype, _, g):
    total = g
    while total.shape[0] > 1:  # pairwise: log2(B) elementwise adds of contiguous slices
        half = total.shape[0] // 2
        summed = total[:half] + total[half : 2 * half]
        total = summed if total.shape[0] % 2 == 0 else jnp.concatenate([summed, total[2 * half :]])
    axes = tuple(a for a in range(1, len(shape)) if shape[a] == 1 and total.shape[a] != 1)
    if axes:  # the bias's other broadcast axes (e.g. one bias for every head)
        total = total.sum(axes, keepdims=True)
    return g, total.astype(dtype)


_add_shared.defvjp(_add_shared_fwd, _add_shared_bwd)


def causal_mask(q_pos: jax.Array, k_pos: jax.Array) -> jax.Array:
    """[1,1,T,S] bool: key j visible from query i iff j <= i + S - T (the queries are the last T of the S keys).

    Built from the position arrays' *indices* (sequence order), not their values, so randomized, shifted or
    repeated (padding) position ids never change what a token may see.
    """
    return causal_mask_of(q_pos.shape[-1], k_pos.shape[-1])


class CausalSelfAttention(nnx.Module):
    def __init__(self, d_model: int, num_heads: int, *, out_std: float, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.qkv = dense(d_model, 3 * d_model, std=0.02, rngs=rngs)
        self.out = dense(d_model, d_model, std=out_std, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,  # [B,T,E]
        pos: jax.Array,  # [B,T]
        *,
        rotate: Callable,
        bias: Callable | jax.Array | None,
    ) -> jax.Array:
        """`bias` is the scheme's hook, called once per query block with the keys that block sees (so a
        content-dependent bias skips the masked blocks too), or one precomputed [B|1,H,T,T] array, sliced."""
        b, t, _ = x.shape
        h, d = self.num_heads, self.head_dim
        q, k, v = jnp.split(self.qkv(x).reshape(b, t, 3 * h, d), 3, axis=2)  # each [B,T,H,D]
        q, k = rotate(q, k, pos, pos)
        # Head-major once per layer: the blocks' batched matmuls then read slices of [B,H,T,D] arrays, instead of
        # XLA transposing every block's slice of q, k and v (and their gradients) on its own.
        qh, kh, vh = (jnp.transpose(a, (0, 2, 1, 3)) for a in (q, k, v))  # [B,H,T,D]

        def part(rows: slice, cols: slice):  # queries `rows` over keys `cols`, with their own bias
            q_pos, k_pos = pos[:, rows], pos[:, cols]
            logits = scaled_logits(qh[:, :, rows], kh[:, :, cols])  # [B,H,T',S']
            if callable(bias):
                extra = bias(q_pos, k_pos, q=q[:, rows], k=k[:, cols], logits=logits)  # [B|1,H,T',S'] or None
            else:
                extra = None if bias is None else bias[..., rows, cols]
            return attend(logits, vh[:, :, cols], extra, q_pos, k_pos)

        whole = slice(None)
        blocks = query_blocks(t)
        if hasattr(
            self, "__captures__"
        ):  # only under nnx.capture (research/analysis/positional.py), never in training
            y, weights = part(whole, whole)
            self.sow(nnx.Intermediate, "weights", weights)
        elif blocks == 1:
            y = part(whole, whole)[0]
        else:  # block i of the queries sees keys up to its own end only: the masked blocks are never computed
            m = t // blocks
            y = jnp.concatenate(
                [part(slice(i * m, (i + 1) * m), slice(0, (i + 1) * m))[0] for i in range(blocks)], 2
            )
        return self.out(jnp.transpose(y, (0, 2, 1, 3)).reshape(b, t, h * d))  # [B,H,T,D] -> [B,T,H*D]


MIN_QUERY_BLOCK = 32
MAX_QUERY_BLOCKS = 4


def query_blocks(t: int) -> int:
    """How many equal query blocks causal self-attention over t positions runs as: the most of 1, 2, 4 ..
    MAX_QUERY_BLOCKS that divide t into blocks of at least MIN_QUERY_BLOCK queries.

    Block i attends to the keys up to its own end only, so the causally masked blocks of the [T,S] logits are
    never computed (exact: masked weights are exactly 0; the outputs equal the one-block form, tested for every
    scheme). At T = 256, four blocks compute 10/16 of the logits. Eight blocks measured no faster than four.
    """
    blocks = 1
    while blocks * 2 <= MAX_QUERY_BLOCKS and t % (blocks * 2) == 0 and t // (blocks * 2) >= MIN_QUERY_BLOCK:
        blocks *= 2
    return blocks


def scaled_logits(q: jax.Array, k: jax.Array) -> jax.Array:
    """q [B,H,T,D], k [B,H,S,D] (head-major) -> float32 q·k / sqrt(D) [B,H,T,S]."""
    return jnp.einsum("bhtd,bhsd->bhts", q, k).astype(jnp.float32) / jnp.sqrt(q.shape[-1])


def attend(logits, v, extra, q_pos, k_pos):
    """Causal softmax attention with the scaled logits [B,H,T,S] (`scaled_logits`; the queries are the last T of the
    S keys) over v [B,H,S,D] (head-major), with an additive bias [B|1,H,T,S] or None -> (output [B,H,T,D], weights
    [B,H,T,S])."""
    if extra is not None:
        logits = add_bias(logits, extra)
    logits = jnp.where(causal_mask(q_pos, k_pos), logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # [B,H,T,S]
    return jnp.einsum("bhts,bhsd->bhtd", weights, v), weights
