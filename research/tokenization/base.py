"""The tokenizer interface and its registry.

A tokenizer config is a frozen dataclass registered in TOKENIZERS; `build(train_documents)` returns an object
satisfying `Tokenizer`, which `save(folder)` writes beside a corpus's token files and `load(folder)` reads back.
Every tokenizer is lossless (`decode(encode(text)) == text`) so that bits-per-byte is measured on the exact
corpus bytes, and reserves `doc_id`, a document separator that `encode` never produces.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import numpy as np

from research.registry import Registry

TOKENIZERS: Registry[type[TokenizerConfig]] = Registry("tokenizer")


@runtime_checkable
class Tokenizer(Protocol):
    name: str
    """Readable description, e.g. `bpe-4096`."""
    vocab_size: int
    """Ids are in [0, vocab_size)."""
    doc_id: int
    """Document separator id: in the vocabulary, never produced by `encode`, decoded as ''."""
    fingerprint: str
    """Content hash that changes whenever encode could change; keys tokenized-data caches."""

    def encode(self, text: str) -> np.ndarray:
        """str -> int32 ids [N]."""
        ...

    def decode(self, ids) -> str:
        """Ids (any int sequence) -> str; the exact inverse of encode (closed vocabularies: without <unk>)."""
        ...

    def pieces(self) -> list[str]:
        """A readable string for every id (for diagnostics and for aligning pretrained vectors)."""
        ...

    def save(self, folder) -> None:
        """Write what `TokenizerConfig.load(folder)` needs to rebuild this tokenizer (beside its token files)."""
        ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    """Base class of registered tokenizer configs."""

    def validate(self) -> None:
        """Raise ConfigError naming the field (data.tokenizer.<field>); reads no data."""

    def fingerprint(self) -> str:
        """What identifies the files this config reads beyond its fields (a pretrained model's content); ''."""
        return ""

    def build(self, train_documents) -> Tokenizer:
        """The tokenizer, trained where it needs training on `train_documents` (an iterable of str)."""
        raise NotImplementedError

    def load(self, folder) -> Tokenizer:
        """The tokenizer `Tokenizer.save(folder)` wrote."""
        raise NotImplementedError


def resolve_tokenizer(spec, *, field: str = "data.tokenizer") -> TokenizerConfig:
    """Spec dict or string -> registered tokenizer config (unknown names list the valid ones)."""
    from research.config import resolve_spec

    return resolve_spec(TOKENIZERS, spec, field=field)
