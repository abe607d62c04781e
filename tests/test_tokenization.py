"""Tokenizers: lossless round trips, the document separator, deterministic cached SentencePiece training."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research.config import ConfigError, DataConfig
from research.data.pipeline import prepare_data, tokenize_documents, validate_data_config
from research.tokenization import TOKENIZERS, Tokenizer, resolve_tokenizer
from research.tokenization.byte import ByteTokenizer
from research.tokenization.sentencepiece import SentencePieceConfig

TRICKY = [
    "",
    "hello world",
    "two  spaces   three",
    "  leading spaces",
    "trailing spaces  ",
    "tab\there\t\t",
    "line one\nline two\n\n\nafter blanks\n",
    "\n\nstarts with newlines",
    "crlf\r\nline",
    "unicode: héllo wörld, naïve café, Ελληνικά, 日本語",
    "emoji 🤖🎉 and 👩‍👩‍👧",
    "digits 1234567890 and 3.14159",
    "literal lower one eighth block ▁ and ▁▁x",
    "angle <doc> and <unk> stay text",
    "control \x00\x07\x1b chars",
    "\u200bzero width\u00a0nbsp",
]


def tiny_documents(n_docs: int = 40, seed: int = 0) -> list[str]:
    """Pseudo-English documents (~40 KB): enough variety to train a few-hundred-piece vocabulary quickly."""
    rng = np.random.default_rng(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "the", "and", "ing", "er", "qu", "str", "ph"]
    words = ["".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(300)]
    docs = []
    for _ in range(n_docs):
        lines = []
        for _ in range(rng.integers(5, 15)):
            line = " ".join(rng.choice(words, size=rng.integers(3, 14)))
            lines.append(line.capitalize() + rng.choice([".", ",", "!", " 42.", "?"]))
        docs.append("\n".join(lines))
    return docs


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESEARCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def spm_tokenizer(request, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESEARCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        return resolve_tokenizer({"name": request.param, "vocab_size": 400}).build(tiny_documents())


# ------------------------------------------------------------------------------------------------ byte


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert not (ids == tok.doc_id).any()


def test_byte_interface():
    tok = resolve_tokenizer("byte").build([])
    assert isinstance(tok, Tokenizer)
    assert (tok.vocab_size, tok.doc_id) == (257, 256)
    assert tok.decode(np.concatenate([[256], tok.encode("ab"), [256]])) == "ab"


# ----------------------------------------------------------------------------------------- sentencepiece


@pytest.mark.parametrize("text", TRICKY)
def test_sentencepiece_round_trip_tricky(spm_tokenizer, text):
    ids = spm_tokenizer.encode(text)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert spm_tokenizer.decode(ids) == text
    assert not (ids == spm_tokenizer.doc_id).any()
    assert ((0 <= ids) & (ids < spm_tokenizer.vocab_size)).all()


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_sentencepiece_round_trip_random(spm_tokenizer, text):
    ids = spm_tokenizer.encode(text)
    assert spm_tokenizer.decode(ids) == text
    assert not (ids == spm_tokenizer.doc_id).any()


def test_sentencepiece_interface(spm_tokenizer):
    assert isinstance(spm_tokenizer, Tokenizer)
    assert spm_tokenizer.vocab_size == 400
    assert 0 <= spm_tokenizer.doc_id < spm_tokenizer.vocab_size
    assert spm_tokenizer.decode([spm_tokenizer.doc_id]) == ""
    doc = tiny_documents(1, seed=5)[0]
    assert len(spm_tokenizer.encode(doc)) < 0.6 * len(doc.encode())  # it actually learned subwords


@pytest.mark.parametrize("name", ["bpe", "unigram"])
def test_sentencepiece_deterministic_and_cached(name, tmp_path, monkeypatch):
    docs = tiny_documents(20)
    config = resolve_tokenizer({"name": name, "vocab_size": 300})
    models = []
    for run in ("a", "b"):  # separate caches: the second model is trained afresh
        monkeypatch.setenv("RESEARCH_CACHE", str(tmp_path / run))
        models.append(config.build(docs).model)
    assert models[0] == models[1]

    def no_training(self, lines):
        raise AssertionError("expected a cache hit")

    monkeypatch.setattr(SentencePieceConfig, "_train", no_training)
    cached = config.build(docs)
    assert cached.model == models[0]
    assert len(list((tmp_path / "b" / "tokenizers").glob("*.model"))) == 1
    assert not list((tmp_path / "b" / "tokenizers").glob("*.tmp"))


def test_sentencepiece_vocab_too_large(cache):
    config = resolve_tokenizer({"name": "bpe", "vocab_size": 5000})
    with pytest.raises(ConfigError, match=r"data.tokenizer.vocab_size=5000 too large.*SentencePiece says"):
        config.build(["just a few words here", "and some more"])


def test_sentencepiece_vocab_too_small():
    with pytest.raises(ConfigError, match="data.tokenizer.vocab_size: expected > 258"):
        resolve_tokenizer({"name": "unigram", "vocab_size": 100}).validate()


def test_unknown_tokenizer_lists_names():
    with pytest.raises(ConfigError, match="valid choices: bpe, byte, char, hf, sentencepiece, unigram, word"):
        resolve_tokenizer({"name": "wordpiece"})
    with pytest.raises(ConfigError, match="no option"):
        resolve_tokenizer({"name": "bpe", "vocab": 10})
    with pytest.raises(ConfigError, match="valid choices"):
        validate_data_config(DataConfig(tokenizer={"name": "nope"}))
    assert set(TOKENIZERS.names()) >= {"byte", "bpe", "unigram"}


# ------------------------------------------------------------------------------- bits-per-byte bookkeeping


def test_stream_layout_and_num_bytes(cache, tmp_path):
    docs = ["first doc: é\n", "second  doc 🤖", "third\n\ndoc", "fourth", "fifth one here"]
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, doc in enumerate(docs):
        (folder / f"{i:02d}.txt").write_text(doc, encoding="utf-8")
    data = DataConfig(
        corpus={"name": "text", "path": str(folder), "valid_fraction": 0.2, "test_fraction": 0.2}
    )
    for tokenizer in ({"name": "byte"}, {"name": "bpe", "vocab_size": 300}):
        ds = prepare_data(dataclasses.replace(data, tokenizer=tokenizer))
        tok = ds.tokenizer
        total_docs = 0
        for split in ds.splits.values():
            tokens = split.tokens
            # Token files use the narrowest unsigned type that holds the vocabulary.
            assert tokens.dtype == (np.uint16 if tok.vocab_size <= 65536 else np.uint32)
            assert tokens[0] == tok.doc_id
            assert (tokens == tok.doc_id).sum() == split.num_documents
            pieces = np.split(tokens, np.flatnonzero(tokens == tok.doc_id))[1:]
            texts = [tok.decode(p[1:]) for p in pieces]
            assert split.num_bytes == sum(len(t.encode("utf-8")) for t in texts)
            total_docs += split.num_documents
        assert total_docs == len(docs)
        assert sum(s.num_bytes for s in ds.splits.values()) == sum(len(d.encode()) for d in docs)


def test_tokenize_documents_matches_encode():
    tok = ByteTokenizer()
    tokens = tokenize_documents(tok, ["ab", "", "c"])
    assert tokens.tolist() == [256, 97, 98, 256, 256, 99]
