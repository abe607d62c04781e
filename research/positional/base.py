"""The positional-encoding interface and NoPE, its identity base.

Axis letters: B batch, T query length, S key length, H heads, K kv heads, D head dim, E width, L layers.

A scheme implements only the hooks it needs; the transformer calls all three at fixed sites:
    embed(x[B,T,E], pos[B,T]) -> x                                    absolute: added to token embeddings
    rotate(q[B,T,H,D], k[B,S,K,D], q_pos[B,T], k_pos[B,S], *, layer) -> q, k     rotary family
    bias(q_pos[B,T], k_pos[B,S], *, layer, q=None, k=None, logits=None) -> [B|1,H,T,S] or None
                                                       added after 1/sqrt(D); logits: attention's q·k/sqrt(D)
Positions are integer data made once per forward pass, never `arange` inside a layer. Their leading axis may be 1
when every row has the same positions (contiguous samplers return [1,T]): hooks broadcast it over the batch, so a
position-only bias is computed once per step rather than B times (contract-tested for every scheme).
Attention calls `bias` once per block of queries it computes (research/model/attention.py: query_blocks), with
those queries' positions and q, and the keys they can see: T may be less than S, the queries being the last T of
the S keys. A hook must not assume T == S or q_pos is k_pos (tested: blocks equal one block for every scheme).
Entries of keys after their query (j > i + S - T) are hidden by attention's causal mask and never read: a hook may
leave them unspecified, but finite (xl_relative's relative shift does).
Attention also passes `logits`, its own float32 q·k/sqrt(D) [B,H,T,S] for those queries and keys (after `rotate`,
before any bias and the mask), for a bias that is a function of them (CoPE's gates): reading them instead of
recomputing q·k saves that product and its backward. Called without them (tests, other callers), such a hook
computes them from q and k, with the same result.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from research.registry import Registry

POSITIONAL: Registry[type[PositionalConfig]] = Registry("positional encoding")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Dims:
    """Model shapes a scheme may need to build itself."""

    d_model: int  # E
    num_heads: int  # H
    head_dim: int  # D
    num_layers: int  # L
    max_len: int  # training sequence length


def causal_mask_of(t: int, s: int) -> jax.Array:
    """[1,1,t,s] bool: `causal_mask` for t queries, the last t of s keys."""
    i = jnp.arange(t)[:, None] + (s - t)  # queries are the last t of the s keys (cached decoding)
    j = jnp.arange(s)[None, :]
    return (j <= i)[None, None]


class PositionalEncoding(nnx.Module):
    """NoPE: every hook is the identity. Schemes subclass this and override what they need."""

    shared_bias: ClassVar[bool] = False
    """True when `bias` ignores `layer`, q and k (one bias for every layer, a function of positions and the
    scheme's parameters only). The transformer then calls it once per forward pass and gives every layer the same
    array, so its backward pass runs once, not once per layer (contract-tested: the flag must be true to the hook).
    """

    def embed(self, x: jax.Array, pos: jax.Array) -> jax.Array:
        return x

    def rotate(self, q, k, q_pos, k_pos, *, layer: int):
        return q, k

    def bias(self, q_pos, k_pos, *, layer: int, q=None, k=None, logits=None):
        return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PositionalConfig:
    """Base config. Subclasses are frozen kw_only dataclasses registered in POSITIONAL with the paper's defaults."""

    relative: ClassVar[bool] = True
    """True when attention depends on positions only through offsets i - j (shift-invariant)."""

    def validate(self, dims: Dims) -> None:
        """Raise ValueError naming the field and what was expected; called before any compilation."""

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        return PositionalEncoding()
