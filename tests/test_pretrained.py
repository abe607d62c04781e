"""Pretrained vectors: readers against gensim and Facebook's own output, malformed files, alignment, training modes,
intrinsic evaluation against gensim. Fixtures are gensim's bundled test data or written here; never ../shared."""

from __future__ import annotations

import dataclasses
import struct
import tracemalloc
import warnings

import numpy as np
import pytest

from research.config import ConfigError, DataConfig, ModelConfig, PretrainedConfig
from research.vectors.align import align, token_text
from research.vectors.base import VectorFileError
from research.vectors.fasttext import char_ngrams, fasttext_hash
from research.vectors.intrinsic import evaluate_analogies, evaluate_similarity, gensim_datapath
from research.vectors.read import load_vectors, vector_dim
from research.vectors.write import save_vectors


def gensim_file(name):
    return gensim_datapath(name)


@pytest.fixture(scope="module")
def lee_models(tmp_path_factory):
    """Small Word2Vec and FastText models trained by research.vectors.train (gensim) on the Lee corpus."""
    from research.vectors.train import train_vectors

    folder = tmp_path_factory.mktemp("vectors")
    quiet = lambda *_: None  # noqa: E731
    w2v = train_vectors("lee", folder / "w2v", algo="word2vec", dim=24, epochs=3, min_count=3, log=quiet)
    ft = train_vectors(
        "lee", folder / "ft", algo="fasttext", dim=8, epochs=1, min_count=5, bucket=500, log=quiet
    )
    return {"w2v": w2v, "ft": ft, "folder": folder}


# ------------------------------------------------------------------------------------------ fastText hashing


def test_fasttext_hash_sign_extends_bytes():
    # values from FB fastText's dictionary (int8 bytes); plain FNV-1a differs on non-ASCII input
    assert fasttext_hash(b"<th") == 1619151151
    assert fasttext_hash("café".encode()) == 1970454601
    assert fasttext_hash("привет".encode()) == 4033455999


def test_char_ngrams_counts_characters_and_drops_lone_markers():
    got = [g.decode() for g in char_ngrams("café", 3, 5)]
    assert sorted(got) == sorted(["<ca", "<caf", "<café", "caf", "café", "café>", "afé", "afé>", "fé>"])
    assert [g.decode() for g in char_ngrams("a", 1, 3)] == ["<a", "<a>", "a", "a>"]


def test_ngram_rows_match_facebook_print_ngrams():
    """fb-ngrams.txt: FB `print-ngrams` on crime-and-punishment.bin (5 significant digits)."""
    vectors = load_vectors(gensim_file("crime-and-punishment.bin"))
    sub = vectors.subwords
    blocks, block = [], None
    for raw in gensim_file("fb-ngrams.txt").read_text(encoding="utf-8").splitlines():
        if raw == "<start>":
            block = []
        elif raw == "<end>":
            blocks.append(block)
        else:
            block.append(raw)
    assert len(blocks) == 6
    for block in blocks:
        word, rows = (
            block[0],
            [line[:-1].rsplit(" ", 5) if line.endswith(" ") else line.rsplit(" ", 5) for line in block[2:]],
        )
        grams = char_ngrams(word, sub.minn, sub.maxn)
        assert [r[0] for r in rows] == [g.decode() for g in grams], word
        ours = sub.rows[[sub.nwords + fasttext_hash(g) % sub.bucket for g in grams]]
        np.testing.assert_allclose(ours, np.array([r[1:] for r in rows], float), rtol=1e-4, atol=5e-6)


@pytest.mark.parametrize(
    "stem",
    ["crime-and-punishment", "toy-model", "lee_fasttext"],  # FB v12 skipgram, v12 cbow, old format
)
def test_fasttext_bin_reproduces_facebooks_vec(stem):
    ours = load_vectors(gensim_file(f"{stem}.bin"))
    reference = load_vectors(gensim_file(f"{stem}.vec"))
    assert ours.format == "fasttext-bin" and reference.format == "word2vec-text"
    assert ours.words == reference.words  # including </s> (v12: no n-grams for it; the old format: n-grams)
    np.testing.assert_allclose(ours.matrix, reference.matrix, rtol=1e-4, atol=6e-6)


