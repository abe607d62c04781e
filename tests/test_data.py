"""Corpora, the tokenized dataset and the batch streams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from research.config import ConfigError, DataConfig
from research.data.corpora import (
    CORPORA,
    SPLITS,
    WIKI_SAMPLE_FILE,
    WikiSampleConfig,
    resolve_corpus,
    split_by_hash,
    split_wikitext_articles,
    truncate_documents,
)
from research.data.pipeline import prepare_data, validate_data_config
from research.data.stream import eval_windows, num_eval_windows, num_train_chunks, train_batch

# ------------------------------------------------------------------------------------------ wiki-sample


@pytest.fixture(scope="module")
def wiki():
    """The default corpus through the shared cache (extracted once per machine, ~6 s)."""
    return resolve_corpus({"name": "wiki-sample"}).load()


def test_wiki_sample_splits(wiki):
    assert wiki.name == "wiki-sample"
    assert set(wiki.splits) == set(SPLITS)
    for split in SPLITS:
        docs = wiki.documents(split)
        assert len(docs) >= 3 and all(len(d) >= 500 for d in docs)
        assert all("'''" not in d and "\n\n\n" not in d and d == d.strip() for d in docs)
    assert 2_000_000 < wiki.num_bytes("train") < 4_000_000
    assert 50_000 < wiki.num_bytes("valid") < 400_000 and 50_000 < wiki.num_bytes("test") < 400_000
    seen = [set(wiki.documents(s)) for s in SPLITS]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])


def test_wiki_sample_second_load_reads_the_cache_and_is_equal(wiki, monkeypatch):
    def no_extraction(self, path):
        raise AssertionError("expected a cache hit")

    monkeypatch.setattr(WikiSampleConfig, "_extract", no_extraction)
    again = WikiSampleConfig().load()
    assert again.splits == wiki.splits and again.key == wiki.key


def test_wiki_sample_fresh_extraction_matches_cache(wiki, tmp_path, monkeypatch):
    monkeypatch.setenv("RESEARCH_CACHE", str(tmp_path))
    fresh = WikiSampleConfig().load()  # extracted again from the bz2 file
    assert fresh.splits == wiki.splits
    assert len(list((tmp_path / "corpora").glob("*.json"))) == 1
    assert not list((tmp_path / "corpora").glob("*.tmp"))


def test_split_by_hash_is_deterministic():
    titles = [f"Article {i}" for i in range(100)]
    a = split_by_hash(titles, 0.1, 0.05)
    assert a == split_by_hash(list(titles), 0.1, 0.05)
    assert [len(a[s]) for s in SPLITS] == [85, 10, 5]
    assert sorted(sum(a.values(), [])) == list(range(100))


# ----------------------------------------------------------------------------------------- text, wikitext


def test_text_folder(tmp_path):
    for i in range(10):
        (tmp_path / f"{i:02d}.txt").write_text(f"document {i}\n" * 10, encoding="utf-8")
    (tmp_path / "ignored.md").write_text("not a txt file")
    config = {"name": "text", "path": str(tmp_path), "valid_fraction": 0.2, "test_fraction": 0.1}
    corpus = resolve_corpus(config).load()
    assert [len(corpus.documents(s)) for s in SPLITS] == [7, 2, 1]
    assert sum((corpus.documents(s) for s in SPLITS), []) == [f"document {i}\n" * 10 for i in range(10)]


def test_text_folder_of_three_fills_every_split(tmp_path):
    for i, size in enumerate([1000, 1, 1]):
        (tmp_path / f"{i}.txt").write_text("x" * size)
    corpus = resolve_corpus({"name": "text", "path": str(tmp_path)}).load()
    assert [len(corpus.documents(s)) for s in SPLITS] == [1, 1, 1]


def test_text_file_contiguous_split(tmp_path):
    text = "".join(f"line {i} é\n" for i in range(1000))
    path = tmp_path / "input.txt"
    path.write_text(text, encoding="utf-8")
    corpus = resolve_corpus({"name": "text", "path": str(path)}).load()
    pieces = [corpus.documents(s) for s in SPLITS]
    assert all(len(p) == 1 for p in pieces)
    assert "".join(p[0] for p in pieces) == text
    assert all(p[0].endswith("\n") for p in pieces)
    assert 0.03 < len(pieces[1][0]) / len(text) < 0.07


def test_text_malformed_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good line\nsecond line \xff\xfe bad\n")
    with pytest.raises(ConfigError, match=r"bad.txt is not valid UTF-8 at byte 22 \(line 2\)"):
        resolve_corpus({"name": "text", "path": str(path)}).load()


def test_wikitext_folder(tmp_path):
    def article(title, n):
        return f" = {title} = \n \n = = Section = = \n" + "".join(f" word {i} @-@ x . \n" for i in range(n))

    texts = {
        "train": " \n" + article("A", 3) + article("B", 2),
        "valid": article("C", 2),
        "test": article("D", 1),
    }
    for split, text in texts.items():
        (tmp_path / f"wiki.{split}.tokens").write_text(text, encoding="utf-8")
    corpus = resolve_corpus({"name": "wikitext", "path": str(tmp_path)}).load()
    assert [len(corpus.documents(s)) for s in SPLITS] == [2, 1, 1]
    assert "".join(corpus.documents("train")) == texts["train"]
    assert corpus.documents("train")[1].startswith(" = B = \n")
    assert split_wikitext_articles(" = = Only section = = \nx\n") == [" = = Only section = = \nx\n"]


def test_wikitext_missing_files_listed(tmp_path):
    (tmp_path / "train.txt").write_text(" = A = \n")
    with pytest.raises(ConfigError, match=r"wiki.valid.tokens or wiki.valid.raw or valid.txt.*test.txt"):
        resolve_corpus({"name": "wikitext", "path": str(tmp_path)}).validate()


@pytest.mark.parametrize("name", ["text", "wikitext"])
def test_missing_path_names_field_and_path(name, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=f"data.corpus.path: {missing} does not exist"):
        validate_data_config(DataConfig(corpus={"name": name, "path": str(missing)}))


def test_unknown_corpus_lists_names():
    with pytest.raises(ConfigError, match="valid choices: text, wiki-sample, wikitext"):
        resolve_corpus({"name": "wiki-full"})
    assert CORPORA.names() == ["text", "wiki-sample", "wikitext"]


def test_truncate_documents():
    docs = ["aaaa", "bb", "é" * 3, "c"]  # 4, 2, 6, 1 bytes
    assert truncate_documents(docs, 6) == ["aaaa", "bb"]
    assert truncate_documents(docs, 100) == docs
    assert truncate_documents(docs, 2) == ["aa"]
    assert truncate_documents(["éé"], 3) == ["é"]  # cut on a character boundary
    with pytest.raises(ValueError):
        truncate_documents(docs, 0)


def test_prepare_data_max_eval_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("RESEARCH_CACHE", str(tmp_path / "cache"))
    for i in range(20):
        (tmp_path / f"{i:02d}.txt").write_text(f"doc {i:02d} " * 20)  # 140 bytes each
    corpus = {"name": "text", "path": str(tmp_path), "valid_fraction": 0.25, "test_fraction": 0.25}
    full = prepare_data(DataConfig(corpus=corpus))
    cut = prepare_data(DataConfig(corpus=corpus, max_eval_bytes=300))
    assert cut.splits["train"].num_documents == full.splits["train"].num_documents == 10
    assert full.splits["valid"].num_documents == 5 and cut.splits["valid"].num_documents == 2
    assert cut.splits["valid"].num_bytes <= 300
    again = prepare_data(DataConfig(corpus=corpus, max_eval_bytes=300))  # from the .npy cache
    np.testing.assert_array_equal(again.splits["test"].tokens, cut.splits["test"].tokens)


# ------------------------------------------------------------------------------------------------ streams

TOKENS = np.arange(1000, dtype=np.int32)


def test_train_batch_is_a_function_of_seed_and_step():
    kw = dict(seq_len=16, batch_size=8)
    x, y = train_batch(TOKENS, seed=3, step=5, **kw)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == np.int32
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    x2, y2 = train_batch(TOKENS.copy(), seed=3, step=5, **kw)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(x, train_batch(TOKENS, seed=3, step=6, **kw)[0])
    assert not np.array_equal(x, train_batch(TOKENS, seed=4, step=5, **kw)[0])


def test_train_batch_process_slices_concatenate():
    kw = dict(seq_len=10, batch_size=12, seed=0, step=7)
    whole, _ = train_batch(TOKENS, **kw)
    parts = [train_batch(TOKENS, process_index=p, process_count=3, **kw)[0] for p in range(3)]
    assert all(p.shape == (4, 10) for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_train_batch_visits_every_chunk_once_per_epoch():
    seq_len, batch = 10, 9
    n = num_train_chunks(len(TOKENS), seq_len)  # 99 chunks = 11 batches per epoch
    assert n == 99
    starts = [
        train_batch(TOKENS, seq_len=seq_len, batch_size=batch, seed=1, step=s)[0][:, 0] for s in range(22)
    ]
    epoch0, epoch1 = np.concatenate(starts[:11]), np.concatenate(starts[11:])
    assert sorted(epoch0) == sorted(epoch1) == list(range(0, 990, 10))
    assert not np.array_equal(epoch0, epoch1)  # a new permutation each epoch


def test_train_batch_wraps_epochs_and_errors():
    x, y = train_batch(
        np.arange(31), seq_len=10, batch_size=4, seed=0, step=1
    )  # 3 chunks, batch spans epochs
    assert sorted(x[:, 0].tolist()) in ([0, 0, 10, 20], [0, 10, 10, 20], [0, 10, 20, 20])
    assert y[:, -1].max() <= 30
    with pytest.raises(ValueError, match="has 10 tokens; seq_len=16 needs at least 17"):
        train_batch(np.arange(10), seq_len=16, batch_size=2, seed=0, step=0)
    with pytest.raises(ValueError, match="not divisible by process_count"):
        train_batch(TOKENS, seq_len=4, batch_size=6, seed=0, step=0, process_count=4)


@pytest.mark.parametrize("n,length,batch", [(1000, 16, 4), (17, 16, 3), (2, 8, 2), (100, 33, 1)])
def test_eval_windows_cover_every_target_once(n, length, batch):
    tokens = np.arange(n, dtype=np.int32) + 5
    batches = list(eval_windows(tokens, length=length, batch_size=batch))
    assert len(batches) == -(-num_eval_windows(n, length) // batch)
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    m = np.concatenate([b[2] for b in batches])
    assert all(b[0].shape == b[1].shape == b[2].shape == (batch, length) for b in batches)
    assert x.dtype == y.dtype == np.int32 and m.dtype == np.float32
    assert m.sum() == n - 1
    np.testing.assert_array_equal(y[m > 0], tokens[1:])
    np.testing.assert_array_equal(x[m > 0], tokens[:-1])


def test_eval_windows_max_windows():
    batches = list(eval_windows(TOKENS, length=10, batch_size=4, max_windows=6))
    assert len(batches) == 2 and sum(b[2].sum() for b in batches) == 60
    assert num_eval_windows(1001, 10) == 100 and num_eval_windows(1, 10) == 0


def test_wiki_sample_source_is_gensims_datapath():
    from gensim.test.utils import datapath

    assert WikiSampleConfig().source() == Path(datapath(WIKI_SAMPLE_FILE))


def test_validate_data_config_reads_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RESEARCH_CACHE", str(tmp_path))
    validate_data_config(DataConfig(tokenizer={"name": "bpe", "vocab_size": 1000}))
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="data.corpus.valid_fraction"):
        validate_data_config(DataConfig(corpus={"name": "wiki-sample", "valid_fraction": 0.0}))
    with pytest.raises(ConfigError, match="data.max_eval_bytes"):
        validate_data_config(DataConfig(max_eval_bytes=0))


def test_text_file_too_short_to_split(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("one single line without enough lines to split")
    with pytest.raises(
        ConfigError, match=r"short.txt is too short to split by lines \(train=45, valid=0, test=0 chars\)"
    ):
        resolve_corpus({"name": "text", "path": str(path)}).load()
