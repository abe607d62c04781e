"""Byte-level tokenizer: ids 0..255 are UTF-8 bytes, 256 is the document separator (vocab_size 257)."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from research.tokenization.base import TOKENIZERS, TokenizerConfig


class ByteTokenizer:
    name = "byte"
    vocab_size = 257
    doc_id = 256
    fingerprint = hashlib.sha256(b"byte-tokenizer-v1").hexdigest()

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def save(self, folder) -> None:
        """Nothing to save: the byte tokenizer has no state."""

    def decode(self, ids) -> str:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() > self.doc_id):
            raise ValueError(
                f"byte tokenizer: ids must be in [0, {self.doc_id}], got {ids.min()}..{ids.max()}"
            )
        # a truncated multi-byte sequence (e.g. a model sample) decodes with U+FFFD instead of failing
        return ids[ids != self.doc_id].astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def pieces(self) -> list[str]:
        """Printable ASCII bytes as themselves, others as <0xNN>; the separator as <doc>."""
        return [chr(b) if 32 <= b < 127 else f"<0x{b:02X}>" for b in range(256)] + ["<doc>"]


@TOKENIZERS.register("byte")
@dataclasses.dataclass(frozen=True, kw_only=True)
class ByteConfig(TokenizerConfig):
    """UTF-8 bytes; needs no training."""

    def build(self, train_documents) -> ByteTokenizer:
        return ByteTokenizer()

    def load(self, folder) -> ByteTokenizer:
        return ByteTokenizer()
