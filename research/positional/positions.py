"""Position samplers: how the position ids fed to every positional hook are drawn.

A sampler is separate from the scheme, so "randomized RoPE" is `positional=rope, positions=randomized`, not a new
scheme. Each sampler is a frozen kw_only config registered in POSITIONS with two methods,
    validate(max_len)                                   raise ValueError before compiling (max_len = training length)
    sample(batch, length, *, key, train, lengths=None) -> [B, T]   int32, or float32 for `fractional` samplers
`sample` is called once at the top of the forward pass (positions are data; layers never call `arange`), inside
jit, with static `batch` and `length`. `train` lets a sampler behave differently at evaluation; `key` is a JAX PRNG
key that the caller folds per step (research/training/loop.py: fold_in(key(seed), step); evaluation passes key(0)), and
that deterministic samplers ignore. Nothing here holds state or a global key.

Samplers:
- contiguous:   0 .. T-1, always.
- randomized:   Ruoss et al. 2023, "Randomized Positional Encodings Boost Length Generalization of Transformers",
                arXiv 2305.16843: in training, each sequence gets a sorted random subset of size T of
                [0, max_len) (without replacement). Deviation by choice: at evaluation the positions are contiguous
                by default (`eval_mode="contiguous"`); the reference code randomises at test time too, which is
                `eval_mode="randomized"`.
- shifted:      in training, each sequence is 0 .. T-1 plus a random offset in [0, max_offset]; contiguous at
                evaluation unless `eval_mode="shifted"`.
- interpolated: Chen et al. 2023, "Extending Context Window of Large Language Models via Positional Interpolation",
                arXiv 2306.15595, the rescaling m -> m L / L' applied to the position ids: at evaluation, a
                length T > train_len is squeezed into the trained range, p_i = i * train_len / T (float32).
                Training, and evaluation up to train_len, are contiguous int32.

Fractional positions. Only `interpolated` yields non-integer positions (`fractional = True`); its dtype is float32
exactly when it scales (train=False and T > train_len), int32 otherwise. Schemes that read positions through float
math (rope, alibi, sinusoidal, nope) take them as they are; `t5_bias` casts the relative distance to int32
(truncating toward zero, so a bucket of the floor of the distance); `learned` indexes a table and rejects them.
`check_compatible(positional, positions, dims)` finds such pairs before compiling, by tracing the scheme's hooks
abstractly on float positions (or by reading `fractional_positions: bool` if the scheme's config declares it).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from research.positional.base import Dims, PositionalConfig
from research.registry import Registry


@dataclasses.dataclass(frozen=True, kw_only=True)
class PositionSampler:
    """Base config; subclasses are registered in POSITIONS."""

    fractional: ClassVar[bool] = False
    """True when `sample` may return non-integer (float32) positions."""

    def validate(self, max_len: int) -> None:
        """Raise ValueError naming the field and what was expected, given the training length `max_len`."""

    def sample(
        self, batch: int, length: int, *, key: jax.Array | None, train: bool, lengths: jax.Array | None = None
    ) -> jax.Array:
        """Positions [B,T], or [1,T] when every row gets the same ones: the transformer and every scheme broadcast
        them over the batch, so position-only biases (FIRE's MLP, T5 buckets, ...) are computed once per step
        instead of once per row (tested: the same logits as the [B,T] form)."""
        raise NotImplementedError


POSITIONS: Registry[type[PositionSampler]] = Registry("position sampler")


def contiguous(batch: int, length: int) -> jax.Array:
    """0, 1, ..., length - 1 for every row -> int32 [B,T]."""
    return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))


def random_sorted_subset(key: jax.Array, batch: int, length: int, max_len: int) -> jax.Array:
    """Per row, `length` distinct integers of [0, max_len) in increasing order -> int32 [B,T].

    The top-`length` indices of i.i.d. uniform scores form a uniform random subset without replacement.
    """
    scores = jax.random.uniform(key, (batch, max_len))  # [B,max_len]
    _, chosen = jax.lax.top_k(scores, length)  # [B,T], distinct indices
    return jnp.sort(chosen, axis=-1).astype(jnp.int32)


def random_sorted_subset_ragged(key: jax.Array, lengths: jax.Array, length: int, max_len: int) -> jax.Array:
    """Per row b, lengths[b] distinct integers of [0, max_len) in increasing order in the first lengths[b] slots of a
    [B,T] int32 array (T = `length`); later slots hold max_len - 1 (padding). Uniform over subsets of that size.

    The lengths[b] largest of i.i.d. uniform scores select the subset; a stable argsort of "not selected" lists the
    selected indices first, in increasing order.
    """
    batch = lengths.shape[0]
    scores = jax.random.uniform(key, (batch, max_len))  # [B,max_len]
    ranked = -jnp.sort(-scores, axis=-1)  # [B,max_len], descending
    k = jnp.clip(lengths, 1, min(length, max_len))  # [B]
    threshold = jnp.take_along_axis(ranked, (k - 1)[:, None], axis=-1)  # [B,1], the k-th largest score
    chosen = scores >= threshold  # [B,max_len], exactly k True (ties have probability 0)
    order = jnp.argsort(~chosen, axis=-1, stable=True)[:, :length]  # [B,T], chosen indices first, ascending
    real = jnp.arange(length)[None, :] < k[:, None]  # [B,T]
    return jnp.where(real, order, max_len - 1).astype(jnp.int32)


def random_offsets(key: jax.Array, batch: int, max_offset: int) -> jax.Array:
    """One integer offset per row, uniform in [0, max_offset] (inclusive) -> int32 [B,1]."""
    return jax.random.randint(key, (batch, 1), 0, max_offset + 1, dtype=jnp.int32)


def interpolate(batch: int, length: int, train_len: int) -> jax.Array:
    """Positions of `length` tokens scaled into [0, train_len): i * train_len / length -> float32 [B,T]."""
    scale = train_len / length
    return jnp.broadcast_to(jnp.arange(length, dtype=jnp.float32) * scale, (batch, length))


def _need_key(key, name: str):
    if key is None:
        raise ValueError(f"{name}: sampling needs a PRNG key (fold it per step), got key=None")
    return key


@POSITIONS.register("contiguous")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Contiguous(PositionSampler):
    """0, 1, ..., length - 1 for every sequence, in training and at evaluation."""

    def sample(
        self, batch: int, length: int, *, key: jax.Array | None, train: bool, lengths: jax.Array | None = None
    ) -> jax.Array:
        return contiguous(1, length)  # [1,T]: the same for every row, broadcast over the batch


@POSITIONS.register("randomized")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Randomized(PositionSampler):
    """Training positions: a sorted random subset of [0, max_len) per sequence (Ruoss et al. 2023)."""

    max_len: int = 2048
    """Positions are drawn from [0, max_len); set it at least to the longest evaluation length you will test."""
    eval_mode: Literal["contiguous", "randomized"] = "contiguous"
    """Evaluation positions: `contiguous` (0..T-1), or `randomized` as in training (the reference code's choice)."""

    def validate(self, max_len: int) -> None:
        if self.max_len < max_len:
            raise ValueError(
                f"randomized: expected max_len >= the training length {max_len}, got max_len={self.max_len}"
            )
        if self.eval_mode not in ("contiguous", "randomized"):
            raise ValueError(
                f"randomized: expected eval_mode 'contiguous' or 'randomized', got {self.eval_mode!r}"
            )

    def sample(
        self, batch: int, length: int, *, key: jax.Array | None, train: bool, lengths: jax.Array | None = None
    ) -> jax.Array:
        if not train and self.eval_mode == "contiguous":
            return contiguous(1, length)  # [1,T]
        if length > self.max_len:  # static shapes: fails while tracing, before any compute
            raise ValueError(
                f"randomized: cannot draw {length} distinct positions from [0, max_len={self.max_len}); "
                f"raise model.positions.max_len to at least {length}"
            )
        key = _need_key(key, "randomized")
        if lengths is not None:  # right-padded rows: a subset of each row's own size
            return random_sorted_subset_ragged(key, lengths, length, self.max_len)  # [B,T]
        return random_sorted_subset(key, batch, length, self.max_len)  # [B,T]


@POSITIONS.register("shifted")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Shifted(PositionSampler):
    """Training positions: offset + 0..T-1 with one random offset in [0, max_offset] per sequence."""

    max_offset: int = 1024
    """Largest offset added in training; positions reach max_offset + T - 1."""
    eval_mode: Literal["contiguous", "shifted"] = "contiguous"
    """Evaluation positions: `contiguous` (0..T-1), or `shifted` with random offsets as in training."""

    def validate(self, max_len: int) -> None:
        if self.max_offset < 0:
            raise ValueError(f"shifted: expected max_offset >= 0, got {self.max_offset}")
        if self.eval_mode not in ("contiguous", "shifted"):
            raise ValueError(f"shifted: expected eval_mode 'contiguous' or 'shifted', got {self.eval_mode!r}")

    def sample(
        self, batch: int, length: int, *, key: jax.Array | None, train: bool, lengths: jax.Array | None = None
    ) -> jax.Array:
        if not train and self.eval_mode == "contiguous":
            return contiguous(1, length)  # [1,T]
        offsets = random_offsets(_need_key(key, "shifted"), batch, self.max_offset)  # [B,1]
        return contiguous(batch, length) + offsets  # [B,T]


@POSITIONS.register("interpolated")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Interpolated(PositionSampler):
    """Evaluation beyond train_len squeezes positions into [0, train_len) (Chen et al. 2023, position level)."""

    fractional: ClassVar[bool] = True

    train_len: int | None = None
    """The trained length (data.seq_len), required: longer evaluation lengths T use positions i * train_len / T."""

    def validate(self, max_len: int) -> None:
        if self.train_len is None:
            raise ValueError(
                f"interpolated: expected train_len (the training length, here {max_len}), got None; "
                f"e.g. positions=interpolated:train_len={max_len}"
            )
        if self.train_len < 1:
            raise ValueError(f"interpolated: expected train_len >= 1, got {self.train_len}")

    def sample(
        self, batch: int, length: int, *, key: jax.Array | None, train: bool, lengths: jax.Array | None = None
    ) -> jax.Array:
        if self.train_len is None:
            raise ValueError("interpolated: train_len is not set (validate the config first)")
        if train or length <= self.train_len:
            return contiguous(1, length)  # int32 [1,T]
        if lengths is not None:  # right-padded rows: scale each row by its own length
            rows = jnp.maximum(lengths, self.train_len).astype(jnp.float32)[:, None]  # [B,1]
            return jnp.arange(length, dtype=jnp.float32)[None, :] * (self.train_len / rows)  # float32 [B,T]
        return interpolate(batch, length, self.train_len)  # float32 [B,T]


# ------------------------------------------------------------------------------------- compatibility


def check_compatible(positional: PositionalConfig, positions: PositionSampler, dims: Dims) -> None:
    """Raise ValueError if `positions` can yield fractional positions that the scheme `positional` cannot take.

    A scheme config may declare `fractional_positions: bool`; otherwise its hooks are traced abstractly (no compute,
    no compilation) on float32 positions, and any error means "incompatible".
    """
    if not positions.fractional:
        return
    name = getattr(positions, "registered_name", type(positions).__name__)
    scheme = getattr(positional, "registered_name", type(positional).__name__)
    declared = getattr(positional, "fractional_positions", None)
    if declared is False:
        raise ValueError(
            f"positions={name} yields fractional positions; positional={scheme} takes integers only"
        )
    if declared is True:
        return
    try:
        _trace_with_float_positions(positional, dims)
    except Exception as e:  # any failure to trace is the incompatibility we are looking for
        raise ValueError(
            f"positions={name} yields fractional (float32) positions at evaluation, and positional={scheme} cannot "
            f"take them ({type(e).__name__}: {e}); use another sampler or scheme"
        ) from None


def _trace_with_float_positions(positional: PositionalConfig, dims: Dims) -> None:
    module = nnx.eval_shape(lambda: positional.build(dims, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(module)
    b, t, h, d, e = 1, 2, dims.num_heads, dims.head_dim, dims.d_model

    def hooks(state, x, q, pos):
        pe = nnx.merge(graphdef, state)
        x = pe.embed(x, pos)
        for layer in range(dims.num_layers):
            q2, k2 = pe.rotate(q, q, pos, pos, layer=layer)
            pe.bias(pos, pos, layer=layer, q=q2, k=k2)
        return x

    spec = jax.ShapeDtypeStruct
    jax.eval_shape(
        hooks, state, spec((b, t, e), jnp.float32), spec((b, t, h, d), jnp.float32), spec((b, t), jnp.float32)
    )