def test_fasttext_bin_equals_gensim_and_composes_unseen_words(lee_models):
    from gensim.models.fasttext import load_facebook_vectors

    path = lee_models["ft"]["files"][1]
    ours, theirs = load_vectors(path), load_facebook_vectors(path)
    assert ours.words == list(theirs.index_to_key)
    np.testing.assert_allclose(ours.matrix, theirs.vectors, atol=1e-6)
    for word in ["zzqxy", "unseenword", "привет", "café", "Governmentalism"]:
        assert word not in ours
        np.testing.assert_allclose(ours.vector(word), theirs[word], atol=1e-6)
    assert not np.allclose(ours.vector("unseenword"), ours.vector("unseenwork"))  # depends on the spelling


def test_word2vec_text_and_binary_equal_gensims_vectors_exactly(lee_models):
    from gensim.models import KeyedVectors

    text, binary = lee_models["w2v"]["files"]
    reference = KeyedVectors.load_word2vec_format(text)
    for path in (text, binary):
        ours = load_vectors(path)
        assert ours.words == list(reference.index_to_key)
        np.testing.assert_array_equal(ours.matrix, reference.vectors)
    assert load_vectors(text).format == "word2vec-text" and load_vectors(binary).format == "word2vec-binary"


def test_gensims_bundled_formats_load_as_gensim_loads_them():
    from gensim.models import KeyedVectors

    for name, kwargs in [
        ("test_glove.txt", {"no_header": True}),
        ("high_precision.kv.txt", {}),
        ("high_precision.kv.bin", {"binary": True}),
        ("crime-and-punishment.vec", {}),
    ]:
        ours = load_vectors(gensim_file(name))
        theirs = KeyedVectors.load_word2vec_format(gensim_file(name), **kwargs)
        assert ours.words == list(theirs.index_to_key), name
        np.testing.assert_array_equal(ours.matrix, theirs.vectors)
    assert load_vectors(gensim_file("test_glove.txt")).format == "glove"


def test_limit_and_vector_lookup(lee_models):
    text = lee_models["w2v"]["files"][0]
    full, head = load_vectors(text), load_vectors(text, limit=10)
    assert head.words == full.words[:10]
    np.testing.assert_array_equal(head.matrix, full.matrix[:10])
    np.testing.assert_array_equal(full.vector(full.words[3]), full.matrix[3])
    with pytest.raises(KeyError, match="zzqxy"):
        full.vector("zzqxy")
    assert vector_dim(text) == 24 and vector_dim(lee_models["ft"]["files"][1]) == 8


def test_export_round_trips_through_gensim(tmp_path):
    from gensim.models import KeyedVectors

    rng = np.random.default_rng(0)
    words = ["the", "café", "x1", "Über"]
    matrix = rng.standard_normal((4, 5)).astype(np.float32)
    for binary in (False, True):
        path = save_vectors(tmp_path / f"v{binary}", words, matrix, binary=binary)
        ours = load_vectors(path)
        theirs = KeyedVectors.load_word2vec_format(path, binary=binary)
        assert ours.words == words == list(theirs.index_to_key)
        np.testing.assert_array_equal(ours.matrix, matrix)
        np.testing.assert_array_equal(theirs.vectors, matrix)
    with pytest.raises(ValueError, match="cannot be written"):
        save_vectors(tmp_path / "bad", ["new york"], matrix[:1], binary=True)


# ------------------------------------------------------------------------------------------ malformed files


def _f32(*values) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


