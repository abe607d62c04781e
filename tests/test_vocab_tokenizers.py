"""Closed-vocabulary tokenizers (char, word): lossless without unknowns, deterministic vocabularies, <unk>,
out-of-vocabulary rates, and exact bits-per-byte bookkeeping for every registered tokenizer."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research.config import ConfigError, DataConfig
from research.data.pipeline import prepare_data
from research.tokenization import TOKENIZERS, Tokenizer, resolve_tokenizer
from research.tokenization.vocab import DOC_ID, UNK_ID, pretokenize_words
from research.training.evaluate import evaluate_split

from .test_token_files import hf_tokenizer_json, published_sentencepiece
from .test_tokenization import TRICKY, tiny_documents


def build(name, docs, **options):
    return resolve_tokenizer({"name": name, **options}).build(docs)


@pytest.mark.parametrize("name", ["char", "word"])
@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_without_unknowns(name, text):
    tok = build(name, TRICKY)
    assert isinstance(tok, Tokenizer)
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and not (ids == UNK_ID).any() and not (ids == DOC_ID).any()
    assert tok.decode(ids) == text


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_word_pretokens_concatenate_to_the_text(text):
    pieces = pretokenize_words(text)
    assert "".join(pieces) == text
    assert all(pieces)  # no empty tokens


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1))
def test_char_round_trip_any_text(text):
    tok = build("char", [text])
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) == len(text)


def test_word_split_is_gpt2_style():
    assert pretokenize_words("Hello, world!  Two\nlines") == [
        "Hello",
        ",",
        " world",
        "!",
        " ",
        " Two",
        "\n",
        "lines",
    ]


def test_vocabulary_order_min_count_and_max_size():
    docs = ["b a a c c c", "a c"]
    tok = build("word", docs)
    # counts: ' c' 4 ... order by count then string; specials first.
    counts = Counter(t for d in docs for t in pretokenize_words(d))
    expected = sorted(counts, key=lambda t: (-counts[t], t))
    assert tok.pieces() == ["<unk>", "<doc>", *expected]
    assert build("word", docs, min_count=2).pieces() == [
        "<unk>",
        "<doc>",
        *[t for t in expected if counts[t] >= 2],
    ]
    assert build("word", docs, max_size=4).pieces() == ["<unk>", "<doc>", *expected[:2]]
    assert build("word", list(reversed(docs))).pieces() == tok.pieces()  # document order does not matter
    assert tok.fingerprint != build("word", docs, max_size=4).fingerprint


def test_unknowns_become_unk_and_decode_as_replacement_char():
    tok = build("word", ["the cat sat"])
    ids = tok.encode("the dog sat")
    assert ids.tolist()[1] == UNK_ID
    assert tok.decode(ids) == "the\ufffd sat"
    ctok = build("char", ["abc"])
    assert ctok.encode("abz").tolist()[-1] == UNK_ID


def test_bad_options_name_the_field():
    with pytest.raises(ConfigError, match="data.tokenizer.min_count"):
        resolve_tokenizer({"name": "word", "min_count": 0}).validate()
    with pytest.raises(ConfigError, match="data.tokenizer.max_size"):
        resolve_tokenizer({"name": "char", "max_size": 2}).validate()


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("RESEARCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "corpus"
    folder.mkdir()
    docs = tiny_documents(12) + ["Zebra quagga okapi, é 🤖.\nxylophone"]
    for i, doc in enumerate(docs):
        (folder / f"{i:02d}.txt").write_text(doc, encoding="utf-8")
    return DataConfig(
        corpus={"name": "text", "path": str(folder), "valid_fraction": 0.2, "test_fraction": 0.2}
    )


def test_oov_rate_per_split(corpus):
    ds = prepare_data(dataclasses.replace(corpus, tokenizer={"name": "word", "min_count": 3}))
    for split in ds.splits.values():
        real = split.tokens[split.tokens != DOC_ID]
        assert split.oov_rate == pytest.approx(np.mean(real == UNK_ID))
    assert ds.splits["train"].oov_rate > 0  # min_count 3 leaves rare train words out
    byte = prepare_data(dataclasses.replace(corpus, tokenizer={"name": "byte"}))
    assert all(s.oov_rate == 0.0 for s in byte.splits.values())


@pytest.mark.parametrize("name", TOKENIZERS.names())
def test_bits_per_byte_is_total_bits_over_bytes(name, corpus, tmp_path):
    """A model that puts probability 1/V on every token: total NLL = (N - 1) ln V nats over the split's N tokens;
    bits per byte = (N - 1) log2 V / UTF-8 bytes of the split's documents, counted here from the raw files."""
    options = {"vocab_size": 300} if name in ("bpe", "unigram") else {}
    if name == "sentencepiece":  # pretrained files: lossy ones, whose bytes are still the original text's
        options = {"model_file": str(published_sentencepiece(tmp_path / "published.model"))}
    if name == "hf":
        options = {"path": str(hf_tokenizer_json(tmp_path / "hf" / "tokenizer.json", lossy=True))}
    ds = prepare_data(dataclasses.replace(corpus, tokenizer={"name": name, **options}, max_eval_bytes=None))
    split = ds.splits["test"]
    v = ds.tokenizer.vocab_size

    def uniform_step(params, inputs, targets, mask, docs, *, num_documents):  # the eval step's protocol
        m = jnp.asarray(mask, jnp.float32)
        per = lambda x, ids, n: jax.ops.segment_sum(x.reshape(-1), ids.reshape(-1), num_segments=n)  # noqa: E731
        first = jnp.zeros_like(docs)
        return (
            per(m * math.log(v), docs, num_documents),
            per(m, docs, num_documents),
            per(m, first, 16),
            per(m, first, 16),
        )

    from research.runtime.mesh import make_mesh

    out = evaluate_split(uniform_step, None, split, length=16, batch_size=4, mesh=make_mesh())
    from research.data.corpora import resolve_corpus

    raw = resolve_corpus(corpus.corpus).load().documents("test")
    num_bytes = sum(len(d.encode("utf-8")) for d in raw)
    assert split.num_bytes == num_bytes
    assert out["bpb"] == pytest.approx((len(split.tokens) - 1) * math.log2(v) / num_bytes, rel=1e-6)


