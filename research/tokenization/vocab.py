"""Closed-vocabulary tokenizers built from the train split: `char` (Unicode characters) and `word` (pre-tokenised
words). Tokens outside the vocabulary become `<unk>`.

Vocabulary: id 0 is `<unk>`, id 1 the document separator `<doc>`, then the kept types by decreasing train-split
count (ties by string order, so the same documents give the same ids). `min_count` drops rarer types; `max_size`
caps the vocabulary (specials included).

Word pre-tokeniser: GPT-2's split pattern without its contraction rules,
    ` ?\\w+| ?[^\\s\\w]+|\\s+(?!\\S)|\\s+`
i.e. a word or a run of punctuation, each carrying the single space before it, and runs of other whitespace
(newlines, repeated spaces) as tokens of their own. Concatenating the tokens gives the text back, so with no unknowns
decode(encode(text)) == text (tested), and every UTF-8 byte of a split is inside exactly one token.

Bits per byte with unknowns: the model predicts `<unk>` as one event and never pays for the spelling of the word it
stands for, so bits-per-byte of a closed vocabulary is a lower bound on the true code length, optimistic by more as
the out-of-vocabulary rate grows. Every run reports that rate per split (`summary.json: oov_rate`); compare
tokenizers with it in view. `decode` writes U+FFFD for `<unk>`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

from research.config import ConfigError
from research.tokenization.base import TOKENIZERS, TokenizerConfig

UNK, DOC = "<unk>", "<doc>"
REPLACEMENT = "\ufffd"  # what <unk> decodes to
UNK_ID, DOC_ID = 0, 1
WORD_PATTERN = re.compile(r" ?\w+| ?[^\s\w]+|\s+(?!\S)|\s+")
VERSION = "vocab-tokenizer-v1"


def pretokenize_words(text: str) -> list[str]:
    """Text -> word tokens whose concatenation is the text (see the module docstring)."""
    return WORD_PATTERN.findall(text)


def build_vocabulary(counts: Counter, *, min_count: int, max_size: int | None) -> list[str]:
    """[<unk>, <doc>, types by decreasing count then string], cut by min_count and max_size."""
    kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    if max_size is not None:
        kept = kept[: max(0, max_size - 2)]
    return [UNK, DOC, *kept]


class VocabTokenizer:
    """A fixed list of types; `split` turns text into types (characters or words).

    With `spell_unknowns`, a type outside the vocabulary gets its own id >= vocab_size (numbered in order of first
    encounter, so the ids depend on what was encoded before: `stateful`, never cached) instead of <unk>: designs
    that spell tokens (char_cnn, word_char) then see the real word, `input_pieces()` lists every id's string,
    targets are still closed to <unk> (research/data/stream.close_targets) and decode is lossless."""

    unk_id = UNK_ID
    doc_id = DOC_ID

    def __init__(self, kind: str, types: list[str], *, name: str, spell_unknowns: bool = False):
        self.kind = kind
        self.types = types
        self.name = name
        self.vocab_size = len(types)
        self._ids = {t: i for i, t in enumerate(types) if i > DOC_ID}  # specials are never produced from text
        self.stateful = spell_unknowns
        self.extra: dict[str, int] = {}
        payload = json.dumps([VERSION, kind, types, spell_unknowns], ensure_ascii=False).encode()
        self.fingerprint = hashlib.sha256(payload).hexdigest()

    def split(self, text: str) -> list[str]:
        return list(text) if self.kind == "char" else pretokenize_words(text)

    def _spelled_id(self, token: str) -> int:
        if token not in self.extra:
            self.extra[token] = self.vocab_size + len(self.extra)
        return self.extra[token]

    def encode(self, text: str) -> np.ndarray:
        get = self._ids.get
        if self.stateful:
            return np.fromiter((get(t) or self._spelled_id(t) for t in self.split(text)), dtype=np.int32)
        return np.fromiter((get(t, UNK_ID) for t in self.split(text)), dtype=np.int32)

    def decode(self, ids) -> str:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        size = self.vocab_size + len(self.extra)
        if ids.size and (ids.min() < 0 or ids.max() >= size):
            raise ValueError(f"{self.name}: ids must be in [0, {size}), got {ids.min()}..{ids.max()}")
        pieces = self.input_pieces()
        return "".join(REPLACEMENT if i == UNK_ID else "" if i == DOC_ID else pieces[i] for i in ids.tolist())

    def pieces(self) -> list[str]:
        """The string of every output id (specials as their names)."""
        return list(self.types)

    def input_pieces(self) -> list[str]:
        """The string of every id the encoder has produced: the vocabulary, then the spelled unknowns."""
        return [*self.types, *self.extra]

    def save(self, folder: Path) -> None:
        """tokenizer.json: the types, and the spelled unknowns in the order their ids were given."""
        state = {"kind": self.kind, "name": self.name, "types": self.types, "extra": list(self.extra),
                 "spell_unknowns": self.stateful}  # fmt: skip
        (Path(folder) / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path) -> VocabTokenizer:
        state = json.loads((Path(folder) / "tokenizer.json").read_text())
        tokenizer = cls(
            state["kind"], state["types"], name=state["name"], spell_unknowns=state["spell_unknowns"]
        )
        tokenizer.extra = {t: tokenizer.vocab_size + i for i, t in enumerate(state["extra"])}
        return tokenizer


@dataclasses.dataclass(frozen=True, kw_only=True)
class _VocabConfig(TokenizerConfig):
    kind = ""
    min_count: int = 1
    """Types seen fewer times in the train split become <unk>."""
    max_size: int | None = None
    """At most this many ids (including <unk> and <doc>); None = no cap."""
    spell_unknowns: bool = False
    """Give out-of-vocabulary types their own input ids (>= vocab_size) so that character-aware embeddings see
    their spelling; the targets stay <unk>."""

    def validate(self) -> None:
        if self.min_count < 1:
            raise ConfigError(f"data.tokenizer.min_count: expected >= 1, got {self.min_count}")
        if self.max_size is not None and self.max_size < 3:
            raise ConfigError(
                f"data.tokenizer.max_size: expected None or >= 3 (two specials + 1), got {self.max_size}"
            )

    def load(self, folder) -> VocabTokenizer:
        return VocabTokenizer.load(folder)

    def build(self, train_documents) -> VocabTokenizer:
        self.validate()
        probe = VocabTokenizer(self.kind, [UNK, DOC], name=self.kind)
        counts: Counter = Counter()
        for doc in train_documents:
            counts.update(probe.split(doc))
        types = build_vocabulary(counts, min_count=self.min_count, max_size=self.max_size)
        name = f"{self.kind}-{len(types)}"
        return VocabTokenizer(self.kind, types, name=name, spell_unknowns=self.spell_unknowns)


@TOKENIZERS.register("char")
@dataclasses.dataclass(frozen=True, kw_only=True)
class CharConfig(_VocabConfig):
    """Unicode characters of the train split."""

    kind = "char"


@TOKENIZERS.register("word")
@dataclasses.dataclass(frozen=True, kw_only=True)
class WordConfig(_VocabConfig):
    """Pre-tokenised words of the train split (GPT-2-style split; see the module docstring)."""

    kind = "word"
