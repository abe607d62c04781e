"""RoPE context scaling: how the rotary frequencies change to reach past the training length, as Hugging Face
transformers' `modeling_rope_utils.py` computes them (rope types linear, ntk, dynamic, yarn, llama3, longrope,
proportional; formulas checked against that file, code written here).

With theta_k = base^(-2k/d), k = 0 .. d/2 - 1 (d = the rotary dimension), s = `factor`, L0 = `original_max_len`:
- linear, position interpolation (Chen et al. 2023, arXiv 2306.15595): theta'_k = theta_k / s.
- ntk, NTK-aware (bloc97 2023; analysed in Peng et al. 2023, §3.1): base' = base * s^(d/(d-2)).
- dynamic_ntk (emozilla 2023): base' = base * (s L / L0 - (s - 1))^(d/(d-2)) for the current length L > L0.
- yarn (Peng et al. 2023, "YaRN: Efficient Context Window Extension of Large Language Models", arXiv 2309.00071,
  §3.2-3.4): a ramp over pair index k between extrapolated theta_k (fast pairs) and interpolated theta_k / s (slow
  pairs), plus the attention factor 0.1 ln s + 1 multiplying cos and sin.
- llama3 (Llama 3.1, "The Llama 3 Herd of Models", arXiv 2407.21783; the rule is in Meta's released code): keep
  wavelengths < L0/high_freq_factor, divide those > L0/low_freq_factor by s, blend in between.
- proportional, p-RoPE (Barbero et al. 2024, "Round and Round We Go! What makes Rotary Positional Encodings
  useful?", arXiv 2410.06205): only the first int(p d / 2) pairs rotate; the rest get frequency 0.
- longrope (Ding et al. 2024, "LongRoPE", arXiv 2402.13753): theta_k / f_k with searched per-pair factors f
  (short ones up to L0, long ones beyond), attention factor sqrt(1 + ln s / ln L0), s = max_len / L0.

Each method is a frozen config registered in ROPE_SCALING; `parameters(dim, base, length)` gives the inverse
frequencies [dim/2] and the factor multiplying cos and sin. None of them has trainable parameters, so a model
trained with plain RoPE can be evaluated with any of them. Everything here depends on static numbers only (dims,
base, the call's static length), so it is computed on the host in float64 and rounded once to float32.
`original_max_len=None` means the model's training length (filled in by `bind`, called from `RoPEConfig.build`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from research.registry import Registry

ROPE_SCALING: Registry[type[RoPEScaling]] = Registry("rope scaling")


def _theta(dim: int, base: float) -> np.ndarray:
    return base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)  # [dim/2]


def _require(ok: bool, field: str, expected: str, got) -> None:
    if not ok:
        raise ValueError(f"rope.scaling.{field}: expected {expected}, got {got!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RoPEScaling:
    """Base of the scaling methods: plain RoPE frequencies and attention factor 1."""

    def __post_init__(self):
        # Options shared by several methods are checked here once; `_check` adds a method's own checks.
        factor, l0 = getattr(self, "factor", 1.0), getattr(self, "original_max_len", None)
        _require(factor >= 1.0, "factor", "a context-extension ratio >= 1", factor)
        _require(l0 is None or l0 >= 1, "original_max_len", "a positive length or None (training length)", l0)
        attention = getattr(self, "attention_factor", None)
        _require(attention is None or attention > 0, "attention_factor", "> 0 or None", attention)
        self._check()

    def _check(self) -> None:
        """Method-specific option checks; raise ValueError naming the field."""

    def parameters(self, dim: int, base: float, length: int | None = None) -> tuple[np.ndarray, float]:
        """(inverse frequencies float32 [dim/2], factor on cos and sin) for rotary dim `dim` at static `length`."""
        return _theta(dim, base).astype(np.float32), 1.0

    def validate(self, dim: int) -> None:
        """Checks that need the rotary dimension; raise ValueError naming the field."""

    def bind(self, train_len: int) -> RoPEScaling:
        """Fill an unset `original_max_len` with the model's training length."""
        if getattr(self, "original_max_len", 0) is None:
            return dataclasses.replace(self, original_max_len=train_len)
        return self

    def _l0(self) -> int:
        if self.original_max_len is None:  # type: ignore[attr-defined]
            raise ValueError(
                "rope.scaling.original_max_len: not set; None means the training length, which only "
                "RoPEConfig.build knows (call bind(train_len) or pass it explicitly)"
            )
        return self.original_max_len  # type: ignore[attr-defined]


