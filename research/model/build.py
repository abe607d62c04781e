"""From a model config to a model: resolve every spec before compiling, then build.

    resolve_model(ModelConfig, max_len=, vocab_size=) -> ResolvedModel   every spec resolved and checked against the
                                                                         model's shapes (ConfigError naming the field)
    build_model(resolved, vocab_size=, seed=, pieces=, unk_id=) -> Transformer
    resolve_swapped / swapped_graphdef                                   another positional scheme over the same
                                                                         parameters (eval.positional)
The training loop, the diagnostics and the benchmark all build their models here.
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from research.config import ConfigError, ModelConfig, resolve_spec
from research.embedding import EMBEDDINGS
from research.embedding.factorized import FactorizedConfig
from research.embedding.table import TableConfig
from research.model.transformer import Transformer
from research.positional import POSITIONAL, POSITIONS, Dims
from research.positional.positions import check_compatible
from research.vectors.read import vector_dim
from research.vectors.train import is_recipe, parse_recipe


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """ModelConfig with every spec resolved to its registered config object."""

    config: ModelConfig
    dims: Dims
    positional: object
    positions: object
    embedding: object


def resolve_model(config: ModelConfig, *, max_len: int, vocab_size: int | None = None) -> ResolvedModel:
    """Resolve and validate the model config (the section's own checks, then every spec against its registry and
    the model's shapes); raises ConfigError before any compilation."""
    config.validate("model")
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


def resolve_pretrained(p, embedding, d_model: int):
    """The embedding design to build for model.pretrained (reads only the vector file's header): with vectors of
    another width than a `table`'s d_model and projection=True, a `factorized` design whose table has the vectors'
    width (the learned projection)."""
    if p.path is None:
        return embedding
    if not isinstance(embedding, TableConfig | FactorizedConfig):
        raise ConfigError(
            f"model.pretrained: initialises the table of the `table` and `factorized` designs, not "
            f"{type(embedding).__name__}"
        )
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


def build_model(resolved: ResolvedModel, *, vocab_size: int, seed: int, pieces=None, unk_id: int = 0):
    """The Transformer of a resolved config, initialised from `seed`. `pieces` (the tokenizer's string per input id)
    only for designs that spell tokens; others never see it."""
    pieces = pieces if resolved.embedding.needs_pieces else None
    return Transformer(resolved, vocab_size=vocab_size, rngs=nnx.Rngs(seed), pieces=pieces, unk_id=unk_id)


def resolve_swapped(resolved: ResolvedModel, positional, *, vocab_size: int | None = None, field: str):
    """`resolved` with the positional spec `positional` in place of its own (eval.positional); ConfigError naming
    `field` for a spec that does not resolve."""
    config = dataclasses.replace(resolved.config, positional=positional)
    try:
        return resolve_model(config, max_len=resolved.dims.max_len, vocab_size=vocab_size)
    except ConfigError as e:
        raise ConfigError(str(e).replace("model.positional", field, 1)) from None


def swapped_graphdef(
    resolved: ResolvedModel, positional, params, *, vocab_size: int, pieces=None, field: str
):
    """Graph of the model with the positional spec `positional` in place of the trained one, checked to take
    exactly `params`: only parameter-free changes (e.g. RoPE scaling) can be swapped in. ConfigError naming
    `field` otherwise."""
    swapped = resolve_swapped(resolved, positional, vocab_size=vocab_size, field=field)
    pieces = pieces if swapped.embedding.needs_pieces else None
    abstract = nnx.eval_shape(
        lambda: Transformer(swapped, vocab_size=vocab_size, rngs=nnx.Rngs(0), pieces=pieces)
    )
    graphdef, swapped_params = nnx.split(abstract)
    shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)  # noqa: E731
    if jax.tree.structure(swapped_params) != jax.tree.structure(params) or shapes(swapped_params) != shapes(
        params
    ):
        raise ConfigError(
            f"{field}={positional} needs parameters that differ from the trained "
            f"model.positional={resolved.config.positional}; only parameter-free changes (e.g. RoPE scaling) can be "
            "swapped in at evaluation"
        )
    return graphdef
