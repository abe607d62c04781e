"""Character-aware word vectors (Kim et al. 2016, "Character-Aware Neural Language Models", arXiv 1508.06615, §2.2-2.3),
and their combination with a word table (`word_char`).

`char_cnn`: each token's spelling (its tokenizer piece, between begin- and end-of-word symbols, padded to
`max_chars`) is embedded character by character (C [c, n_chars]); for each width w a bank of h_w filters
H [w, c, h_w] slides over it, and the token's feature for that filter is
    y_k = max_t tanh((C[:, t:t+w] * H_k).sum() + b_k)                     (narrow convolution, max over time)
then `highway_layers` highway layers
    z = t ⊙ relu(W_H y + b_H) + (1 - t) ⊙ y,    t = σ(W_T y + b_T),   b_T initialised to -2
and a linear map to d_model. Kim et al.'s small model: c = 15, widths 1..6 with 25·w filters each, one highway
layer (the defaults here). The readout is a separate [d, V] matrix over the word vocabulary (no table to tie to).

`word_char`: a word table combined with the char-CNN vector of the same token:
- `concat`: [table[t]; cnn(t)] projected to d_model (untied readout);
- `sum`: table[t] + cnn(t) (both d_model; readout tied to the table by default);
- `gate`: g = σ(vᵀ table[t] + b), x = (1 - g) table[t] + g cnn(t), a scalar gate per token computed from the word
  vector (Miyamoto & Cho 2016, "Gated Word-Character Recurrent Language Model", arXiv 1606.01700, eq. 3).

Spellings come from the tokenizer's `pieces()` for every id, so these designs need `pieces` at build time (the
training loop passes the tokenizer's). Deviations: spellings longer than `max_chars - 2` are truncated; characters
are those of the vocabulary pieces (any other character maps to a shared unknown-character id); out-of-vocabulary
words reach the model as `<unk>`, spelled "<unk>", unless the word tokenizer spells them
(`word:spell_unknowns=true`): then they keep ids >= V, the char-CNN reads their real spelling, the word table of
`word_char` sees <unk>, and the targets stay <unk>.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research.embedding.base import EMBEDDINGS, EmbeddingConfig, TokenEmbedding, check_common, dropout
from research.embedding.table import lookup

PAD, BOW, EOW, UNK_CHAR = 0, 1, 2, 3  # character ids
UNK_WORD = 0  # the <unk> id of the closed-vocabulary tokenizers (research/tokenization/vocab.py)


class Spelling:
    """Static [V, max_chars] int32 character ids of every vocabulary id (part of the graph, not of the state: it is
    data, never trained). Hashable by content."""

    def __init__(self, chars: np.ndarray, alphabet: Sequence[str]):
        self.chars = chars
        self.alphabet = tuple(alphabet)
        self._hash = hash(hashlib.sha256(chars.tobytes()).hexdigest())

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return isinstance(other, Spelling) and np.array_equal(self.chars, other.chars)


def spell(pieces: Sequence[str], max_chars: int) -> Spelling:
    """[BOW, c1, ..., cn, EOW, PAD...] for every piece; characters numbered in order of first appearance."""
    alphabet: dict[str, int] = {}
    chars = np.zeros((len(pieces), max_chars), np.int32)
    for i, piece in enumerate(pieces):
        ids = [alphabet.setdefault(ch, 4 + len(alphabet)) for ch in piece[: max_chars - 2]]
        row = [BOW, *ids, EOW]
        chars[i, : len(row)] = row
    return Spelling(chars, list(alphabet))


def highway(y: jax.Array, w_h: jax.Array, b_h: jax.Array, w_t: jax.Array, b_t: jax.Array) -> jax.Array:
    """z = t ⊙ relu(y W_H + b_H) + (1 - t) ⊙ y,  t = σ(y W_T + b_T);  y [..., F], W [F, F]."""
    t = jax.nn.sigmoid(y @ w_t + b_t)
    return t * jax.nn.relu(y @ w_h + b_h) + (1.0 - t) * y


def char_cnn_features(char_vectors: jax.Array, filters: Sequence[tuple[jax.Array, jax.Array]]) -> jax.Array:
    """char_vectors [N, C, c]; filters [(H [w, c, h_w], b [h_w])] -> [N, sum h_w]: max over time of tanh(conv)."""
    out = []
    for kernel, bias in filters:
        conv = jax.lax.conv_general_dilated(
            char_vectors,
            kernel,
            window_strides=(1,),
            padding="VALID",
            dimension_numbers=("NWC", "WIO", "NWC"),
        )  # [N, C - w + 1, h_w]
        out.append(jnp.max(jnp.tanh(conv + bias), axis=1))
    return jnp.concatenate(out, axis=-1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _CharOptions(EmbeddingConfig):
    needs_pieces = True
    char_dim: int = 15
    """c, the width of the character embeddings."""
    widths: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    """Convolution widths w."""
    filters_per_width: int = 25
    """Width w gets filters_per_width * w filters (Kim et al.'s small model: 25)."""
    highway_layers: int = 1
    max_chars: int = 21
    """Spelling length including the begin/end symbols; longer pieces are truncated."""
    init_std: float = 0.02
    dropout: float = 0.0

    def _validate_char(self) -> None:
        if self.char_dim < 1 or self.filters_per_width < 1 or self.highway_layers < 0:
            raise ValueError(
                "model.embedding: expected char_dim >= 1, filters_per_width >= 1 and highway_layers >= 0, got "
                f"{self.char_dim}, {self.filters_per_width}, {self.highway_layers}"
            )
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"model.embedding.widths: expected positive widths, got {self.widths}")
        if self.max_chars < max(self.widths):
            raise ValueError(
                f"model.embedding.max_chars: expected >= the widest filter ({max(self.widths)}), got {self.max_chars}"
            )
        check_common(dropout=self.dropout, init_std=self.init_std)


