"""The documented import path of the word-vector reader and writer; they live in research/vectors/."""

from research.vectors.align import align, token_text
from research.vectors.base import VectorFileError, Vectors
from research.vectors.read import FORMATS, load_vectors, vector_dim
from research.vectors.write import save_vectors

__all__ = [
    "FORMATS", "VectorFileError", "Vectors", "align", "load_vectors", "save_vectors", "token_text", "vector_dim",
]  # fmt: skip