OK_AB = (["a", "b"], [[1, 2, 3], [4, 5, 6]])
CASES = {  # name: (bytes, ("ok", words, rows) | ("error", pattern))
    "text_crlf": (b"2 3\r\na 1 2 3\r\nb 4 5 6\r\n", ("ok", *OK_AB)),
    "text_trailing_space": (b"2 3\na 1 2 3 \nb 4 5 6 \n", ("ok", *OK_AB)),
    "text_bom": (b"\xef\xbb\xbf2 3\na 1 2 3\nb 4 5 6\n", ("ok", *OK_AB)),
    "text_word_with_space": (b"2 3\nnew york 1 2 3\nb 4 5 6\n", ("ok", ["new york", "b"], OK_AB[1])),
    "text_nan_inf": (b"2 3\na nan inf -inf\nb 1e-3 5 6\n", ("ok", ["a", "b"], [[np.nan, np.inf, -np.inf], [1e-3, 5, 6]])),
    "glove_noheader": (b"a 1 2 3\nb 4 5 6\n", ("ok", *OK_AB)),
    "glove_blank_last_line": (b"a 1 2 3\nb 4 5 6\n\n", ("ok", *OK_AB)),
    "text_double_space": (b"2 3\na 1 2 3\nb 4  5 6\n", ("error", r":3: empty field")),
    "text_tab_sep": (b"2 3\na\t1\t2\t3\nb 4 5 6\n", ("error", r":2: tab")),
    "text_leading_space": (b"2 3\n a 1 2 3\nb 4 5 6\n", ("error", r":2: the line starts with a blank")),
    "text_short_row": (b"2 3\na 1 2 3\nb 4 5\n", ("error", r":3: 2 values, expected 3")),
    "text_long_row": (b"2 3\na 1 2 3 4\nb 4 5 6\n", ("error", r":2: 4 values, expected 3")),
    "text_not_a_number": (b"2 3\na 1 2 3\nb 4 x5 6\n", ("error", r":3: b'x5' is not a number")),
    "text_header_too_big": (b"3 3\na 1 2 3\nb 4 5 6\n", ("error", r":4: the header declares 3 vectors but the file ends after 2")),
    "text_latin1_strict": (b"2 3\ncaf\xe9 1 2 3\nb 4 5 6\n", ("error", r"line 2: word b'caf\\xe9' is not valid utf-8")),
    "bin_gensim_style": (b"2 3\na " + _f32(1, 2, 3) + b"b " + _f32(4, 5, 6), ("ok", *OK_AB)),
    "bin_c_style_newline": (b"2 3\na " + _f32(1, 2, 3) + b"\nb " + _f32(4, 5, 6) + b"\n", ("ok", *OK_AB)),
    "bin_crlf": (b"2 3\na " + _f32(1, 2, 3) + b"\r\nb " + _f32(4, 5, 6) + b"\r\n", ("ok", *OK_AB)),
    "bin_header_tab": (b"2\t3\na " + _f32(1, 2, 3) + b"b " + _f32(4, 5, 6), ("ok", *OK_AB)),
    "bin_float_has_0x20_0x0a": (b"2 1\na " + b"\x20\x0a\x20\x0a" + b"b " + _f32(4), ("ok", ["a", "b"], [[np.frombuffer(b"\x20\x0a\x20\x0a", "<f4")[0]], [4]])),
    "bin_word_with_space": (b"2 3\nnew york " + _f32(1, 2, 3) + b"b " + _f32(4, 5, 6), ("error", r"byte \d+: .*(word containing a space|bytes follow)")),
    "bin_float64": (b"2 3\na " + struct.pack("<3d", 1, 2, 3) + b"b " + struct.pack("<3d", 4, 5, 6), ("error", r"byte \d+: .*float64")),
    "bin_header_too_big": (b"3 3\na " + _f32(1, 2, 3) + b"b " + _f32(4, 5, 6), ("error", r"byte \d+: the header declares 3 vectors but the file ends after 2")),
    "bin_truncated_utf8": (b"2 3\ncaf\xc3 " + _f32(1, 2, 3) + b"b " + _f32(4, 5, 6), ("error", r"byte 4: word b'caf\\xc3' is not valid utf-8")),
    # headers that the file cannot hold: an error naming the file, never a division by zero or a huge allocation
    "text_header_zero_dim": (b"2 0\na\nb\n", ("error", r":1: the header declares 2 vectors of dimension 0; both must be > 0")),
    "text_header_negative_dim": (b"3 -2\na 1 2\nb 4 5\n", ("error", r":1: the header declares 3 vectors of dimension -2")),
    "text_header_huge_dim": (b"3 1000000000\na 1 2 3\nb 4 5 6\n", ("error", r":2: 3 values, expected 1000000000")),
    "text_header_huge_count": (b"1000000000 3\na 1 2 3\nb 4 5 6\n", ("error", r":4: the header declares 1000000000 vectors but the file ends after 2")),
    "bin_header_huge_count": (b"1000000000 1000\na " + _f32(*range(1000)), ("error", r"byte \d+: the header declares 1000000000 vectors but the file ends after 1")),
    "bin_header_zero_count": (b"0 3\na " + _f32(1, 2, 3), ("error", r":1: the header declares 0 vectors of dimension 3")),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_and_odd_files(name, tmp_path):
    data, expected = CASES[name]
    path = tmp_path / name
    path.write_bytes(data)
    if expected[0] == "error":
        with pytest.raises(VectorFileError, match=expected[1]) as error:
            load_vectors(path)
        assert str(path) in str(error.value)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the nan/inf warning is tested below
        vectors = load_vectors(path)
    assert vectors.words == expected[1]
    np.testing.assert_array_equal(vectors.matrix, np.array(expected[2], np.float32))
    assert vectors.matrix.dtype == np.float32


def test_a_file_that_is_not_what_its_suffix_says_is_named(tmp_path):
    path = tmp_path / "vectors.txt.gz"
    path.write_bytes(b"2 3\na 1 2 3\nb 4 5 6\n")  # not gzip
    with pytest.raises(VectorFileError, match=r"vectors.txt.gz: not a readable gz file"):
        load_vectors(path)
    with pytest.raises(VectorFileError, match=r"vectors.txt.gz: not a readable gz file"):
        vector_dim(path)


def test_gensim_agrees_where_it_loads(tmp_path):
    from gensim.models import KeyedVectors

    for name in [
        "text_crlf",
        "text_trailing_space",
        "bin_gensim_style",
        "bin_c_style_newline",
        "bin_header_tab",
    ]:
        path = tmp_path / name
        path.write_bytes(CASES[name][0])
        theirs = KeyedVectors.load_word2vec_format(path, binary=name.startswith("bin"))
        np.testing.assert_array_equal(load_vectors(path).matrix, theirs.vectors)


def test_encoding_options(tmp_path):
    path = tmp_path / "latin1"
    path.write_bytes(CASES["text_latin1_strict"][0])
    assert load_vectors(path, encoding="latin-1").words == ["café", "b"]
    assert load_vectors(path, errors="replace").words == ["caf\ufffd", "b"]
    path = tmp_path / "cut"
    path.write_bytes(CASES["bin_truncated_utf8"][0])
    assert load_vectors(path, errors="replace").words == ["caf\ufffd", "b"]
    assert load_vectors(gensim_file("cp852_fasttext.bin"), encoding="cp852").words[1] == "který"


@pytest.mark.parametrize(
    "data",
    [
        b"3 3\na 1 2 3\nb 4 5 6\na 7 8 9\n",
        b"3 3\na " + _f32(1, 2, 3) + b"b " + _f32(4, 5, 6) + b"a " + _f32(7, 8, 9),
    ],
)
def test_duplicates_keep_the_first_with_one_warning(data, tmp_path):
    path = tmp_path / "dup"
    path.write_bytes(data)
    with pytest.warns(UserWarning, match="1 duplicate word") as record:
        vectors = load_vectors(path)
    assert len(record) == 1
    assert vectors.words == ["a", "b"]
    np.testing.assert_array_equal(vectors.matrix, [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize("binary", [False, True])
def test_duplicates_across_read_chunks(binary, tmp_path):
    """40 words are read in chunks of 16: a word repeated in a later chunk, and twice within one, are dropped."""
    words = [f"w{i}" for i in range(40)]
    words[20] = "w3"  # the second chunk repeats a word of the first, and has no duplicate of its own
    words[37] = words[39] = "w33"  # the third chunk has w33 three times
    matrix = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    if binary:
        data = b"40 3\n" + b"".join(w.encode() + b" " + _f32(*row) for w, row in zip(words, matrix))
    else:
        data = (
            "40 3\n" + "".join(f"{w} {' '.join(map(str, row))}\n" for w, row in zip(words, matrix))
        ).encode()
    path = tmp_path / "dup"
    path.write_bytes(data)
    with pytest.warns(UserWarning, match="3 duplicate word"):
        vectors = load_vectors(path)
    keep = [i for i in range(40) if i not in (20, 37, 39)]
    assert vectors.words == [words[i] for i in keep]
    np.testing.assert_array_equal(vectors.matrix, matrix[keep])


def test_warnings_for_extra_rows_and_nonfinite_values(tmp_path):
    path = tmp_path / "small_header"
    path.write_bytes(b"1 3\na 1 2 3\nb 4 5 6\n")
    with pytest.warns(UserWarning, match="declares 1 vectors but 1 more"):
        assert load_vectors(path).words == ["a"]
    path.write_bytes(CASES["text_nan_inf"][0])
    with pytest.warns(UserWarning, match="1 vector.* nan or inf"):
        load_vectors(path)


def test_unsupported_files_are_refused(tmp_path):
    with pytest.raises(VectorFileError, match="supervised"):
        load_vectors(gensim_file("pang_lee_polarity_fasttext.bin"))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(VectorFileError, match="empty file"):
        load_vectors(empty)
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello world\nthis is prose\n")
    with pytest.raises(VectorFileError, match="cannot tell the format"):
        load_vectors(junk)
    with pytest.raises(ValueError, match="format: expected one of"):
        load_vectors(junk, format="npy")


@pytest.mark.parametrize("binary", [False, True])
def test_peak_memory_stays_near_the_matrix(binary, tmp_path):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(4000)]
    matrix = rng.standard_normal((4000, 300)).astype(np.float32)
    path = save_vectors(tmp_path / "big", words, matrix, binary=binary)
    tracemalloc.start()
    try:
        vectors = load_vectors(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(vectors.matrix, matrix)
    assert peak <= 1.3 * matrix.nbytes, (peak, matrix.nbytes)


# ------------------------------------------------------------------------------------------ alignment


def _vectors(words, matrix):
    from research.vectors.base import Vectors

    return Vectors(words, np.asarray(matrix, np.float32))


def test_token_text_strips_markers_and_skips_specials():
    assert token_text(" the") == "the" and token_text("\u2581The") == "The" and token_text("ing") == "ing"
    assert token_text("<unk>") is None and token_text("<0x0A>") is None and token_text("\n") is None
    assert token_text("<") == "<"


def test_align_exact_then_casefold_then_unmatched():
    vectors = _vectors(["the", "Paris", "paris", "cat"], np.arange(12).reshape(4, 3) + 1.0)
    pieces = ["<unk>", "<doc>", " the", "\u2581paris", "PARIS", "dog", " Cat"]
    counts = np.array([5, 1, 10, 3, 2, 7, 1])
    matrix, report = align(vectors, pieces, unmatched="zeros", counts=counts)
    np.testing.assert_array_equal(matrix[2], [1, 2, 3])  # exact after stripping the space
    np.testing.assert_array_equal(matrix[3], [7, 8, 9])  # exact 'paris'
    np.testing.assert_array_equal(matrix[4], [4, 5, 6])  # case-folded: the first in file order ('Paris')
    np.testing.assert_array_equal(matrix[6], [10, 11, 12])
    np.testing.assert_array_equal(matrix[[0, 1, 5]], 0)
    assert (
        report["exact"] == 2
        and report["casefold"] == 2
        and report["unmatched"] == 1
        and report["special"] == 2
    )
    assert report["top_unmatched"] == [["dog", 7]]
    assert report["token_coverage"] == pytest.approx((10 + 3 + 2 + 1) / counts.sum())
    _, strict = align(vectors, pieces, unmatched="zeros", casefold=False)
    assert strict["casefold"] == 0


def test_unmatched_initialisations():
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(400)]
    vectors = _vectors(words, rng.normal(0, 3.0, (400, 16)))
    pieces = words + [f"zz{i}" for i in range(400)]
    matrix, _ = align(vectors, pieces, unmatched="mean")
    np.testing.assert_allclose(matrix[400:], np.broadcast_to(vectors.matrix.mean(0), (400, 16)), rtol=1e-5)
    matrix, _ = align(vectors, pieces, unmatched="random", seed=3)
    assert matrix[400:].std() == pytest.approx(vectors.matrix.std(), rel=0.05)
    with pytest.raises(ValueError, match="unmatched: expected"):
        align(vectors, pieces, unmatched="glove")


def test_align_composes_unseen_words_from_fasttext_ngrams(lee_models):
    vectors = load_vectors(lee_models["ft"]["files"][1])
    pieces = ["<unk>", " the", " zzqxyword"]
    matrix, report = align(vectors, pieces, unmatched="zeros")
    assert report["subword"] == 1
    np.testing.assert_allclose(matrix[2], vectors.vector("zzqxyword"))
    _, off = align(vectors, pieces, unmatched="zeros", subwords=False)
    assert off["subword"] == 0 and off["unmatched"] == 1


def test_sentencepiece_pieces_align():
    from research.tokenization import resolve_tokenizer

    docs = ["The cat sat on the mat. The dog sat on the log."] * 20
    tokenizer = resolve_tokenizer({"name": "bpe", "vocab_size": 300}).build(docs)
    vectors = _vectors(["the", "cat", "sat"], np.eye(3))
    matrix, report = align(vectors, tokenizer.pieces(), unmatched="zeros")
    ids = [i for i, p in enumerate(tokenizer.pieces()) if p in ("\u2581the", "\u2581The")]
    assert ids and all(np.array_equal(matrix[i], [1, 0, 0]) for i in ids)
    assert report["special"] >= 256  # byte fallbacks and control pieces


# ------------------------------------------------------------------------------------------ into a model


def test_training_modes_through_multi_transform():
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from research.config import TrainConfig
    from research.model.build import resolve_model
    from research.model.transformer import Transformer
    from research.training.step import make_optimizer

    resolved = resolve_model(ModelConfig(d_model=16, num_layers=1, num_heads=2), max_len=8, vocab_size=10)
    _, params = nnx.split(Transformer(resolved, vocab_size=10, rngs=nnx.Rngs(0)))
    train = TrainConfig(steps=10, warmup_steps=0)
    grads = jax.tree.map(jnp.ones_like, params)
    expected = {
        "finetune": [1, 1, 1, 1, 1],
        "frozen": [0, 0, 0, 0, 0],
        "frozen_then_finetune": [0, 0, 0, 1, 1],
    }
    cases = [(mode, path) for mode in expected for path in ("vectors.txt", None)]  # None: the random table
    for mode, path in cases:
        table_moves = expected[mode]
        tx = make_optimizer(
            train,
            PretrainedConfig(
                path=path, mode=mode, freeze_steps=3 * (mode != "frozen" and mode != "finetune")
            ),
        )
        state, current = tx.init(params), params
        for step in range(5):
            updates, state = tx.update(grads, state, current)
            new = optax.apply_updates(current, updates)
            table_moved = bool(jnp.any(new["embedding"]["table"][...] != current["embedding"]["table"][...]))
            norm_moved = bool(jnp.any(new["final_norm"]["scale"][...] != current["final_norm"]["scale"][...]))
            assert table_moved == bool(table_moves[step]) and norm_moved, (mode, path, step)
            current = new
    char = resolve_model(ModelConfig(d_model=16, num_layers=1, num_heads=2, embedding={"name": "char_cnn"}),
                         max_len=8, vocab_size=10)  # fmt: skip
    _, char_params = nnx.split(
        Transformer(char, vocab_size=10, rngs=nnx.Rngs(0), pieces=[str(i) for i in range(10)])
    )
    with pytest.raises(ConfigError, match="model.pretrained.mode: freezes the embedding table"):
        make_optimizer(train, PretrainedConfig(mode="frozen")).init(char_params)


def _vector_file(tmp_path, dim):
    """Word vectors for frequent words of the default corpus (so that alignment finds them)."""
    words = ["the", "of", "and", "in", "to", "a", "is", "was", "The", "for", "as", "on", "by", "with"]
    rng = np.random.default_rng(0)
    return save_vectors(tmp_path / f"vec{dim}.txt", words, rng.normal(0, 0.5, (len(words), dim)))


def test_frozen_pretrained_table_trains_nothing_else_changes(tmp_path, tiny):
    from research.analysis.trained import load_trained_model
    from research.training.loop import train_and_evaluate
    from research.vectors.align import align

    path = _vector_file(tmp_path, 32)
    base = tiny()
    config = dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, tokenizer={"name": "word", "max_size": 500}),
        model=dataclasses.replace(
            base.model, embedding={"name": "table", "tied": False},
            pretrained=PretrainedConfig(path=str(path), mode="frozen", unmatched="zeros"),
        ),
    )  # fmt: skip
    summary = train_and_evaluate(config, tmp_path / "run", log=lambda *_: None)
    report = summary["pretrained"]
    assert report["exact"] >= 12 and report["format"] == "word2vec-text" and 0 < report["token_coverage"] < 1
    _, model, _ = load_trained_model(tmp_path / "run")
    from research.data.pipeline import prepare_data

    tokenizer = prepare_data(config.data).tokenizer
    expected, _ = align(load_vectors(path), tokenizer.pieces(), unmatched="zeros")
    np.testing.assert_array_equal(np.asarray(model.embedding.table[...]), expected)  # frozen: bit for bit
    assert np.isfinite(summary["metrics"]["test/len_16/bpb"])


