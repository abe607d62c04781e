"""Pretrained tokenizers, used as they are (no training on the corpus):

    sentencepiece:model_file=PATH   a SentencePiece `.model` file (a published model's tokenizer.model)
    hf:path=PATH                    a Hugging Face `tokenizer.json` (or a folder holding one), through the
                                    `tokenizers` package (optional extra: pip install -e .[hf])

Neither has a document separator that its encoder never produces, so the separator is a new id after the
vocabulary (`<doc>`; the model's vocabulary is one larger than the tokenizer's). Bits per byte stays exact in
the sense that matters: the denominator is the UTF-8 bytes of the original text (research/data/tokens.py), whatever
the tokenizer does to it. A tokenizer whose normaliser changes the text (NFKC, lower-casing, a dummy prefix,
collapsed spaces, no byte fallback) does not round-trip: its model predicts the normalised text, which is stated
by `lossless` and measured when a corpus is prepared (the share of documents whose decode(encode(d)) != d, in the
token folder's meta.json, and logged).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from research.config import ConfigError
from research.tokenization.base import TOKENIZERS, TokenizerConfig
from research.tokenization.sentencepiece import SentencePieceTokenizer

HF_FILE = "tokenizer.json"


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@TOKENIZERS.register("sentencepiece")
@dataclasses.dataclass(frozen=True, kw_only=True)
class PretrainedSentencePieceConfig(TokenizerConfig):
    """A pretrained SentencePiece model, used as it is."""

    model_file: str | None = None
    """Path of a SentencePiece `.model` file (required)."""

    def validate(self) -> None:
        if self.model_file is None:
            raise ConfigError("data.tokenizer.model_file: required, the path of a SentencePiece .model file")
        if not Path(self.model_file).expanduser().is_file():
            raise ConfigError(f"data.tokenizer.model_file: no such file: {self.model_file}")

    def fingerprint(self) -> str:
        return _file_digest(Path(self.model_file).expanduser())

    def build(self, train_documents) -> SentencePieceTokenizer:
        self.validate()
        path = Path(self.model_file).expanduser()
        try:
            return SentencePieceTokenizer(path.read_bytes(), name=f"sentencepiece:{path.name}")
        except RuntimeError as e:
            raise ConfigError(
                f"data.tokenizer.model_file: {path} is not a SentencePiece model ({e})"
            ) from None

    def load(self, folder) -> SentencePieceTokenizer:
        return SentencePieceTokenizer.load(folder)


class HFTokenizer:
    """A Hugging Face `tokenizers.Tokenizer` behind the `Tokenizer` protocol; no special tokens are added."""

    def __init__(self, definition: str, *, name: str):
        from tokenizers import Tokenizer as Backend

        self.definition = definition
        self.name = name
        self._tok = Backend.from_str(definition)
        self.doc_id = self._tok.get_vocab_size(with_added_tokens=True)
        self.vocab_size = self.doc_id + 1
        self.fingerprint = hashlib.sha256(b"hf-tokenizer-v1" + definition.encode()).hexdigest()
        self.lossless = None  # not stated by the file: measured when a corpus is prepared

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """encode of each text, by the library's batch encoder."""
        encoded = self._tok.encode_batch_fast(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encoded]

    def decode(self, ids) -> str:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        return self._tok.decode(ids[ids != self.doc_id].tolist(), skip_special_tokens=False)

    def pieces(self) -> list[str]:
        return [*(self._tok.id_to_token(i) or f"<id {i}>" for i in range(self.doc_id)), "<doc>"]

    def save(self, folder) -> None:
        (Path(folder) / "tokenizer.hf.json").write_text(self.definition, encoding="utf-8")
        (Path(folder) / "tokenizer.json").write_text(json.dumps({"name": self.name}))

    @classmethod
    def load(cls, folder) -> HFTokenizer:
        name = json.loads((Path(folder) / "tokenizer.json").read_text())["name"]
        return cls((Path(folder) / "tokenizer.hf.json").read_text(encoding="utf-8"), name=name)


@TOKENIZERS.register("hf")
@dataclasses.dataclass(frozen=True, kw_only=True)
class HFTokenizerConfig(TokenizerConfig):
    """A pretrained Hugging Face tokenizer (`tokenizer.json`), used as it is."""

    path: str | None = None
    """A `tokenizer.json` file, or a folder holding one (required)."""

    def file(self) -> Path:
        path = Path(self.path).expanduser()
        return path / HF_FILE if path.is_dir() else path

    def validate(self) -> None:
        if self.path is None:
            raise ConfigError("data.tokenizer.path: required, a Hugging Face tokenizer.json (or its folder)")
        if not self.file().is_file():
            raise ConfigError(f"data.tokenizer.path: no {HF_FILE} at {self.path}")
        try:
            import tokenizers  # noqa: F401
        except ImportError:
            raise ConfigError(
                "data.tokenizer: 'hf' needs the `tokenizers` package: pip install -e .[hf]"
            ) from None

    def fingerprint(self) -> str:
        return _file_digest(self.file())

    def build(self, train_documents) -> HFTokenizer:
        self.validate()
        try:
            return HFTokenizer(self.file().read_text(encoding="utf-8"), name=f"hf:{self.file().parent.name}")
        except Exception as e:  # noqa: BLE001  (the Rust backend raises its own exception type)
            raise ConfigError(f"data.tokenizer.path: {self.file()} is not a tokenizer.json ({e})") from None

    def load(self, folder) -> HFTokenizer:
        return HFTokenizer.load(folder)
