"""Token files on disk: the streaming `files` corpus, parallel preparation, memory-mapped batches, the keyed batch
order, and pretrained tokenizers (SentencePiece model files, Hugging Face tokenizer.json)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import zstandard

from research.config import ConfigError, DataConfig
from research.data.corpora import resolve_corpus, split_of
from research.data.pipeline import prepare_data, resolve_data, token_folder
from research.data.stream import num_train_chunks, permute, train_batch
from research.data.tokens import chunks, read_meta
from research.tokenization import resolve_tokenizer


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESEARCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def paragraphs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "café", "naïve", "🤖", "x1", "Rose", "-", "\u2581", "ﬁ"]
    return [
        "\n".join(" ".join(rng.choice(words, rng.integers(3, 12))) for _ in range(rng.integers(1, 4))) + "\n"
        for _ in range(n)
    ]


def write_corpus(folder: Path, docs: list[str], compress=None) -> None:
    """Docs as blank-line separated paragraphs over three files (the last optionally compressed)."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = [docs[i::3] for i in range(3)]
    for i, part in enumerate(parts):
        data = "\n".join(part).encode()
        name = f"part{i}.txt"
        if compress and i == 2:
            data, name = compress[1](data), name + compress[0]
        (folder / name).write_bytes(data)


COMPRESSORS = {
    ".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
    ".zst": lambda b: zstandard.ZstdCompressor().compress(b),
}  # fmt: skip


# ------------------------------------------------------------------------------------------ files corpus


@pytest.mark.parametrize("suffix", [None, *COMPRESSORS])
def test_files_corpus_streams_paragraphs_through_compression(tmp_path, suffix):
    docs = paragraphs(30)
    write_corpus(tmp_path / "c", docs, (suffix, COMPRESSORS[suffix]) if suffix else None)
    corpus = resolve_corpus({"name": "files", "path": str(tmp_path / "c"), "valid_fraction": 0.2,
                             "test_fraction": 0.2}).load()  # fmt: skip
    streamed = {s: list(corpus.documents(s)) for s in ("train", "valid", "test")}
    assert sorted(sum(streamed.values(), [])) == sorted(docs)
    for split, got in streamed.items():
        assert all(split_of(d, 0.2, 0.2) == split for d in got)
    assert streamed["valid"] and streamed["test"]


@pytest.mark.parametrize(
    "rule, expected",
    [("blank_line", ["a\nb\n", "c\n", "d"]), ("line", ["a\n", "b\n", "\n", "\n", "c\n", "\n", "d"]),
     ("file", ["a\nb\n\n\nc\n\nd"])],
)  # fmt: skip
def test_files_corpus_document_rules(tmp_path, rule, expected):
    (tmp_path / "one.txt").write_text("a\nb\n\n\nc\n\nd")
    config = resolve_corpus({"name": "files", "path": str(tmp_path / "one.txt"), "documents": rule})
    assert list(config.stream()) == expected


def test_files_corpus_errors_name_the_field_and_file(tmp_path):
    with pytest.raises(ConfigError, match="data.corpus.path: .*matches no file"):
        resolve_corpus({"name": "files", "path": str(tmp_path / "*.none")}).validate()
    with pytest.raises(ConfigError, match="data.corpus.documents: expected one of .*blank_line"):
        resolve_corpus({"name": "files", "path": str(tmp_path), "documents": "page"}).validate()
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe\n")
    corpus = resolve_corpus({"name": "files", "path": str(tmp_path / "bad.txt")})
    with pytest.raises(ConfigError, match="bad.txt is not valid utf-8"):
        list(corpus.stream())


def test_files_corpus_fingerprint_reads_no_text(tmp_path, monkeypatch):
    write_corpus(tmp_path / "c", paragraphs(9))
    config = resolve_corpus({"name": "files", "path": str(tmp_path / "c")})
    before = config.fingerprint()
    monkeypatch.setattr("builtins.open", lambda *a, **k: pytest.fail("fingerprint opened a file"))
    assert config.fingerprint() == before
    monkeypatch.undo()
    (tmp_path / "c" / "part0.txt").write_text("changed\n")
    assert config.fingerprint() != before


# ---------------------------------------------------------------------------------------- token files


def files_data(folder: Path, tokenizer) -> DataConfig:
    corpus = {"name": "files", "path": str(folder), "valid_fraction": 0.2, "test_fraction": 0.2}
    return DataConfig(corpus=corpus, tokenizer=tokenizer)