def test_pretrained_config_errors_name_the_field(tmp_path):
    from research.model.build import resolve_model

    path = str(_vector_file(tmp_path, 8))

    def resolve(embedding=None, d_model=32, **pretrained):
        model = ModelConfig(d_model=d_model, num_layers=1, num_heads=4, embedding=embedding or {"name": "table"},
                            pretrained=PretrainedConfig(**pretrained))  # fmt: skip
        return resolve_model(model, max_len=16, vocab_size=100)

    for kwargs, message in [
        ({"path": path, "mode": "thaw"}, "model.pretrained.mode: expected one of"),
        ({"path": path, "freeze_steps": 5}, "model.pretrained.freeze_steps"),
        ({"path": str(tmp_path / "missing.txt")}, "model.pretrained.path: .*no such vector file"),
        ({"path": path, "unmatched": "ones"}, "model.pretrained.unmatched"),
        ({"path": path, "format": "npy"}, "model.pretrained.format"),
        ({"path": path, "projection": False}, "dimension 8 but the table is 32 wide"),
        (
            {"path": path, "embedding": {"name": "factorized", "embed_dim": 16}},
            "set model.embedding.embed_dim=8",
        ),
        ({"path": path, "embedding": {"name": "char_cnn"}}, "`table` and `factorized` designs"),
        ({"path": "train:glove:lee"}, "model.pretrained.path: .*ALGO"),
    ]:
        with pytest.raises(ConfigError, match=message):
            resolve(**kwargs)
    resolved = resolve(
        path=path
    )  # a dimension mismatch with projection: factorized, table as wide as the vectors
    assert type(resolved.embedding).__name__ == "FactorizedConfig" and resolved.embedding.embed_dim == 8
    assert resolve(path="train:word2vec:lee,dim=32").embedding.__class__.__name__ == "TableConfig"