def test_frequency_buckets_by_train_count():
    from research.training.evaluate import frequency_buckets

    train = np.array([0, 2, 2, 3, 3, 3, 3, 3, 4] + [5] * 20)
    names, index = frequency_buckets(train, vocab_size=7, edges=[2, 10], unk_id=0)
    assert names == ["oov", "0", "1-2", "3-10", ">10"]
    # id 0 is <unk> -> oov; 1 and 6 never in train -> "0"; 2 (2x) and 4 (1x) -> 1-2; 3 (5x) -> 3-10; 5 (20x) -> >10
    assert [names[i] for i in index] == ["oov", "0", "1-2", "3-10", "1-2", ">10", "0"]


def test_loss_by_frequency_bucket_adds_up(tmp_path):
    """The per-bucket losses, weighted by their counts, add up to the overall test loss at the training length."""
    from research.training.loop import train_and_evaluate

    from .conftest import tiny_config

    config = tiny_config("rope", steps=2)
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, tokenizer={"name": "word", "min_count": 2}),
        eval=dataclasses.replace(config.eval, frequency_buckets=(5, 50)),
    )
    m = train_and_evaluate(config, tmp_path / "run", log=lambda s: None)["metrics"]
    buckets = [k.split("/")[-1] for k in m if "/count_bucket/" in k]
    assert "oov" in buckets
    total = sum(m[f"test/len_16/count_bucket/{b}"] for b in buckets)
    assert total == m["test/len_16/tokens"]
    weighted = (
        sum(m[f"test/len_16/loss_bucket/{b}"] * m[f"test/len_16/count_bucket/{b}"] for b in buckets) / total
    )
    assert weighted == pytest.approx(m["test/len_16/loss"], rel=1e-4)


