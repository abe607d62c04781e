"""Decoder-only pre-norm transformer (GPT-2 layout with RMSNorm), the one place positional hooks are called.

tokens[B,T] ─► embedding.embed ─► positional.embed ─► L × [x + attn(norm x; rotate, bias), x + mlp(norm x)]
           ─► norm ─► embedding.unembed ─► logits[B,T,V]
Positions pos[B,T] (or [1,T], shared by every row) are data, given by the caller (the position sampler), and passed
to every hook.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from research.config import ModelConfig
from research.model.attention import CausalSelfAttention
from research.model.layers import MLP, RMSNorm


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
    def __init__(self, resolved, *, vocab_size: int, rngs: nnx.Rngs, pieces=None, unk_id: int = 0):
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
        (the fused training loss, research/training/loss.py, reads them out chunk by chunk)."""
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
