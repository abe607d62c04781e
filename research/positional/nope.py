"""NoPE: no positional encoding at all.

Haviv et al. 2022, "Transformer Language Models without Positional Encodings Still Learn Positional Information",
arXiv 2203.16634; Kazemnejad et al. 2023, "The Impact of Positional Encoding on Length Generalization in
Transformers", arXiv 2305.19466.

Equation: none. Attention logits are q_i · k_j / sqrt(D); a causal mask alone lets the model infer positions (the
number of visible keys grows with i), which is why NoPE is a real baseline for decoders and useless for encoders.

Hooks: none; every hook of `PositionalEncoding` is already the identity (embed, rotate) or absent (bias).
`relative = True`: the logits do not depend on absolute positions at all, so they are trivially shift-invariant.
"""

from __future__ import annotations

import dataclasses

from flax import nnx

from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding


@POSITIONAL.register("nope")
@dataclasses.dataclass(frozen=True, kw_only=True)
class NoPEConfig(PositionalConfig):
    """No options: NoPE has nothing to configure."""

    def validate(self, dims: Dims) -> None:
        pass  # every shape works

    def build(self, dims: Dims, *, rngs: nnx.Rngs) -> PositionalEncoding:
        return NoPE()


class NoPE(PositionalEncoding):
    """The identity base class under its own name, so a built model prints what it is."""
