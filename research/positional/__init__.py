"""Positional encodings (extension point 1): one scheme per file, registered by name in POSITIONAL.

Importing this package registers every built-in scheme; `positions.py` holds the position samplers (POSITIONS).
"""

from research.positional import alibi, learned, nope, positions, rope, sinusoidal, t5_bias  # noqa: F401  (register)
from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding
from research.positional.positions import POSITIONS

__all__ = ["POSITIONAL", "POSITIONS", "Dims", "PositionalConfig", "PositionalEncoding"]
