"""Tokenizers behind one `Tokenizer` protocol, registered by name in TOKENIZERS: byte, char, word, bpe,
unigram (trained on the corpus), sentencepiece and hf (pretrained files)."""

from research.tokenization import byte, pretrained, sentencepiece, vocab  # noqa: F401  (registers)
from research.tokenization.base import TOKENIZERS, Tokenizer, TokenizerConfig, resolve_tokenizer

__all__ = ["TOKENIZERS", "Tokenizer", "TokenizerConfig", "resolve_tokenizer"]