@pytest.mark.parametrize("tokenizer", [{"name": "byte"}, {"name": "bpe", "vocab_size": 300}])
def test_prepared_splits_hold_every_document_and_byte(cache, tmp_path, tokenizer):
    docs = paragraphs(40)
    write_corpus(tmp_path / "c", docs, (".gz", gzip.compress))
    ds = prepare_data(files_data(tmp_path / "c", tokenizer))
    tok, decoded = ds.tokenizer, []
    for split in ds.splits.values():
        assert isinstance(split.tokens, np.memmap) and split.tokens.dtype == np.uint16
        pieces = np.split(np.asarray(split.tokens), split.doc_offsets)[1:]
        assert all(p[0] == tok.doc_id for p in pieces)
        texts = [tok.decode(p[1:]) for p in pieces]
        np.testing.assert_array_equal(split.doc_bytes, [len(t.encode()) for t in texts])
        decoded += texts
    assert sorted(decoded) == sorted(docs)
    assert sum(s.num_bytes for s in ds.splits.values()) == sum(len(d.encode()) for d in docs)


def test_parallel_preparation_equals_in_process(cache, tmp_path, monkeypatch):
    """Worker processes write byte-identical token files (chunks kept small so that there are many)."""
    monkeypatch.setattr("research.data.tokens.CHUNK_CHARS", 500)
    write_corpus(tmp_path / "c", paragraphs(200))
    data = files_data(tmp_path / "c", {"name": "bpe", "vocab_size": 300})
    one = prepare_data(data, workers=1)
    folder = token_folder(data, *resolve_data(data))
    copy = folder.with_name("serial")
    folder.rename(copy)
    two = prepare_data(data, workers=2)
    assert (folder / "train.bin").read_bytes() == (copy / "train.bin").read_bytes()
    for split in one.splits:
        np.testing.assert_array_equal(one.splits[split].doc_offsets, two.splits[split].doc_offsets)


def test_chunks_keep_order_and_bound_size():
    docs = ["a" * 30, "b" * 30, "c" * 5, "d" * 100, "e"]
    got = list(chunks(iter(docs), chars=50))
    assert [d for c in got for d in c] == docs and all(sum(map(len, c[:-1])) < 50 for c in got)


def test_second_preparation_reads_only_meta(cache, tmp_path, monkeypatch):
    write_corpus(tmp_path / "c", paragraphs(20))
    data = files_data(tmp_path / "c", {"name": "byte"})
    first = prepare_data(data)
    monkeypatch.setattr("research.data.corpora.FilesConfig.stream", lambda self: pytest.fail("re-read"))
    again = prepare_data(data)
    np.testing.assert_array_equal(again.splits["train"].tokens, first.splits["train"].tokens)


def test_large_vocabulary_writes_uint32(cache, tmp_path):
    from research.data.tokens import token_dtype

    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


# --------------------------------------------------------------------------------- memory-mapped batches


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_permute_is_a_keyed_bijection(n):
    index = np.arange(n)
    image = permute(index, n, key=(0, 0))
    assert sorted(image.tolist()) == list(range(n))
    np.testing.assert_array_equal(permute(index[::-1], n, key=(0, 0)), image[::-1])  # pointwise
    if n > 6:
        assert not np.array_equal(image, permute(index, n, key=(0, 1)))
        assert not np.array_equal(image, index)


def reference_batch(tokens: np.ndarray, seq_len: int, batch: int, seed: int, step: int):
    """train_batch written the slow way: the whole epoch order, then python slicing of the stream."""
    n = num_train_chunks(len(tokens), seq_len)
    rows = []
    for position in range(step * batch, step * batch + batch):
        epoch, offset = divmod(position, n)
        chunk = int(permute(np.arange(n), n, key=(seed, epoch))[offset])
        rows.append(list(tokens[chunk * seq_len : chunk * seq_len + seq_len + 1]))
    rows = np.asarray(rows, np.int32)
    return rows[:, :-1], rows[:, 1:]


def test_memory_mapped_batches_equal_reference_slicing(cache, tmp_path):
    write_corpus(tmp_path / "c", paragraphs(60))
    ds = prepare_data(files_data(tmp_path / "c", {"name": "byte"}))
    mapped = ds.splits["train"].tokens
    in_memory = np.asarray(mapped).astype(np.int32)
    for step in (0, 1, 5, 40):
        x, y = train_batch(mapped, seq_len=32, batch_size=8, seed=3, step=step)
        rx, ry = reference_batch(in_memory, 32, 8, 3, step)
        np.testing.assert_array_equal(x, rx)
        np.testing.assert_array_equal(y, ry)