def test_loss_after_an_input_word_by_its_frequency_adds_up(tmp_path):
    """The loss of the prediction after an input word, bucketed by that word's train-split frequency, covers every
    target once (count-weighted mean = the overall loss); with spell_unknowns, words outside the vocabulary (input
    ids past it, which a char-aware design reads) are the `oov` bucket."""
    from research.training.loop import train_and_evaluate

    from .conftest import tiny_config

    config = tiny_config("rope", steps=2)
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(
            config.data, tokenizer={"name": "word", "min_count": 2, "spell_unknowns": True}
        ),
        model=dataclasses.replace(config.model, embedding={"name": "char_cnn", "max_chars": 12}),
        eval=dataclasses.replace(config.eval, frequency_buckets=(5, 50)),
    )
    summary = train_and_evaluate(config, tmp_path / "run", log=lambda s: None)
    m = summary["metrics"]
    buckets = [k.split("/")[-1] for k in m if "/count_after/" in k]
    assert "oov" in buckets and m["test/len_16/count_after/oov"] > 0
    # per-document totals of each bucket (for intervals over documents) add up to the bucket's loss and count
    per_document = summary["per_document_buckets"]["test/len_16"]
    assert set(per_document) == {k.split("/", 2)[2] for k in m if "/loss_bucket/" in k or "/loss_after/" in k}
    for b in buckets:
        rows = np.asarray(per_document[f"loss_after/{b}"])
        assert len(rows) == summary["evaluation"]["documents"]
        assert rows[:, 0].sum() == m[f"test/len_16/count_after/{b}"]
        assert rows[:, 1].sum() * np.log(2) / rows[:, 0].sum() == pytest.approx(
            m[f"test/len_16/loss_after/{b}"]
        )
    total = sum(m[f"test/len_16/count_after/{b}"] for b in buckets)
    assert total == m["test/len_16/tokens"]
    weighted = (
        sum(m[f"test/len_16/loss_after/{b}"] * m[f"test/len_16/count_after/{b}"] for b in buckets) / total
    )
    assert weighted == pytest.approx(m["test/len_16/loss"], rel=1e-4)


def test_frequency_buckets_put_spelled_unknown_inputs_in_oov():
    from research.training.evaluate import frequency_buckets

    train = np.array([1, 2, 2, 8, 8, 9])  # 8 and 9: spelled unknown words (ids past the vocabulary of 5)
    names, index = frequency_buckets(train, vocab_size=5, edges=[1], unk_id=0, num_ids=10)
    assert len(index) == 10 and [names[i] for i in index[5:]] == ["oov"] * 5
    assert [names[i] for i in index[:5]] == ["oov", "1-1", ">1", "0", "0"]


def test_spelled_unknowns_round_trip_and_close_targets():
    """word:spell_unknowns: unknown words get ids >= V in order of first encounter, decode is lossless, and
    close_targets maps them to <unk> for the loss."""
    from research.data.stream import close_targets

    tok = build("word", ["the cat sat"], spell_unknowns=True)
    v = tok.vocab_size
    ids = tok.encode("the dog sat on the dog")
    # "the", " dog", " sat", " on", " the", " dog": " dog", " on" and " the" (with its space) are unknown
    assert ids.tolist()[1:] == [v, tok.encode(" sat")[0], v + 1, v + 2, v]
    assert tok.decode(ids) == "the dog sat on the dog"
    assert tok.input_pieces()[v:] == [" dog", " on", " the"] and len(tok.pieces()) == v
    np.testing.assert_array_equal(close_targets(ids, (v, UNK_ID)), np.where(ids >= v, UNK_ID, ids))
    assert tok.stateful and tok.fingerprint != build("word", ["the cat sat"]).fingerprint


def test_char_cnn_reads_the_spelling_of_unknown_words(tmp_path, corpus):
    """With spelled unknowns, the char-CNN gives two different out-of-vocabulary words different vectors, while
    a table gives both the <unk> row; training closes the targets (finite loss over the output vocabulary)."""
    import jax.numpy as jnp
    from flax import nnx

    from research.config import ModelConfig
    from research.model.build import resolve_model
    from research.model.transformer import Transformer
    from research.training.lm import input_pieces

    ds = prepare_data(
        dataclasses.replace(corpus, tokenizer={"name": "word", "min_count": 3, "spell_unknowns": True})
    )
    tok = ds.tokenizer
    v = tok.vocab_size
    test = ds.splits["test"]
    assert test.close == (v, UNK_ID) and (test.tokens >= v).any() and not (test.tokens == UNK_ID).any()
    assert test.oov_rate == pytest.approx(np.mean(test.tokens[test.tokens != DOC_ID] >= v))
    spelled = sorted(set(test.tokens[test.tokens >= v].tolist()))[:2]
    chars = {"char_dim": 4, "widths": [1, 2], "filters_per_width": 2}
    for name, differ in (("char_cnn", True), ("table", False)):
        resolved = resolve_model(
            ModelConfig(
                d_model=16, num_layers=1, num_heads=2, embedding={"name": name, **(chars if differ else {})}
            ),
            max_len=8,
            vocab_size=v,
        )
        model = Transformer(resolved, vocab_size=v, rngs=nnx.Rngs(0), pieces=input_pieces(tok), unk_id=UNK_ID)
        logits = model(jnp.asarray([spelled]), jnp.arange(2)[None])
        assert logits.shape == (1, 2, v)
        assert (not np.allclose(logits[0, 0], logits[0, 1])) == differ
