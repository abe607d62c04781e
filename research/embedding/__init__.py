"""Token-embedding designs (extension point 2): `embed(tokens[B,T]) -> x[B,T,E]`, `unembed(x) -> logits[B,T,V]`."""

from research.embedding import char_cnn, factorized, table  # noqa: F401  (registers)
from research.embedding.base import EMBEDDINGS, EmbeddingConfig, TokenEmbedding

__all__ = ["EMBEDDINGS", "EmbeddingConfig", "TokenEmbedding"]
