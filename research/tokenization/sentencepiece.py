"""SentencePiece subword tokenizers (Kudo & Richardson 2018, arXiv:1808.06226): `bpe` and `unigram`.

Trained losslessly so that bits-per-byte is exact: identity normalisation, no dummy prefix, whitespace kept,
byte fallback for any character outside the vocabulary (emoji, rare scripts, control characters).
SentencePiece reads text line by line and writes spaces as U+2581 ('▁'), so neither '\\n' nor a literal '▁'
survives its own encode/decode. The wrapper therefore cuts the text at those two characters and writes each
as its UTF-8 byte-fallback pieces (e.g. '\\n' -> <0x0A>); training sees the same cut lines. The document
separator is the control symbol `<doc>`: SentencePiece never emits it from text and decodes it as ''.
Trained models are cached by content hash of (training lines, options, versions) under
`cache_dir()/tokenizers/`; the same documents give byte-identical models (checked in the tests).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from research.config import ConfigError
from research.runtime.cache import atomic_write, cache_dir
from research.tokenization.base import TOKENIZERS, TokenizerConfig

WRAPPER_VERSION = "spm-wrapper-v1"  # bump when encode/decode or training options change
DOC_PIECE = "<doc>"
_CUT = re.compile("([\n\u2581])")  # the characters SentencePiece cannot round-trip; kept by re.split
_NUM_SPECIAL = 2  # <unk> and <doc>
_NUM_BYTES = 256


class SentencePieceTokenizer:
    """A SentencePiece model (serialized bytes) behind the `Tokenizer` protocol: one trained here (which has the
    `<doc>` control piece), or a pretrained one, whose separator is a new id after its vocabulary."""

    def __init__(self, model: bytes, *, name: str):
        self.model = model
        self.name = name
        self._sp = spm.SentencePieceProcessor(model_proto=model)
        self.vocab_size = self._sp.get_piece_size()
        self.doc_id = self._sp.piece_to_id(DOC_PIECE)
        self.appended_doc = not self._sp.is_control(self.doc_id)  # a pretrained model: no <doc> piece
        if self.appended_doc:
            self.doc_id = self.vocab_size
            self.vocab_size += 1
        self.fingerprint = hashlib.sha256(WRAPPER_VERSION.encode() + model).hexdigest()
        self._literal = {ch: self._literal_ids(ch) for ch in "\n\u2581"}
        self.lossless = is_lossless(model) and all(self._sp.unk_id() not in v for v in self._literal.values())

    def _literal_ids(self, ch: str) -> list[int]:
        """The ids written for a cut character: its UTF-8 byte-fallback pieces; for a newline in a model without
        them, a '\\n' piece of its own; else <unk> (lossy)."""
        pieces = [f"<0x{b:02X}>" for b in ch.encode()]
        if all(self._sp.piece_to_id(p) != self._sp.unk_id() for p in pieces):
            return [self._sp.piece_to_id(p) for p in pieces]
        if ch == "\n" and self._sp.piece_to_id(ch) != self._sp.unk_id():
            return [self._sp.piece_to_id(ch)]
        return [self._sp.unk_id()]

    def encode(self, text: str) -> np.ndarray:
        parts = _CUT.split(text)  # [segment, cut char, segment, cut char, ..., segment]
        encoded = self._sp.encode(parts[0::2])
        ids = list(encoded[0])
        for cut, segment in zip(parts[1::2], encoded[1:]):
            ids.extend(self._literal[cut])
            ids.extend(segment)
        return np.asarray(ids, dtype=np.int32)

    def decode(self, ids) -> str:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if self.appended_doc:
            ids = ids[ids != self.doc_id]  # not a piece of the model; decodes as '' like a control piece
        return self._sp.decode(ids.tolist())

    def pieces(self) -> list[str]:
        """The piece of every id, as SentencePiece writes it ('▁' for a space, '<0x0A>' for byte fallbacks)."""
        pieces = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
        return [*pieces, DOC_PIECE] if self.appended_doc else pieces

    def save(self, folder: Path) -> None:
        (Path(folder) / "tokenizer.model").write_bytes(self.model)
        (Path(folder) / "tokenizer.json").write_text(json.dumps({"name": self.name}))

    @classmethod
    def load(cls, folder: Path) -> SentencePieceTokenizer:
        name = json.loads((Path(folder) / "tokenizer.json").read_text())["name"]
        return cls((Path(folder) / "tokenizer.model").read_bytes(), name=name)


def is_lossless(model: bytes) -> bool:
    """Whether a SentencePiece model round-trips any text: identity normalisation, no dummy prefix, spaces kept,
    byte fallback."""
    proto = sentencepiece_model_pb2.ModelProto.FromString(model)
    norm = proto.normalizer_spec
    return (
        (norm.name == "identity" or not norm.precompiled_charsmap)
        and not norm.normalization_rule_tsv
        and not norm.add_dummy_prefix
        and not norm.remove_extra_whitespaces
        and proto.trainer_spec.byte_fallback
    )


def training_lines(documents, max_lines: int) -> list[str]:
    """Documents -> the non-empty segments between cut characters; evenly strided down to max_lines. At most
    4 x max_lines are read (a corpus larger than that trains on its beginning), so memory stays bounded."""
    lines = []
    for doc in documents:
        lines.extend(seg for seg in _CUT.split(doc)[0::2] if seg)
        if len(lines) >= 4 * max_lines:
            break
    if len(lines) > max_lines:
        lines = lines[:: math.ceil(len(lines) / max_lines)]
    return lines


@dataclasses.dataclass(frozen=True, kw_only=True)
class SentencePieceConfig(TokenizerConfig):
    """Shared options; subclasses fix `model_type`."""

    model_type: ClassVar[str]
    vocab_size: int = 4096
    """Total ids including 256 byte-fallback pieces, <unk> and <doc>."""
    character_coverage: float = 1.0
    """Fraction of characters covered by their own piece; the rest fall back to bytes."""
    split_digits: bool = True
    """Every digit is its own piece (numbers are not memorised as chunks)."""
    max_train_lines: int = 2_000_000
    """Cap on training lines (deterministic even stride over the corpus), bounding time and memory."""

    def validate(self) -> None:
        if self.vocab_size <= _NUM_BYTES + _NUM_SPECIAL:
            raise ConfigError(
                f"data.tokenizer.vocab_size: expected > {_NUM_BYTES + _NUM_SPECIAL} "
                f"({_NUM_BYTES} byte-fallback pieces + <unk> + <doc>), got {self.vocab_size}"
            )
        if not 0 < self.character_coverage <= 1:
            raise ConfigError(
                f"data.tokenizer.character_coverage: expected in (0, 1], got {self.character_coverage}"
            )
        if self.max_train_lines <= 0:
            raise ConfigError(f"data.tokenizer.max_train_lines: expected > 0, got {self.max_train_lines}")

    def trainer_options(self) -> dict:
        return dict(
            model_type=self.model_type,
            vocab_size=self.vocab_size,
            character_coverage=self.character_coverage,
            split_digits=self.split_digits,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            byte_fallback=True,
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            control_symbols=[DOC_PIECE],
            max_sentence_length=1 << 16,  # bytes; Wikipedia paragraphs run to several thousand
            input_sentence_size=0,  # no sampling inside SentencePiece: training_lines subsamples determinately
            shuffle_input_sentence=False,
            train_extremely_large_corpus=False,
            num_threads=2,
            minloglevel=2,
        )

    def load(self, folder) -> SentencePieceTokenizer:
        return SentencePieceTokenizer.load(folder)

    def build(self, train_documents) -> SentencePieceTokenizer:
        self.validate()
        name = f"{self.model_type}-{self.vocab_size}"
        lines = training_lines(train_documents, self.max_train_lines)
        digest = hashlib.sha256()
        for line in lines:
            digest.update(line.encode("utf-8") + b"\0")
        options = json.dumps(self.trainer_options(), sort_keys=True)
        digest.update(f"|{options}|{spm.__version__}|{WRAPPER_VERSION}".encode())
        path = cache_dir() / "tokenizers" / f"{name}-{digest.hexdigest()[:24]}.model"
        if path.exists():
            return SentencePieceTokenizer(path.read_bytes(), name=name)
        model = self._train(lines)
        atomic_write(path, model)
        return SentencePieceTokenizer(model, name=name)

    def _train(self, lines: list[str]) -> bytes:
        if not lines:
            raise ConfigError("data.tokenizer: the train split has no text to train SentencePiece on")
        writer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=writer, **self.trainer_options()
            )
        except RuntimeError as e:
            message = str(e).split("]", 1)[-1].strip()  # drop SentencePiece's source-location prefix
            problem = "too large for this corpus" if "too high" in message else "does not fit this corpus"
            raise ConfigError(
                f"data.tokenizer.vocab_size={self.vocab_size} {problem}; SentencePiece says: {message}"
            ) from None
        model = writer.getvalue()
        size = spm.SentencePieceProcessor(model_proto=model).get_piece_size()
        if (
            size != self.vocab_size
        ):  # hard_vocab_limit should make this impossible; never train silently small
            raise ConfigError(
                f"data.tokenizer.vocab_size={self.vocab_size} too large for this corpus; SentencePiece made {size}"
            )
        return model


@TOKENIZERS.register("bpe")
@dataclasses.dataclass(frozen=True, kw_only=True)
class BPEConfig(SentencePieceConfig):
    """Byte-pair encoding (Sennrich et al. 2016, arXiv:1508.07909) as trained by SentencePiece."""

    model_type: ClassVar[str] = "bpe"


@TOKENIZERS.register("unigram")
@dataclasses.dataclass(frozen=True, kw_only=True)
class UnigramConfig(SentencePieceConfig):
    """Unigram language-model segmentation (Kudo 2018, arXiv:1804.10959) as trained by SentencePiece."""

    model_type: ClassVar[str] = "unigram"