class CharEncoder(nnx.Module):
    """Token ids -> char-CNN + highway features [.., F] (F = sum of filters) for a fixed vocabulary spelling."""

    def __init__(self, config: _CharOptions, spelling: Spelling, *, rngs: nnx.Rngs):
        self.spelling = spelling
        n_chars = 4 + len(spelling.alphabet)
        self.char_table = nnx.Param(jax.random.normal(rngs.params(), (n_chars, config.char_dim)) * 0.1)
        kernels, biases = [], []
        for w in config.widths:
            h = config.filters_per_width * w
            fan_in = w * config.char_dim
            kernels.append(
                nnx.Param(jax.random.normal(rngs.params(), (w, config.char_dim, h)) / np.sqrt(fan_in))
            )
            biases.append(nnx.Param(jnp.zeros((h,))))
        self.kernels, self.biases = nnx.List(kernels), nnx.List(biases)
        f = config.filters_per_width * sum(config.widths)
        self.features = f
        self.highways = nnx.List(
            [
                nnx.Dict(
                    w_h=nnx.Param(jax.random.normal(rngs.params(), (f, f)) / np.sqrt(f)),
                    b_h=nnx.Param(jnp.zeros((f,))),
                    w_t=nnx.Param(jax.random.normal(rngs.params(), (f, f)) / np.sqrt(f)),
                    b_t=nnx.Param(jnp.full((f,), -2.0)),
                )
                for _ in range(config.highway_layers)
            ]
        )

    def __call__(self, tokens: jax.Array) -> jax.Array:
        chars = jnp.asarray(self.spelling.chars)[tokens]  # [B,T,C]
        vectors = lookup(self.char_table[...], chars)  # [B,T,C,c]
        flat = vectors.reshape(-1, *vectors.shape[-2:])  # [B*T,C,c]
        filters = [(k[...], b[...]) for k, b in zip(self.kernels, self.biases)]
        y = char_cnn_features(flat, filters)  # [B*T,F]
        for layer in self.highways:
            y = highway(y, layer["w_h"][...], layer["b_h"][...], layer["w_t"][...], layer["b_t"][...])
        return y.reshape(*tokens.shape, -1)  # [B,T,F]


def _require_pieces(pieces, vocab_size: int, name: str) -> list[str]:
    if pieces is None:
        raise ValueError(f"model.embedding: {name} spells every token, so it needs the tokenizer's pieces()")
    if len(pieces) < vocab_size:
        raise ValueError(f"model.embedding: {len(pieces)} pieces for a vocabulary of {vocab_size}")
    return list(pieces)


@EMBEDDINGS.register("char_cnn")
@dataclasses.dataclass(frozen=True, kw_only=True)
class CharCNNConfig(_CharOptions):
    """Word vectors composed from characters only; untied readout over the word vocabulary."""

    def validate(self, *, vocab_size: int, d_model: int) -> None:
        self._validate_char()

    def build(self, *, vocab_size: int, d_model: int, rngs: nnx.Rngs, pieces=None) -> TokenEmbedding:
        spelling = spell(_require_pieces(pieces, vocab_size, "char_cnn"), self.max_chars)
        return CharCNNEmbedding(self, spelling, vocab_size=vocab_size, d_model=d_model, rngs=rngs)