def test_batch_work_does_not_grow_with_the_corpus():
    """A batch of a 2^33-chunk stream is computed without touching the epoch's order (a memory map stands in)."""

    class Huge:
        shape = (2**40,)

        def __len__(self):
            return 2**40

        def __getitem__(self, index):
            return (np.asarray(index) % 251).astype(np.uint16)

    x, y = train_batch(Huge(), seq_len=128, batch_size=4, seed=0, step=10**9)
    assert x.shape == (4, 128) and (x[:, 1:] == y[:, :-1]).all()


# ------------------------------------------------------------------------------ pretrained tokenizers

TEXT = ["Hello World, this is a test.\nSecond   line 🤖 café ▁x\n\n", "naïve rose\tsat on a mat 42."] * 20


def published_sentencepiece(path: Path) -> Path:
    """A SentencePiece model with the library's default options, as published models are trained: NFKC
    normalisation, a dummy prefix, collapsed spaces, no byte fallback."""
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXT * 4), model_writer=writer, vocab_size=30,
                                   minloglevel=2)  # fmt: skip
    path.write_bytes(writer.getvalue())
    return path


def test_pretrained_sentencepiece_model_file(cache, tmp_path):
    path = published_sentencepiece(tmp_path / "published.model")
    tok = resolve_tokenizer(f"sentencepiece:model_file={path}").build([])
    assert tok.vocab_size == 31 and tok.doc_id == 30 and tok.pieces()[-1] == "<doc>"
    assert tok.lossless is False
    ids = tok.encode(TEXT[0])
    assert tok.doc_id not in ids and ids.max() < tok.doc_id
    assert tok.decode([*ids, tok.doc_id]) == tok.decode(ids) != TEXT[0]  # normalised: lossy, and said so


def test_a_model_trained_here_is_a_lossless_pretrained_model(cache, tmp_path):
    trained = resolve_tokenizer({"name": "bpe", "vocab_size": 300}).build(TEXT)
    path = tmp_path / "ours.model"
    path.write_bytes(trained.model)
    tok = resolve_tokenizer({"name": "sentencepiece", "model_file": str(path)}).build([])
    assert tok.lossless and tok.doc_id == trained.doc_id and tok.vocab_size == trained.vocab_size
    for text in TEXT[:2]:
        np.testing.assert_array_equal(tok.encode(text), trained.encode(text))
        assert tok.decode(tok.encode(text)) == text


