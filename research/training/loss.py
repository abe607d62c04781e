"""Token-level cross-entropy for training: the plain form on [B,T,V] logits, and a fused form that never holds them.

The fused form (`train.loss_chunk > 0`) walks the B*T targets in chunks of `chunk` tokens. For each chunk it computes
the chunk's logits, its summed loss and, in the same pass, the chunk's gradients with respect to the hidden states
and to the readout's parameters (`jax.vjp` of the embedding module's own `unembed`, so every design works). The
backward pass only scales those stored gradients. A chunk's logits ([chunk, V] float32: 8 MB at chunk 256 and
V 8192) stay in cache between the forward and the gradient, where the plain form writes and re-reads all B*T*V of
them several times; the matmul FLOPs are the same (no recomputation). The loss value equals the plain form's up to
float summation order (tested to 1e-6 relative, gradients too).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx


def mean_nll(logits, targets, mask=None):
    """Mean cross-entropy over all targets, or over those with mask 1 (mask [B,T])."""
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [B,T]
    if mask is None:
        return nll.mean()
    return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def fused_mean_nll(embedding: nnx.Module, hidden, targets, mask=None, *, chunk: int = 256):
    """`mean_nll(embedding.unembed(hidden), targets, mask)` without materialising the [B,T,V] logits.

    hidden [B,T,E] (the final-normed features), targets [B,T] int, mask [B,T] or None. Gradients flow to `hidden`
    and to every parameter of `embedding` (the tied table or the untied readout)."""
    graphdef, params, rest = nnx.split(embedding, nnx.Param, ...)  # differentiate the parameters only
    e = hidden.shape[-1]
    weights = jnp.ones(targets.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    h, t, w = hidden.reshape(-1, e), targets.reshape(-1), weights.reshape(-1)
    n = h.shape[0]
    chunk = max(1, min(chunk, n))
    pad = -n % chunk  # padded rows carry weight 0: no loss, no gradient
    if pad:
        h = jnp.concatenate([h, jnp.zeros((pad, e), h.dtype)])
        t = jnp.concatenate([t, jnp.zeros((pad,), t.dtype)])
        w = jnp.concatenate([w, jnp.zeros((pad,), w.dtype)])
    total = _chunked_nll_sum(graphdef, chunk, params, rest, h, t, w)
    return total / jnp.maximum(jnp.sum(weights), 1.0)


def _chunk_nll(graphdef, params, rest, h, t, w):
    logits = nnx.merge(graphdef, params, rest).unembed(h[None])[0].astype(jnp.float32)  # [C,V]
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, t) * w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _chunked_nll_sum(graphdef, chunk, params, rest, h, t, w):
    return _chunked_forward(graphdef, chunk, params, rest, h, t, w)[0]


def _chunked_forward(graphdef, chunk, params, rest, h, t, w):
    n, e = h.shape
    xs = (h.reshape(n // chunk, chunk, e), t.reshape(n // chunk, chunk), w.reshape(n // chunk, chunk))
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)

    def body(carry, x):
        loss, d_state = carry
        hc, tc, wc = x
        value, vjp = jax.vjp(lambda p, hh: _chunk_nll(graphdef, p, rest, hh, tc, wc), params, hc)
        ds, dh = vjp(jnp.ones((), value.dtype))
        d_state = jax.tree.map(lambda acc, g: acc + g.astype(jnp.float32), d_state, ds)
        return (loss + value, d_state), dh

    (loss, d_state), dh = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros), xs)
    d_state = jax.tree.map(lambda g, p: g.astype(p.dtype), d_state, params)
    return loss, (d_state, dh.reshape(n, e))


def _chunked_bwd(graphdef, chunk, residuals, g):
    d_params, dh = residuals
    scale = lambda x: (g * x).astype(x.dtype)  # noqa: E731
    return jax.tree.map(scale, d_params), None, scale(dh), None, None


_chunked_nll_sum.defvjp(_chunked_forward, _chunked_bwd)