def test_train_docs_and_fraction_share_one_vocabulary():
    from research.data.pipeline import prepare_data, validate_data_config

    base = DataConfig(
        tokenizer={"name": "word", "max_size": 300}, train_docs=(0.0, 0.5), max_eval_bytes=2_000
    )
    full, tenth = prepare_data(base), prepare_data(dataclasses.replace(base, train_fraction=0.1))
    assert full.tokenizer.fingerprint == tenth.tokenizer.fingerprint
    assert len(tenth.splits["train"].tokens) == round(0.1 * len(full.splits["train"].tokens))
    whole = prepare_data(dataclasses.replace(base, train_docs=(0.0, 1.0)))
    assert len(whole.splits["train"].tokens) > 1.5 * len(full.splits["train"].tokens)
    for field, value in [("train_docs", (0.5, 0.5)), ("train_fraction", 0.0)]:
        with pytest.raises(ConfigError, match=f"data.{field}"):
            validate_data_config(dataclasses.replace(base, **{field: value}))
    later = prepare_data(dataclasses.replace(base, train_fraction=0.1, train_fraction_start=0.45))
    tokens, start = np.asarray(full.splits["train"].tokens), round(0.45 * len(full.splits["train"].tokens))
    np.testing.assert_array_equal(
        later.splits["train"].tokens, tokens[start : start + len(tenth.splits["train"].tokens)]
    )
    with pytest.raises(
        ConfigError, match=r"data.train_fraction_start: expected 0 <= start <= 1 - train_fraction \(0.9\)"
    ):
        validate_data_config(dataclasses.replace(base, train_fraction=0.1, train_fraction_start=0.95))


