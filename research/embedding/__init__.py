"""Token-embedding designs (extension point 2): `embed(tokens[B,T]) -> x[B,T,E]`, `unembed(x) -> logits[B,T,V]`,
registered by name in EMBEDDINGS: `table` (table.py), `factorized` (factorized.py), `char_cnn` and `word_char`
(char_cnn.py). Pretrained vectors initialise a table; they live in research/vectors/ (pretrained.py keeps the
documented import path of its reader and writer)."""

from research.embedding import char_cnn, factorized, table  # noqa: F401  (registers)
from research.embedding.base import EMBEDDINGS, EmbeddingConfig, TokenEmbedding

__all__ = ["EMBEDDINGS", "EmbeddingConfig", "TokenEmbedding"]
