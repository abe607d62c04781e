"""Token-embedding designs: registry-wide contract (shapes, dtypes, jit, tied readout shares parameters), each design
against a numpy transcription of its formula, dropout and parameter counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.config import ConfigError, ModelConfig, resolve_spec
from research.embedding import EMBEDDINGS
from research.model.build import resolve_model
from research.model.transformer import Transformer, parameter_counts

V, D = 50, 16
CHARS = {"char_dim": 4, "widths": [1, 2, 3], "filters_per_width": 2, "max_chars": 8}
OPTIONS = {"factorized": {"embed_dim": 8}, "char_cnn": CHARS, "word_char": {**CHARS, "combine": "sum"}}
PIECES = ["<unk>", "<doc>"] + [f"w{'ab'[i % 2]}{i}" for i in range(V - 2)]
TIEABLE = ("table", "factorized", "word_char")  # char_cnn has no table to tie to


def build(name, **options):
    spec = {"name": name, **OPTIONS.get(name, {}), **options}
    config = resolve_spec(EMBEDDINGS, spec, field="model.embedding")
    config.validate(vocab_size=V, d_model=D)
    return config.build(vocab_size=V, d_model=D, rngs=nnx.Rngs(0), pieces=PIECES)


def tie_options(name, tied):
    return {"tied": tied} if name in TIEABLE else {}


TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, V, (2, 7)), jnp.int32)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("name", EMBEDDINGS.names())
def test_contract_shapes_dtypes_jit(name, tied):
    emb = build(name, **tie_options(name, tied))
    graphdef, state = nnx.split(emb)
    traces = []

    @jax.jit
    def run(state, tokens):
        traces.append(1)
        m = nnx.merge(graphdef, state)
        x = m.embed(tokens)
        return x, m.unembed(x)

    x, logits = run(state, TOKENS)
    assert x.shape == (2, 7, D) and x.dtype == jnp.float32
    assert logits.shape == (2, 7, V) and logits.dtype == jnp.float32
    run(state, TOKENS + 1)
    assert len(traces) == 1  # no retracing for new token values


@pytest.mark.parametrize("name", TIEABLE)
def test_tied_readout_really_shares_parameters(name):
    """Tied: no readout parameter, and the readout's gradient reaches the input table."""
    tied, untied = build(name, tied=True), build(name, tied=False)
    count = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
    assert count(untied) - count(tied) == D * V
    graphdef, state = nnx.split(tied)
    h = jnp.ones((1, 1, D))
    grads = jax.grad(lambda st: nnx.merge(graphdef, st).unembed(h)[0, 0, 3])(state)
    assert float(jnp.abs(grads["table"][...][3]).sum()) > 0  # row 3 of the table is the readout of token 3


def test_table_formula_and_options():
    emb = build("table", scale="sqrt_d")
    table = np.asarray(emb.table[...])
    np.testing.assert_allclose(emb.embed(TOKENS), table[np.asarray(TOKENS)] * np.sqrt(D), rtol=1e-6)
    h = np.random.default_rng(1).normal(size=(2, 7, D)).astype(np.float32)
    np.testing.assert_allclose(emb.unembed(jnp.asarray(h)), h @ table.T, rtol=1e-5, atol=1e-5)
    normed = build("table", norm=True).embed(TOKENS)
    np.testing.assert_allclose(np.asarray(normed).mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(normed).std(-1), 1, atol=1e-2)


def test_factorized_formula_and_parameter_count():
    emb = build("factorized", embed_dim=4)
    t, p = np.asarray(emb.table[...], np.float64), np.asarray(emb.projection[...], np.float64)
    assert t.shape == (V, 4) and p.shape == (4, D)
    np.testing.assert_allclose(emb.embed(TOKENS), t[np.asarray(TOKENS)] @ p, rtol=1e-5, atol=1e-6)
    h = np.random.default_rng(2).normal(size=(2, 7, D))
    np.testing.assert_allclose(
        emb.unembed(jnp.asarray(h, jnp.float32)), (h @ p.T) @ t.T, rtol=1e-4, atol=1e-5
    )
    assert sum(x.size for x in jax.tree.leaves(nnx.state(emb, nnx.Param))) == V * 4 + 4 * D


@pytest.mark.parametrize("name", EMBEDDINGS.names())
def test_dropout_only_in_training(name):
    emb = build(name, dropout=0.5)
    clean = emb.embed(TOKENS)
    np.testing.assert_array_equal(emb.embed(TOKENS, key=None), clean)  # evaluation: deterministic, no dropout
    dropped = np.asarray(emb.embed(TOKENS, key=jax.random.key(0)))
    zero = dropped == 0
    assert 0.35 < zero.mean() < 0.65
    np.testing.assert_allclose(dropped[~zero], 2 * np.asarray(clean)[~zero], rtol=1e-6)  # inverted scaling


