"""Decoder-only pre-norm transformer (GPT-2 layout with RMSNorm), the one place positional hooks are called.

tokens[B,T] ─► embedding.embed ─► positional.embed ─► L × [x + attn(norm x; rotate, bias), x + mlp(norm x)]
           ─► norm ─► embedding.unembed ─► logits[B,T,V]
Positions pos[B,T] (or [1,T], shared by every row) are data, given by the caller (the position sampler), and passed
to every hook.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from research.config import ConfigError, ModelConfig, resolve_spec
from research.embedding import EMBEDDINGS
from research.model.attention import CausalSelfAttention
from research.model.layers import MLP, RMSNorm
from research.positional import POSITIONAL, POSITIONS, Dims
from research.positional.positions import check_compatible


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """ModelConfig with every spec resolved to its registered config object."""

    config: ModelConfig
    dims: Dims
    positional: object
    positions: object
    embedding: object


def resolve_model(config: ModelConfig, *, max_len: int, vocab_size: int | None = None) -> ResolvedModel:
    """Resolve and validate the model config; raises ConfigError before any compilation."""
    if config.d_model <= 0 or config.num_heads <= 0 or config.num_layers <= 0:
        raise ConfigError("model: d_model, num_heads and num_layers must be positive")
    if config.d_model % config.num_heads:
        raise ConfigError(
            f"model.d_model: expected a multiple of model.num_heads={config.num_heads}, got {config.d_model}"
        )
    dims = Dims(
        d_model=config.d_model,
        num_heads=config.num_heads,
        head_dim=config.d_model // config.num_heads,
        num_layers=config.num_layers,
        max_len=max_len,
    )
    positional = resolve_spec(POSITIONAL, config.positional, field="model.positional")
    positions = resolve_spec(POSITIONS, config.positions, field="model.positions")
    embedding = resolve_spec(EMBEDDINGS, config.embedding, field="model.embedding")
    try:
        positions.validate(max_len)
        check_compatible(positional, positions, dims)
    except ValueError as e:
        raise ConfigError(f"model.positions: {e}") from None
    try:
        positional.validate(dims)
        if vocab_size is not None:
            embedding.validate(vocab_size=vocab_size, d_model=config.d_model)
    except ValueError as e:
        raise ConfigError(str(e) if str(e).startswith("model.") else f"model.positional: {e}") from None
    embedding = resolve_pretrained(config.pretrained, embedding, config.d_model)
    if config.scan_layers and getattr(positional, "pattern", None) is not None:
        raise ConfigError(
            "model.scan_layers: per_layer schemes choose a scheme per layer in Python; use scan_layers=false"
        )
    return ResolvedModel(config, dims, positional, positions, embedding)


PRETRAINED_MODES = ("finetune", "frozen", "frozen_then_finetune")


def resolve_pretrained(p, embedding, d_model: int):
    """Check model.pretrained (reads only the vector file's header) and return the embedding design to build:
    with vectors of another width than a `table`'s d_model and projection=True, a `factorized` design whose table
    has the vectors' width (the learned projection)."""
    from research.embedding.factorized import FactorizedConfig
    from research.embedding.pretrained import FORMATS, UNMATCHED, vector_dim
    from research.embedding.table import TableConfig

    if p.path is None:
        if p.mode != "finetune" or p.freeze_steps:
            raise ConfigError(
                "model.pretrained.mode/freeze_steps: need model.pretrained.path (a vector file)"
            )
        return embedding
    if p.mode not in PRETRAINED_MODES:
        raise ConfigError(
            f"model.pretrained.mode: expected one of {', '.join(PRETRAINED_MODES)}, got {p.mode!r}"
        )
    if p.freeze_steps < 0 or (p.freeze_steps and p.mode != "frozen_then_finetune"):
        raise ConfigError(
            f"model.pretrained.freeze_steps: expected >= 0, and > 0 only with mode='frozen_then_finetune', got "
            f"{p.freeze_steps} with mode={p.mode!r}"
        )
    if p.format is not None and p.format not in FORMATS:
        raise ConfigError(
            f"model.pretrained.format: expected one of {', '.join(FORMATS)} or None, got {p.format!r}"
        )
    if p.unmatched not in UNMATCHED:
        raise ConfigError(
            f"model.pretrained.unmatched: expected one of {', '.join(UNMATCHED)}, got {p.unmatched!r}"
        )
    if p.errors not in ("strict", "replace", "ignore"):
        raise ConfigError(f"model.pretrained.errors: expected strict, replace or ignore, got {p.errors!r}")
    if p.limit is not None and p.limit < 1:
        raise ConfigError(f"model.pretrained.limit: expected a positive integer or None, got {p.limit}")
    if not isinstance(embedding, TableConfig | FactorizedConfig):
        raise ConfigError(
            f"model.pretrained: initialises the table of the `table` and `factorized` designs, not "
            f"{type(embedding).__name__}"
        )
    from research.vectors import is_recipe, parse_recipe

    try:
        dim = parse_recipe(p.path)["dim"] if is_recipe(p.path) else vector_dim(p.path, p.format)
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.pretrained.path: {e}") from None
    width = embedding.embed_dim if isinstance(embedding, FactorizedConfig) else d_model
    if dim == width:
        return embedding
    if isinstance(embedding, FactorizedConfig) or not p.projection:
        raise ConfigError(
            f"model.pretrained: the vectors in {p.path} have dimension {dim} but the table is {width} wide; "
            + (
                f"set model.embedding.embed_dim={dim}"
                if isinstance(embedding, FactorizedConfig)
                else f"set model.d_model={dim}, or model.pretrained.projection=true (learned {dim} -> {d_model})"
            )
        )
    options = {f.name: getattr(embedding, f.name) for f in dataclasses.fields(embedding) if f.init}
    return FactorizedConfig(**options, embed_dim=dim)


class Block(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        out_std = 0.02 / math.sqrt(2 * config.num_layers)  # GPT-2: residual projections scaled by depth
        self.attn_norm = RMSNorm(config.d_model)
        self.attn = CausalSelfAttention(config.d_model, config.num_heads, out_std=out_std, rngs=rngs)
        self.mlp_norm = RMSNorm(config.d_model)
        self.mlp = MLP(
            config.d_model,
            config.mlp_ratio * config.d_model,
            out_std=out_std,
            rngs=rngs,
            recompute_hidden=config.scan_layers,
        )


class Transformer(nnx.Module):
    def __init__(
        self, resolved: ResolvedModel, *, vocab_size: int, rngs: nnx.Rngs, pieces=None, unk_id: int = 0
    ):
        """`pieces`: the tokenizer's string per input id, for embedding designs that spell tokens (char_cnn,
        word_char); it may list more ids than `vocab_size` (out-of-vocabulary words spelled for the input side,
        word:spell_unknowns=true). Other designs see such ids as `unk_id`."""
        config = resolved.config
        self.vocab_size, self.unk_id = vocab_size, unk_id
        self.spells = resolved.embedding.needs_pieces
        self.embedding = resolved.embedding.build(
            vocab_size=vocab_size, d_model=config.d_model, rngs=rngs, pieces=pieces
        )
        self.positional = resolved.positional.build(resolved.dims, rngs=rngs)
        self.scan_layers = config.scan_layers
        self.num_layers = config.num_layers
        if config.scan_layers:  # one Block whose parameters have a leading [L] axis

            @nnx.split_rngs(splits=config.num_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def stacked(rngs):
                return Block(config, rngs=rngs)

            self.blocks = stacked(rngs)
        else:
            self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
        self.final_norm = RMSNorm(config.d_model)

    def __call__(
        self, tokens: jax.Array, pos: jax.Array, *, key: jax.Array | None = None, dtype=jnp.float32
    ) -> jax.Array:
        """tokens[B,T], pos[B,T] -> logits[B,T,V]; `key` (training only) drives the embedding's dropout."""
        return self.embedding.unembed(self.features(tokens, pos, key=key, dtype=dtype)).astype(jnp.float32)

    def features(
        self, tokens: jax.Array, pos: jax.Array, *, key: jax.Array | None = None, dtype=jnp.float32
    ) -> jax.Array:
        """tokens[B,T], pos[B,T] -> the final-normed hidden states [B,T,E] that `embedding.unembed` reads out
        (the fused training loss, research/loss.py, reads them out chunk by chunk)."""
        pe = self.positional
        if not self.spells:  # ids past the output vocabulary (spelled unknown words) are <unk> to a table
            tokens = jnp.where(tokens >= self.vocab_size, self.unk_id, tokens)
        x = self.embedding.embed(tokens, key=key).astype(dtype)  # [B,T,E]
        x = pe.embed(x, pos)
        shared = pe.bias(pos, pos, layer=0) if pe.shared_bias else None  # one bias for every layer, made once

        def layer_fn(x, block, layer, pe):
            x = x + block.attn(
                block.attn_norm(x),
                pos,
                rotate=functools.partial(pe.rotate, layer=layer),
                bias=shared if pe.shared_bias else functools.partial(pe.bias, layer=layer),
            )
            return x + block.mlp(block.mlp_norm(x))

        if self.scan_layers:  # the layer index is traced: per-layer parameters are read with a dynamic index
            scan = nnx.scan(layer_fn, in_axes=(nnx.Carry, 0, 0, None), out_axes=nnx.Carry)
            x = scan(x, self.blocks, jnp.arange(self.num_layers), pe)
        else:
            for layer, block in enumerate(self.blocks):
                x = layer_fn(x, block, layer, pe)
        return self.final_norm(x)  # [B,T,E]


def parameter_counts(model: Transformer) -> dict[str, int]:
    """Parameters split into embedding (the input side: tables, projections), readout (an untied output layer: the
    embedding module's `readout*` attributes), positional and the rest (the count nanoGPT reports)."""

    def count(module) -> int:
        return sum(int(x.size) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))

    total = count(model)
    readout = sum(
        count(value) if isinstance(value, nnx.Module) else int(value.size)
        for name, value in vars(model.embedding).items()
        if name.startswith("readout") and isinstance(value, (nnx.Module, nnx.Param))
    )
    embedding = count(model.embedding) - readout
    positional = count(model.positional)
    return {
        "total": total,
        "embedding": embedding,
        "readout": readout,
        "positional": positional,
        "rest": total - embedding - readout - positional,
    }
