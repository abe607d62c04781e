"""Positional encodings (extension point 1): one scheme per file, registered by name in POSITIONAL.

Importing this package registers every built-in scheme; `positions.py` holds the position samplers (POSITIONS).
"""

from research.positional import (  # noqa: F401  (register)
    alibi,
    cope,  # noqa: F401  (register)
    data_dependent_alibi,  # noqa: F401  (register)
    dynamic_bias,  # noqa: F401  (register)
    fire,  # noqa: F401  (register)
    kerple,  # noqa: F401  (register)
    learned,
    nope,
    per_layer,  # noqa: F401  (register; resolves members through POSITIONAL)
    positions,
    rope,
    sandwich,  # noqa: F401  (register)
    scaled_sinusoidal,  # noqa: F401  (register)
    sinusoidal,
    t5_bias,
    xl_relative,  # noqa: F401  (register)
    xpos,  # noqa: F401  (register)
)
from research.positional.base import POSITIONAL, Dims, PositionalConfig, PositionalEncoding
from research.positional.positions import POSITIONS

__all__ = ["POSITIONAL", "POSITIONS", "Dims", "PositionalConfig", "PositionalEncoding"]