def test_parameter_counts_split_embedding_and_readout():
    def counts(embedding):
        cfg = ModelConfig(d_model=D, num_layers=1, num_heads=2, embedding=embedding)
        r = resolve_model(cfg, max_len=8, vocab_size=V)
        return parameter_counts(Transformer(r, vocab_size=V, rngs=nnx.Rngs(0)))

    tied, untied = counts({"name": "table"}), counts({"name": "table", "tied": False})
    assert tied["embedding"] == V * D and tied["readout"] == 0
    assert untied["embedding"] == V * D and untied["readout"] == D * V
    assert tied["rest"] == untied["rest"]
    fact = counts({"name": "factorized", "embed_dim": 4})
    assert fact["embedding"] == V * 4 + 4 * D and fact["readout"] == 0 and fact["rest"] == tied["rest"]
    for c in (tied, untied, fact):
        assert c["total"] == c["embedding"] + c["readout"] + c["positional"] + c["rest"]


def test_bad_embedding_options_name_the_field():
    cfg = lambda e: ModelConfig(d_model=D, num_layers=1, num_heads=2, embedding=e)
    with pytest.raises(ConfigError, match="model.embedding.*table"):
        resolve_model(cfg({"name": "tabel"}), max_len=8, vocab_size=V)
    with pytest.raises(ConfigError, match="model.embedding.dropout"):
        resolve_model(cfg({"name": "table", "dropout": 1.0}), max_len=8, vocab_size=V)
    with pytest.raises(ConfigError, match="model.embedding.embed_dim"):
        resolve_model(cfg({"name": "factorized", "embed_dim": 0}), max_len=8, vocab_size=V)


def test_nearest_neighbours_and_pca():
    from research.analysis.embeddings import nearest_neighbours, pca_2d

    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    assert [i for i, _ in nearest_neighbours(vectors, 0, 3)] == [1, 2, 3]
    assert nearest_neighbours(vectors, 0, 1)[0][1] == pytest.approx(0.9 / np.hypot(0.9, 0.1))
    rng = np.random.default_rng(0)
    data = rng.normal(size=(200, 5)) * np.array([5.0, 2.0, 0.5, 0.1, 0.1])
    xy, ratio = pca_2d(data)
    centred = data - data.mean(0)
    eig = np.sort(np.linalg.eigvalsh(np.cov(centred.T)))[::-1]
    np.testing.assert_allclose(ratio, eig[:2] / eig.sum(), rtol=1e-8)
    np.testing.assert_allclose(np.var(xy, axis=0, ddof=1), eig[:2], rtol=1e-8)


def test_inspect_a_trained_run(tmp_path):
    from research.analysis.embeddings import inspect
    from research.training.loop import train_and_evaluate

    from .conftest import tiny_config

    train_and_evaluate(tiny_config("nope", steps=2), tmp_path / "run", log=lambda m: None)
    result = inspect(tmp_path / "run", tokens=["e", " "], k=3)
    assert result["figure"].stat().st_size > 1000
    assert [len(v) for v in result["neighbours"].values()] == [3, 3]
    assert all(p != "e" for p, _ in result["neighbours"]["e"])
    with pytest.raises(KeyError, match="not in the vocabulary"):
        inspect(tmp_path / "run", tokens=["no such token"])
    from research.analysis.embeddings import export_table, token_vectors
    from research.vectors.read import load_vectors

    info = export_table(tmp_path / "run", tmp_path / "vectors.bin", binary=True)
    exported = load_vectors(info["path"])
    assert len(exported) == info["words"] > 50 and exported.dim == 32
    from research.analysis.trained import load_trained_model

    _, model, _ = load_trained_model(tmp_path / "run")
    e_id = 101  # byte tokenizer: id of 'e'
    np.testing.assert_array_equal(exported.vector("e"), token_vectors(model, 257)[e_id].astype(np.float32))


# --------------------------------------------------------------------------------------------- char-CNN


def _np_char_cnn(vectors, filters):
    """Narrow convolution, tanh, max over time, written out position by position."""
    out = []
    for kernel, bias in filters:
        w, _, h = kernel.shape
        n, c_len, _ = vectors.shape
        feats = np.full((n, h), -np.inf)
        for t in range(c_len - w + 1):
            window = vectors[:, t : t + w, :]  # [N,w,c]
            feats = np.maximum(feats, np.tanh(np.einsum("nwc,wch->nh", window, kernel) + bias))
        out.append(feats)
    return np.concatenate(out, -1)