@ROPE_SCALING.register("linear")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Linear(RoPEScaling):
    """Position interpolation: positions are squeezed by s into the trained range (needs fine-tuning to shine)."""

    factor: float
    """s: every frequency is divided by it, so position s*p at evaluation looks like p did in training."""

    def parameters(self, dim, base, length=None):
        return (_theta(dim, base) / self.factor).astype(np.float32), 1.0


@ROPE_SCALING.register("ntk")
@dataclasses.dataclass(frozen=True, kw_only=True)
class NTK(RoPEScaling):
    """NTK-aware static scaling: a larger base stretches slow pairs by ~s while fast pairs barely change."""

    factor: float
    """s: base' = base * s^(d/(d-2)), which divides the slowest pair's frequency by exactly s."""

    def validate(self, dim):
        _require(dim > 2, "dim", "a rotary dimension > 2 for NTK scaling (d/(d-2))", dim)

    def _ratio(self, length: int | None) -> float:
        return self.factor

    def parameters(self, dim, base, length=None):
        return _theta(dim, base * self._ratio(length) ** (dim / (dim - 2))).astype(np.float32), 1.0


@ROPE_SCALING.register("dynamic_ntk")
@dataclasses.dataclass(frozen=True, kw_only=True)
class DynamicNTK(NTK):
    """NTK scaling whose base grows with the current length L; plain RoPE up to L0."""

    factor: float
    """s: base' = base * (s L / L0 - (s - 1))^(d/(d-2)) once L > L0."""
    original_max_len: int | None = None
    """L0, the length trained on; None = the model's training length."""

    def _ratio(self, length):
        l0 = self._l0()
        length = l0 if length is None else max(length, l0)  # at or below L0 the ratio is exactly 1
        return self.factor * length / l0 - (self.factor - 1)


