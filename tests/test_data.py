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
    sample_documents,
    split_by_hash,
    split_wikitext_articles,
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
    with pytest.raises(ConfigError, match="valid choices: files, text, wiki-sample, wikitext"):
        resolve_corpus({"name": "wiki-full"})
    assert CORPORA.names() == ["files", "text", "wiki-sample", "wikitext"]


def test_sample_documents_takes_whole_documents_across_the_split():
    """A byte cap keeps whole documents, chosen by a hash of their content (not the leading ones), in split
    order, the same whatever their position; at least one document."""
    docs = [f"document {i} " + "x" * (10 * i) for i in range(20)]
    kept = sample_documents(docs, 600)
    sizes = {d: len(d.encode()) for d in docs}
    assert sum(sizes[d] for d in kept) <= 600 and len(kept) >= 3
    assert kept == [d for d in docs if d in kept]  # split order
    assert kept != docs[: len(kept)]  # spread over the split, not its head
    assert sample_documents(list(reversed(docs)), 600) == list(reversed(kept))  # by content, not position
    assert sample_documents(docs, 10_000_000) == docs
    assert sample_documents(["aaaa", "bb"], 1) == ["bb"]  # none fits: the smallest
    with pytest.raises(ValueError):
        sample_documents(docs, 0)


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


def _old_non_overlapping_windows(tokens, length, batch_size):
    """The evaluator's windows before strides existed (a copy kept as the reference): non-overlapping, padded."""
    n = len(tokens)
    windows = -(-(n - 1) // length)
    for start in range(0, windows, batch_size):
        w = np.arange(start, start + batch_size)[:, None]
        pos = w * length + np.arange(length)
        valid = (pos + 1 < n) & (w < windows)
        safe = np.where(valid, pos, 0)
        inputs = np.where(valid, tokens[safe], 0).astype(np.int32)
        targets = np.where(valid, tokens[np.where(valid, pos + 1, 0)], 0).astype(np.int32)
        yield inputs, targets, valid.astype(np.float32)


@pytest.mark.parametrize("n,length,stride,batch", [(1000, 16, 4, 4), (1000, 16, 1, 8), (17, 16, 5, 3),
                                                   (2, 8, 3, 2), (100, 33, 32, 1), (300, 64, 16, 5)])  # fmt: skip
def test_sliding_windows_score_every_target_once_with_context(n, length, stride, batch):
    """eval.stride: every target is scored exactly once, each scored target (after the first window) has at least
    length - stride tokens of context in its window, and the scored inputs are the stream."""
    tokens = np.arange(n, dtype=np.int32) + 5
    batches = list(eval_windows(tokens, length=length, batch_size=batch, stride=stride))
    assert len(batches) == -(-num_eval_windows(n, length, stride) // batch)
    index = np.concatenate([b[3] for b in batches])  # [W,L] stream position of each scored target, or -1
    scored = index[index >= 0]
    np.testing.assert_array_equal(np.sort(scored), np.arange(1, n))  # every target exactly once
    y, m = np.concatenate([b[1] for b in batches]), np.concatenate([b[2] for b in batches])
    np.testing.assert_array_equal(y[m > 0], tokens[index[m > 0]])
    position = np.broadcast_to(np.arange(length), index.shape)  # the target's position in its window
    context = position[index >= 0]  # tokens before the scored target's input in the window
    late = scored >= length + 1  # past the first window's targets
    assert (context[late] >= length - stride).all()


def test_stride_equal_to_length_is_the_non_overlapping_evaluation():
    """stride = length (the default) gives bit for bit the windows, targets and masks of the evaluator before
    strides existed."""
    tokens = np.random.default_rng(0).integers(0, 50, 777).astype(np.int32)
    for length, batch in ((16, 4), (64, 3), (777, 2)):
        new = list(eval_windows(tokens, length=length, batch_size=batch, stride=length))
        old = list(_old_non_overlapping_windows(tokens, length, batch))
        assert len(new) == len(old)
        for a, b in zip(new, old, strict=True):
            for x, y in zip(a[:3], b, strict=True):
                np.testing.assert_array_equal(x, y)
                assert x.dtype == y.dtype


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