# ------------------------------------------------------------------------------------------ intrinsic evaluation


def test_intrinsic_scores_equal_gensims(lee_models):
    from gensim.models import KeyedVectors

    path = lee_models["w2v"]["files"][0]
    kv = KeyedVectors.load_word2vec_format(path)
    vectors = load_vectors(path)
    score, sections = kv.evaluate_word_analogies(gensim_file("questions-words.txt"))
    ours = evaluate_analogies(vectors.words, vectors.matrix)
    total = sections[-1]
    assert ours["correct"] == len(total["correct"]) and ours["total"] == len(total["correct"]) + len(
        total["incorrect"]
    )
    assert ours["total"] > 100 and ours["accuracy"] == pytest.approx(score)
    for name in ("wordsim353.tsv", "simlex999.txt"):
        pearson, spearman, oov = kv.evaluate_word_pairs(gensim_file(name))
        got = evaluate_similarity(vectors.words, vectors.matrix, gensim_file(name))
        assert got["spearman"] == pytest.approx(spearman[0], abs=1e-9)
        assert got["pearson"] == pytest.approx(pearson[0], abs=1e-6)
        assert got["oov_ratio"] * 100 == pytest.approx(oov)


def test_train_vectors_is_deterministic_and_recipes_parse(lee_models, tmp_path):
    from research.vectors.train import parse_recipe, train_vectors

    again = train_vectors(
        "lee", tmp_path / "w2v", algo="word2vec", dim=24, epochs=3, min_count=3, log=lambda *_: None
    )
    a, b = load_vectors(lee_models["w2v"]["files"][1]), load_vectors(again["files"][1])
    assert a.words == b.words
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert parse_recipe("train:fasttext:wiki-sample:0.5-1.0,dim=64,sg=false") == {
        "algo": "fasttext", "corpus": "wiki-sample:0.5-1.0", "dim": 64, "sg": False,
    }  # fmt: skip
    with pytest.raises(ValueError, match="unknown option"):
        parse_recipe("train:word2vec:lee,size=3")
