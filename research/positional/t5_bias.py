"""T5 relative position buckets (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer", arXiv 1910.10683, §2.1; bucketing rule of the reference Mesh TensorFlow code).

Equation: with rel = j - i (key position minus query position),
    logits_h(i, j) = q_i · k_j / sqrt(D) + w[bucket(rel), h]
where w in R^{num_buckets x H} is learned. bucket(): bidirectional halves the buckets, puts rel > 0 in the upper
half and uses n = |rel|; causal uses n = max(-rel, 0) (all future keys share bucket 0). With e = nb / 2:
n < e -> n (exact); else e + floor(ln(n / e) / ln(max_distance / e) * (nb - e)), capped at nb - 1.

Hooks: `bias` only (`relative = True`).

Conventions / deviations:
- One table shared by all layers (T5 computes it in layer 0 and reuses it); `layer` is ignored.
- T5 itself does not scale q·k by 1/sqrt(D); here the bias is added after that scaling like every bias scheme.
  The bias is learned, so it simply learns a different scale.
- Init: normal, stddev 0.02 (small and nonzero so that the scheme is position-aware from step 0).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding


def relative_position_bucket(
    relative_position: jax.Array, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128
) -> jax.Array:
    """T5 bucket of rel = key_pos - query_pos, integers of any shape [...] -> int32 [...] in [0, num_buckets)."""
    rel = jnp.asarray(relative_position, jnp.int32)
    offset = jnp.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        offset = jnp.where(rel > 0, num_buckets, 0)  # keys after the query use the upper half
        n = jnp.abs(rel)
    else:
        n = jnp.maximum(-rel, 0)
    max_exact = num_buckets // 2
    # Clamp the log's argument to max_exact: smaller n take the exact branch anyway, and ln(0) would be -inf.
    scaled = jnp.log(jnp.maximum(n, max_exact).astype(jnp.float32) / max_exact) / math.log(
        max_distance / max_exact
    )
    large = max_exact + (scaled * (num_buckets - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return offset + jnp.where(n < max_exact, n, large)


@POSITIONAL.register("t5_bias")
@dataclasses.dataclass(frozen=True, kw_only=True)
class T5BiasConfig(PositionalConfig):
    """A learned scalar per (distance bucket, head), one table for all layers."""

    num_buckets: int = 32
    """Distance buckets (halved per direction when bidirectional); half of them are exact distances."""
    max_distance: int = 128
    """Distances >= this share the last bucket; log-spaced buckets cover the range below it."""
    bidirectional: bool = False
    """False for a causal LM (future keys share one bucket); True for encoders (separate buckets per side)."""

    def validate(self, dims: Dims) -> None:
        per_side = self.num_buckets // 2 if self.bidirectional else self.num_buckets
        if self.num_buckets < 2 or (self.bidirectional and self.num_buckets % 2):
            raise ValueError(
                f"t5_bias: expected num_buckets >= 2 (and even when bidirectional), got {self.num_buckets}"
            )
        if per_side < 2 or self.max_distance <= per_side // 2:
            raise ValueError(
                f"t5_bias: expected max_distance > {per_side // 2} (the exact buckets) and >= 2 buckets per side, "
                f"got max_distance={self.max_distance}, num_buckets={self.num_buckets}"
            )

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        return T5Bias(self, num_heads=dims.num_heads, rngs=rngs)


class T5Bias(PositionalEncoding):
    """Looks up w[bucket(k_pos - q_pos)] -> [B,H,T,S]; the table is an nnx.Param [num_buckets, H]."""

    shared_bias = True  # one bias for every layer

    def __init__(self, config: T5BiasConfig, *, num_heads: int, rngs: nnx.Rngs):
        self.num_buckets, self.max_distance = config.num_buckets, config.max_distance
        self.bidirectional = config.bidirectional
        init = nnx.initializers.normal(stddev=0.02)
        self.table = nnx.Param(init(rngs.params(), (config.num_buckets, num_heads), jnp.float32))  # [nb,H]

    def bias(self, q_pos, k_pos, *, layer: int, q=None, k=None, logits=None):
        rel = k_pos[:, None, :] - q_pos[:, :, None]  # [B,T,S]
        buckets = relative_position_bucket(rel, self.bidirectional, self.num_buckets, self.max_distance)
        values = jnp.take(self.table[...], buckets, axis=0)  # [B,T,S,H]
        return jnp.transpose(values, (0, 3, 1, 2)).astype(jnp.float32)  # [B,H,T,S]
