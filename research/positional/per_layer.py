"""Per-layer positional schemes: a pattern of schemes repeated cyclically over the layers.

Examples: Llama 4 interleaves RoPE layers with NoPE layers (three RoPE, one NoPE: `pattern=[rope, rope, rope, nope]`,
the default here); Gemma 3 gives local and global attention layers different RoPE bases
(`pattern=[{"name": "rope", "base": 10000}, {"name": "rope", "base": 1000000}]`).

Equation: layer l uses the hooks of pattern[l mod len(pattern)].

Hooks: `rotate` and `bias` are dispatched by `layer` (a static Python int, so the dispatch costs nothing under jit);
the member receives the model's own layer index. `embed` is not per layer (there is one input): the embed of every
distinct absolute member is applied once, in pattern order, so `[sinusoidal, rope]` means "sinusoidal added to the
input, RoPE in odd layers". `relative` is True only when every member is relative.

Conventions:
- Members are resolved through POSITIONAL (any registered name or import path, with options) when the config is
  validated; errors name the entry, e.g. `model.positional.pattern[3]: rope: expected head_dim divisible by 2`.
- Equal entries share one module (and its parameters): `[rope, rope, rope, nope]` builds one RoPE and one NoPE, and
  `[t5_bias, nope]` one T5 table used by every even layer. Write distinct options to get distinct parameters.
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from research.config import Spec, resolve_spec
from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding


@POSITIONAL.register("per_layer")
@dataclasses.dataclass(frozen=True, kw_only=True)
class PerLayerConfig(PositionalConfig):
    """A list of scheme specs cycled over the layers; members keep their own defaults and parameters."""

    pattern: tuple[Spec, ...] = ({"name": "rope"}, {"name": "rope"}, {"name": "rope"}, {"name": "nope"})
    """Scheme specs (names, `name:key=value` strings or dicts) for layers 0, 1, ...; repeated cyclically."""

    @property
    def relative(self) -> bool:  # type: ignore[override]  # an instance property: it depends on the members
        return all(member.relative for member in self.members())

    def members(self) -> tuple[PositionalConfig, ...]:
        """The resolved config of each pattern entry; unknown names or options raise ConfigError naming the index."""
        if not self.pattern:
            raise ValueError("model.positional.pattern: expected at least one scheme spec, got an empty list")
        return tuple(
            resolve_spec(POSITIONAL, spec, field=f"model.positional.pattern[{i}]")
            for i, spec in enumerate(self.pattern)
        )

    def validate(self, dims: Dims) -> None:
        for i, member in enumerate(self.members()):
            try:
                member.validate(dims)
            except ValueError as e:
                raise ValueError(f"model.positional.pattern[{i}]: {e}") from None

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        self.validate(dims)
        distinct: list[PositionalConfig] = []
        index = []  # pattern entry -> distinct member
        for member in self.members():
            if member not in distinct:
                distinct.append(member)
            index.append(distinct.index(member))
        modules = [member.build(dims, rngs=rngs) for member in distinct]
        return PerLayer(modules, tuple(index))


class PerLayer(PositionalEncoding):
    """Routes rotate/bias of layer l to members[index[l mod len(index)]]; embeds with every distinct member once."""

    def __init__(self, members: list[PositionalEncoding], index: tuple[int, ...]):
        self.members = nnx.List(members)
        self.index = index  # static ints: one entry per pattern slot

    def _member(self, layer: int) -> PositionalEncoding:
        return self.members[self.index[layer % len(self.index)]]

    def embed(self, x: jax.Array, pos: jax.Array) -> jax.Array:
        for member in self.members:
            x = member.embed(x, pos)  # identity for relative members
        return x  # [B,T,E]

    def rotate(self, q, k, q_pos, k_pos, *, layer: int):
        return self._member(layer).rotate(q, k, q_pos, k_pos, layer=layer)  # [B,T,H,D], [B,S,K,D]

    def bias(self, q_pos, k_pos, *, layer: int, q=None, k=None, logits=None):
        return self._member(layer).bias(
            q_pos, k_pos, layer=layer, q=q, k=k, logits=logits
        )  # [B|1,H,T,S] or None