class CharCNNEmbedding(TokenEmbedding):
    def __init__(self, config: CharCNNConfig, spelling: Spelling, *, vocab_size: int, d_model: int, rngs):
        self.encoder = CharEncoder(config, spelling, rngs=rngs)
        f = self.encoder.features
        self.projection = nnx.Param(jax.random.normal(rngs.params(), (f, d_model)) * config.init_std)  # [F,d]
        self.readout = nnx.Param(jax.random.normal(rngs.params(), (d_model, vocab_size)) * config.init_std)
        self.rate = config.dropout

    def embed(self, tokens: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return dropout(self.encoder(tokens) @ self.projection[...], self.rate, key)  # [B,T,d]

    def unembed(self, x: jax.Array) -> jax.Array:
        return jnp.einsum("btd,dv->btv", x, self.readout[...].astype(x.dtype))


@EMBEDDINGS.register("word_char")
@dataclasses.dataclass(frozen=True, kw_only=True)
class WordCharConfig(_CharOptions):
    """A word table combined with the char-CNN vector of the same token (concat, sum or gate)."""

    combine: Literal["concat", "sum", "gate"] = "concat"
    word_dim: int | None = None
    """Width of the word table for `concat` (None = d_model); `sum` and `gate` use d_model."""
    tied: bool | None = None
    """Readout tied to the word table; None = True for sum/gate, False for concat (concat cannot tie)."""

    def validate(self, *, vocab_size: int, d_model: int) -> None:
        self._validate_char()
        if self.combine not in ("concat", "sum", "gate"):
            raise ValueError(
                f"model.embedding.combine: expected 'concat', 'sum' or 'gate', got {self.combine!r}"
            )
        if self.combine == "concat" and self.tied:
            raise ValueError(
                "model.embedding.tied: a concat combination has no d_model table to tie the readout to"
            )
        if self.word_dim is not None and (self.combine != "concat" or self.word_dim < 1):
            raise ValueError("model.embedding.word_dim: only for combine=concat, and positive")

    def build(self, *, vocab_size: int, d_model: int, rngs: nnx.Rngs, pieces=None) -> TokenEmbedding:
        spelling = spell(_require_pieces(pieces, vocab_size, "word_char"), self.max_chars)
        return WordCharEmbedding(self, spelling, vocab_size=vocab_size, d_model=d_model, rngs=rngs)


class WordCharEmbedding(TokenEmbedding):
    def __init__(self, config: WordCharConfig, spelling: Spelling, *, vocab_size: int, d_model: int, rngs):
        self.combine = config.combine
        word_dim = (config.word_dim or d_model) if config.combine == "concat" else d_model
        init = nnx.initializers.normal(config.init_std)
        self.table = nnx.Param(init(rngs.params(), (vocab_size, word_dim), jnp.float32))  # [V,Ew]
        self.encoder = CharEncoder(config, spelling, rngs=rngs)
        f = self.encoder.features
        char_out = d_model if config.combine != "concat" else f
        self.char_projection = (
            nnx.Param(jax.random.normal(rngs.params(), (f, d_model)) * config.init_std)
            if config.combine != "concat"
            else None
        )  # [F,d]
        self.projection = (
            nnx.Param(
                jax.random.normal(rngs.params(), (word_dim + char_out, d_model)) / np.sqrt(word_dim + f)
            )
            if config.combine == "concat"
            else None
        )  # [Ew+F,d]
        self.gate = (
            nnx.Dict(v=nnx.Param(jnp.zeros((d_model,))), b=nnx.Param(jnp.zeros(())))
            if config.combine == "gate"
            else None
        )
        tied = config.tied if config.tied is not None else config.combine != "concat"
        self.readout = None if tied else nnx.Param(init(rngs.params(), (d_model, vocab_size), jnp.float32))
        self.rate = config.dropout

    def embed(self, tokens: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        vocab = self.table[...].shape[0]
        word = lookup(
            self.table[...], jnp.where(tokens >= vocab, UNK_WORD, tokens)
        )  # [B,T,Ew]; spelled: <unk>
        chars = self.encoder(tokens)  # [B,T,F]
        if self.combine == "concat":
            x = jnp.concatenate([word, chars], axis=-1) @ self.projection[...]
        else:
            c = chars @ self.char_projection[...]  # [B,T,d]
            if self.combine == "sum":
                x = word + c
            else:
                g = jax.nn.sigmoid(word @ self.gate["v"][...] + self.gate["b"][...])[..., None]  # [B,T,1]
                x = (1.0 - g) * word + g * c
        return dropout(x, self.rate, key)

    def unembed(self, x: jax.Array) -> jax.Array:
        if self.readout is None:
            return jnp.einsum("btd,vd->btv", x, self.table[...].astype(x.dtype))
        return jnp.einsum("btd,dv->btv", x, self.readout[...].astype(x.dtype))