def hf_tokenizer_json(path: Path, lossy: bool = False) -> Path:
    """A byte-level BPE tokenizer.json trained with the `tokenizers` library (lossless); `lossy` adds an NFKC +
    lower-casing normaliser."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT, trainer)
    if lossy:
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def test_hf_tokenizer_json_round_trips(cache, tmp_path):
    pytest.importorskip("tokenizers")
    path = hf_tokenizer_json(tmp_path / "gpt" / "tokenizer.json")
    tok = resolve_tokenizer(f"hf:path={path.parent}").build([])
    assert tok.doc_id == tok.vocab_size - 1 and len(tok.pieces()) == tok.vocab_size
    for text in TEXT[:2]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text and tok.doc_id not in ids
    batch = tok.encode_batch(TEXT[:2])
    for text, ids in zip(TEXT[:2], batch):
        np.testing.assert_array_equal(ids, tok.encode(text))


def test_pretrained_tokenizers_prepare_with_exact_bytes_and_report_round_trip(cache, tmp_path):
    pytest.importorskip("tokenizers")
    write_corpus(tmp_path / "c", paragraphs(40))
    lossless = hf_tokenizer_json(tmp_path / "ok" / "tokenizer.json")
    lossy = hf_tokenizer_json(tmp_path / "lossy" / "tokenizer.json", lossy=True)
    published = published_sentencepiece(tmp_path / "published.model")
    specs = {"hf-ok": f"hf:path={lossless}", "hf-lossy": f"hf:path={lossy}",
             "spm": f"sentencepiece:model_file={published}"}  # fmt: skip
    byte = prepare_data(files_data(tmp_path / "c", "byte"))
    for name, spec in specs.items():
        data = files_data(tmp_path / "c", spec)
        ds = prepare_data(data)
        meta = read_meta(token_folder(data, *resolve_data(data)))
        assert (meta["roundtrip_mismatch"] == 0) == (name == "hf-ok"), name
        for split, ref in byte.splits.items():  # the bits-per-byte denominator is the original text's
            assert ds.splits[split].num_bytes == ref.num_bytes
            np.testing.assert_array_equal(ds.splits[split].doc_bytes, ref.doc_bytes)


def test_pretrained_tokenizer_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.tokenizer.model_file: required"):
        resolve_tokenizer("sentencepiece").validate()
    with pytest.raises(ConfigError, match="data.tokenizer.model_file: no such file"):
        resolve_tokenizer(f"sentencepiece:model_file={tmp_path}/x.model").validate()
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="is not a SentencePiece model"):
        resolve_tokenizer(f"sentencepiece:model_file={tmp_path}/junk.model").build([])
    with pytest.raises(ConfigError, match="data.tokenizer.path: no tokenizer.json at"):
        resolve_tokenizer(f"hf:path={tmp_path}").validate()
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ConfigError, match="is not a tokenizer.json"):
        resolve_tokenizer(f"hf:path={tmp_path}").build([])


def test_streamed_corpus_is_read_once_and_refuses_a_document_range(cache, tmp_path, monkeypatch):
    from research.data.corpora import FilesConfig

    write_corpus(tmp_path / "c", paragraphs(30))
    passes = []
    stream = FilesConfig.stream
    monkeypatch.setattr(FilesConfig, "stream", lambda self: (passes.append(1), (yield from stream(self)))[1])
    prepare_data(files_data(tmp_path / "c", "byte"))
    assert len(passes) == 1  # byte: nothing to learn from the train split; then one pass for every split
    with pytest.raises(ConfigError, match="data.train_docs: a streamed corpus"):
        prepare_data(DataConfig(corpus={"name": "files", "path": str(tmp_path / "c")}, train_docs=(0.0, 0.5)))


def test_sampled_eval_splits_of_a_streamed_corpus(cache, tmp_path):
    write_corpus(tmp_path / "c", paragraphs(200))
    data = files_data(tmp_path / "c", "byte")
    full = prepare_data(data)
    cut = prepare_data(DataConfig(corpus=data.corpus, tokenizer="byte", max_eval_bytes=500))
    assert cut.splits["train"].num_bytes == full.splits["train"].num_bytes
    assert 0 < cut.splits["valid"].num_bytes <= 500 < full.splits["valid"].num_bytes


def test_the_default_corpus_keeps_its_documents_and_bytes():
    """The embedded corpus goes through the same token files: every split holds its documents in corpus order,
    with their exact UTF-8 bytes (so results stay comparable with runs from before the token files)."""
    ds = prepare_data(DataConfig(max_eval_bytes=None))
    corpus = resolve_corpus("wiki-sample").load()
    for name, split in ds.splits.items():
        docs = corpus.documents(name)
        np.testing.assert_array_equal(split.doc_bytes, [len(d.encode()) for d in docs])
        first = np.asarray(split.tokens[split.doc_offsets[0] + 1 : split.doc_offsets[1]])
        assert ds.tokenizer.decode(first) == docs[0]


def test_the_document_index_streams_to_disk(tmp_path):
    """SplitWriter keeps no per-document rows in memory (the index goes to disk as it comes): writing 400k documents
    peaks far below their 6.4 MB index, and docs.npy holds each document's separator offset and bytes."""
    import tracemalloc

    from research.data.tokens import SplitWriter
    from research.tokenization.byte import ByteTokenizer

    tok = ByteTokenizer()
    writer = SplitWriter(tmp_path, "train", tok, np.uint16)
    chunk = 2_000
    sizes = np.stack([np.full(chunk, 4), np.full(chunk, 3)], 1)  # 3 bytes + separator per document
    tokens = np.tile(np.asarray([tok.doc_id, 97, 98, 99], np.uint16), chunk)
    tracemalloc.start()
    for _ in range(200):
        writer.write([], tokens, sizes)
    peak = tracemalloc.get_traced_memory()[1]
    stats = writer.close()
    tracemalloc.stop()
    assert peak < 1_000_000, peak
    docs = np.load(tmp_path / "train.docs.npy")
    assert docs.shape == (400_000, 2) and stats["documents"] == 400_000 and stats["bytes"] == 1_200_000
    np.testing.assert_array_equal(docs[:, 0], np.arange(400_000) * 4)
    assert (docs[:, 1] == 3).all() and not (tmp_path / "train.docs.tmp").exists()