def test_char_cnn_features_and_highway_match_numpy():
    from research.embedding.char_cnn import char_cnn_features, highway

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5, 9, 4))
    filters = [(rng.normal(size=(w, 4, 3 * w)), rng.normal(size=(3 * w,))) for w in (1, 2, 4)]
    got = char_cnn_features(
        jnp.asarray(vectors, jnp.float32),
        [(jnp.asarray(k, jnp.float32), jnp.asarray(b, jnp.float32)) for k, b in filters],
    )
    np.testing.assert_allclose(got, _np_char_cnn(vectors, filters), rtol=1e-4, atol=1e-5)
    y = rng.normal(size=(3, 6))
    wh, bh, wt, bt = rng.normal(size=(6, 6)), rng.normal(size=6), rng.normal(size=(6, 6)), rng.normal(size=6)
    t = 1 / (1 + np.exp(-(y @ wt + bt)))
    expected = t * np.maximum(y @ wh + bh, 0) + (1 - t) * y
    np.testing.assert_allclose(
        highway(*(jnp.asarray(a, jnp.float32) for a in (y, wh, bh, wt, bt))), expected, rtol=1e-4, atol=1e-5
    )


def test_spelling_and_shared_characters():
    """Tokens are spelled from their pieces; words sharing characters share parameters through them."""
    from research.embedding.char_cnn import BOW, EOW, spell

    s = spell(["ab", "ba", "abcdefgh"], max_chars=6)
    a, b = s.chars[0, 1], s.chars[0, 2]
    assert s.chars[0].tolist() == [BOW, a, b, EOW, 0, 0]
    assert s.chars[1].tolist() == [BOW, b, a, EOW, 0, 0]
    assert s.chars[2, -1] == EOW and len(s.chars[2]) == 6  # truncated to max_chars - 2 characters
    emb = build("char_cnn")
    x = np.asarray(emb.embed(jnp.arange(V)[None])[0])
    assert np.linalg.matrix_rank(x) > 1 and not np.allclose(
        x[2], x[3]
    )  # different spellings, different vectors
    same = build("char_cnn").embed(jnp.array([[2, 2]]))
    np.testing.assert_array_equal(same[0, 0], same[0, 1])  # same token, same vector


@pytest.mark.parametrize("combine", ["concat", "sum", "gate"])
def test_word_char_combinations(combine):
    emb = build("word_char", combine=combine)
    x = emb.embed(TOKENS)
    assert x.shape == (2, 7, D)
    if combine == "sum":
        word = np.asarray(emb.table[...])[np.asarray(TOKENS)]
        chars = np.asarray(emb.encoder(TOKENS) @ emb.char_projection[...])
        np.testing.assert_allclose(x, word + chars, rtol=1e-5, atol=1e-6)
    if combine == "gate":  # gate parameters start at zero: g = 1/2, the mean of both vectors
        word = np.asarray(emb.table[...])[np.asarray(TOKENS)]
        chars = np.asarray(emb.encoder(TOKENS) @ emb.char_projection[...])
        np.testing.assert_allclose(x, (word + chars) / 2, rtol=1e-5, atol=1e-6)


def test_char_designs_need_pieces_and_valid_options():
    config = resolve_spec(EMBEDDINGS, {"name": "char_cnn", **CHARS}, field="model.embedding")
    with pytest.raises(ValueError, match="pieces"):
        config.build(vocab_size=V, d_model=D, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="model.embedding.tied"):
        resolve_model(
            ModelConfig(d_model=D, num_layers=1, num_heads=2, embedding={"name": "word_char", "tied": True}),
            max_len=8,
            vocab_size=V,
        )
    with pytest.raises(ConfigError, match="model.embedding.max_chars"):
        resolve_model(
            ModelConfig(d_model=D, num_layers=1, num_heads=2, embedding={"name": "char_cnn", "max_chars": 3}),
            max_len=8,
            vocab_size=V,
        )


@pytest.mark.slow
def test_word_level_run_with_char_cnn(tmp_path):
    """End to end: a word-level LM whose input vectors come from characters trains, evaluates and is inspected."""
    import dataclasses

    from research.training.loop import train_and_evaluate

    from .conftest import tiny_config

    config = tiny_config("rope", steps=3)
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(
            config.data, tokenizer={"name": "word", "max_size": 500, "spell_unknowns": True}
        ),
        model=dataclasses.replace(config.model, embedding={"name": "char_cnn", **CHARS}),
    )
    summary = train_and_evaluate(config, tmp_path / "run", log=lambda m: None)
    assert summary["params"]["readout"] == 32 * 500
    assert np.isfinite(summary["metrics"]["test/len_16/bpb"]) and summary["oov_rate"]["test"] > 0
    from research.analysis.embeddings import inspect

    assert inspect(tmp_path / "run", k=2)["figure"].exists()