@ROPE_SCALING.register("yarn")
@dataclasses.dataclass(frozen=True, kw_only=True)
class YaRN(RoPEScaling):
    """NTK-by-parts interpolation with attention temperature (YaRN, Eq. 17-22)."""

    factor: float
    """s: slow pairs are interpolated by it; also sets the default attention factor."""
    original_max_len: int | None = None
    """L0, the length trained on; None = the model's training length."""
    beta_fast: float = 32.0
    """Pairs turning more than beta_fast times over L0 are left unchanged (extrapolated)."""
    beta_slow: float = 1.0
    """Pairs turning fewer than beta_slow times over L0 are fully interpolated (divided by s)."""
    attention_factor: float | None = None
    """Multiplies cos and sin (so the logits by its square); None = 0.1 ln s + 1 (1 when s <= 1)."""
    truncate: bool = True
    """Round the ramp ends to integers (floor low, ceil high) as HF does by default; False keeps them real."""

    def _check(self):
        _require(
            self.beta_fast > self.beta_slow > 0,
            "beta_fast",
            f"> beta_slow={self.beta_slow} > 0",
            self.beta_fast,
        )

    def correction_range(self, dim: int, base: float) -> tuple[float, float]:
        """(low, high) ramp ends in pair-index units, from the dimension where a pair turns beta times over L0."""

        def dim_at(turns):  # d ln(L0 / (2 pi turns)) / (2 ln base)
            return dim * math.log(self._l0() / (2 * math.pi * turns)) / (2 * math.log(base))

        low, high = dim_at(self.beta_fast), dim_at(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        return max(low, 0), min(high, dim - 1)

    def parameters(self, dim, base, length=None):
        low, high = self.correction_range(dim, base)
        high = high + 1e-3 if high == low else high  # HF's guard against a zero-width ramp
        ramp = np.clip((np.arange(dim // 2) - low) / (high - low), 0.0, 1.0)  # [dim/2]: 0 keep, 1 interpolate
        theta = _theta(dim, base)
        inv_freq = theta / self.factor * ramp + theta * (1.0 - ramp)
        attention = self.attention_factor
        if attention is None:
            attention = 0.1 * math.log(self.factor) + 1.0 if self.factor > 1 else 1.0
        return inv_freq.astype(np.float32), float(attention)


@ROPE_SCALING.register("llama3")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Llama3(RoPEScaling):
    """Llama 3.1 wavelength-banded interpolation (defaults: Meta's Llama 3.1 release)."""

    factor: float = 8.0
    """s: long wavelengths are divided by it."""
    low_freq_factor: float = 1.0
    """Wavelengths above L0 / low_freq_factor are fully interpolated."""
    high_freq_factor: float = 4.0
    """Wavelengths below L0 / high_freq_factor are kept."""
    original_max_len: int | None = 8192
    """L0, the length trained on (Llama 3's 8192); None = the model's training length."""

    def _check(self):
        low, high = self.low_freq_factor, self.high_freq_factor
        _require(high > low > 0, "high_freq_factor", f"> low_freq_factor={low} > 0", high)

    def parameters(self, dim, base, length=None):
        l0, theta = self._l0(), _theta(dim, base)
        wavelength = 2 * math.pi / theta  # [dim/2]
        smooth = (l0 / wavelength - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor)
        blended = (1 - smooth) * theta / self.factor + smooth * theta
        divided = np.where(wavelength > l0 / self.low_freq_factor, theta / self.factor, blended)
        inv_freq = np.where(wavelength < l0 / self.high_freq_factor, theta, divided)
        return inv_freq.astype(np.float32), 1.0


@ROPE_SCALING.register("proportional")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Proportional(RoPEScaling):
    """p-RoPE: rotate only the fastest int(p d/2) pairs, keep the full-d spacing of their frequencies."""

    p: float
    """Fraction of pairs that rotate (0 = NoPE on this head slice, 1 = plain RoPE)."""
    factor: float = 1.0
    """Divides the rotating frequencies, as HF's optional `factor`."""

    def _check(self):
        _require(0.0 <= self.p <= 1.0, "p", "a fraction in [0, 1]", self.p)

    def parameters(self, dim, base, length=None):
        rotating = int(self.p * dim // 2)  # HF: int(p * d // 2)
        inv_freq = np.where(np.arange(dim // 2) < rotating, _theta(dim, base), 0.0) / self.factor
        return inv_freq.astype(np.float32), 1.0


@ROPE_SCALING.register("longrope")
@dataclasses.dataclass(frozen=True, kw_only=True)
class LongRoPE(RoPEScaling):
    """Per-pair rescale factors found by search (Phi-3 style); short factors up to L0, long ones past it."""

    short_factor: tuple[float, ...]
    """f_k for calls whose static length is <= L0, one per rotary pair [d/2]."""
    long_factor: tuple[float, ...]
    """f_k for calls whose static length is > L0 [d/2]."""
    max_len: int
    """Extended context the long factors target; s = max_len / L0 sets the default attention factor."""
    original_max_len: int | None = None
    """L0, the length trained on; None = the model's training length."""
    attention_factor: float | None = None
    """Multiplies cos and sin; None = sqrt(1 + ln s / ln L0) (1 when s <= 1)."""

    def _check(self):
        for name in ("short_factor", "long_factor"):  # tuples keep the config hashable (module metadata)
            object.__setattr__(self, name, tuple(float(f) for f in getattr(self, name)))
            _require(all(f > 0 for f in getattr(self, name)), name, "positive factors", getattr(self, name))
        _require(self.max_len >= 1, "max_len", "a positive length", self.max_len)

    def validate(self, dim):
        for name in ("short_factor", "long_factor"):
            got = len(getattr(self, name))
            _require(got == dim // 2, name, f"{dim // 2} factors (rotary dim {dim} / 2)", f"{got} factors")

    def parameters(self, dim, base, length=None):
        l0 = self._l0()
        # HF (Phi-3) switches on the current sequence length; here that is the call's static length.
        factors = self.long_factor if length is not None and length > l0 else self.short_factor
        s = self.max_len / l0
        attention = self.attention_factor
        if attention is None:
            attention = math.sqrt(1 + math.log(s) / math.log(l0)) if s > 1 else 1.0
        return (_theta(dim, base) / np.asarray(factors)).astype(np.float32), float(attention)


def pair_plan(scaling: RoPEScaling | None, dim: int, base: float, train_len: int) -> list[dict]:
    """What a scaling does to each rotary pair of a head of width `dim` trained at `train_len`: the pair's
    wavelength, how many turns it makes within the training length (a pair under one turn never saw all its phases
    in training), and the ratio of its scaled to its original frequency (1 kept, 1/s interpolated, between: the
    ramp, or another rule's partial change); the attention factor is the same for every pair."""
    scaling = (scaling or RoPEScaling()).bind(train_len)
    theta = _theta(dim, base)
    inv_freq, attention = scaling.parameters(dim, base, int(train_len * getattr(scaling, "factor", 1.0)))
    ratios = inv_freq.astype(np.float64) / theta
    rows = []
    for k, (original, ratio) in enumerate(zip(theta, ratios, strict=True)):
        status = (
            "kept"
            if abs(ratio - 1) < 1e-4
            else "interpolated"
            if abs(ratio - ratios.min()) < 1e-4
            else "ramp"
        )
        rows.append({"pair": k, "wavelength": 2 * math.pi / original, "turns_in_training": train_len * original / (2 * math.pi),
                     "frequency_ratio": ratio, "status": status, "attention_factor": attention})  # fmt: skip
    return rows
