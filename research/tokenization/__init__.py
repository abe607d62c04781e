"""Tokenizers behind one `Tokenizer` protocol, registered by name in TOKENIZERS: byte, char, word, bpe,
unigram."""

from research.tokenization import byte, sentencepiece, vocab  # noqa: F401  (registers)
from research.tokenization.base import TOKENIZERS, Tokenizer, TokenizerConfig, resolve_tokenizer

__all__ = ["TOKENIZERS", "Tokenizer", "TokenizerConfig", "resolve_tokenizer"]
