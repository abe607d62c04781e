"""Typed, frozen experiment configuration.

A run is fully described by one `Config`. Choices with several options are `Spec`s: plain dicts
`{"name": ..., **kwargs}` resolved through a registry (`resolve_spec`) into the registered, frozen config
dataclass. `validate(config)` resolves every spec and checks every cross-field constraint *before* any JAX work,
so a typo fails in milliseconds with the field name and the valid choices.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from research.registry import Registry

Spec = dict  # {"name": <registered name or 'pkg.module:Attr'>, **kwargs}


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and what was expected."""


def _frozen(cls):
    return dataclasses.dataclass(frozen=True, kw_only=True)(cls)


@_frozen
class DataConfig:
    corpus: Spec = dataclasses.field(default_factory=lambda: {"name": "wiki-sample"})
    """Which text: `wiki-sample` (default, ships with gensim), `text` (path=file or folder), `wikitext` (path=folder)."""
    tokenizer: Spec = dataclasses.field(default_factory=lambda: {"name": "byte"})
    """How text becomes ids: `byte`, `char`, `word` (min_count=..., max_size=...), `bpe` or `unigram`
    (SentencePiece, vocab_size=...)."""
    seq_len: int = 128
    """Training sequence length in tokens; evaluation lengths are multiples of it."""
    batch_size: int = 32
    """Global batch size in sequences (split over all devices)."""
    train_docs: tuple[float, float] = (0.0, 1.0)
    """The part [start, end) of the corpus's train-split documents (as fractions of their number, in corpus order)
    that is this run's train split: the tokenizer is built on it and the model trains on it. E.g. (0.0, 0.5) keeps
    the other half for something else, such as training word vectors (scripts/train_vectors.py
    `wiki-sample:0.5-1.0`)."""
    train_fraction: float = 1.0
    """Train on the first fraction of the train split's tokens only; the tokenizer is still built on the whole
    train split (same vocabulary for every fraction), e.g. for data-size ablations."""
    max_eval_bytes: int | None = None
    """Cap on the UTF-8 bytes of the valid/test splits used (cut at a document boundary); None = whole split."""


@_frozen
class PretrainedConfig:
    """Initialise the embedding table from pretrained word vectors (research/embedding/pretrained.py)."""

    path: str | None = None
    """A word2vec text/binary, GloVe or fastText .vec/.bin file, or a recipe `train:ALGO:CORPUS[,key=value...]`
    (research/vectors.py: vectors trained with gensim once, cached, e.g.
    `train:word2vec:wiki-sample:0.5-1.0,dim=128`); None = the design's random initialisation."""
    format: str | None = None
    """word2vec-text, word2vec-binary, glove, fasttext-vec or fasttext-bin; None = detect from the file."""
    limit: int | None = None
    """Read only the first N vectors (files are usually sorted by frequency)."""
    unmatched: str = "random"
    """Rows of tokens with no vector: 'random' (normal, at the pretrained vectors' scale), 'zeros' or 'mean'."""
    rescale: bool = False
    """Scale the aligned rows so that their entries' standard deviation equals model.embedding.init_std (the random
    initialisation's scale), keeping the directions; False keeps the file's values."""
    casefold: bool = True
    """Match a token case-insensitively when its exact form has no vector."""
    subwords: bool = True
    """fastText .bin: compose vectors of unmatched tokens from their character n-grams."""
    projection: bool = True
    """Vectors narrower or wider than d_model: learn a projection to d_model (the `table` design becomes
    `factorized` with embed_dim = the vectors' dimension); False makes a dimension mismatch an error."""
    mode: str = "finetune"
    """'finetune' (train the table with the rest), 'frozen' (never update it), or 'frozen_then_finetune'
    (frozen for freeze_steps steps, then trained); through optax.multi_transform. A tied readout shares the
    table, so freezing the table freezes it too."""
    freeze_steps: int = 0
    """Steps the table stays frozen with mode='frozen_then_finetune'."""
    encoding: str = "utf-8"
    """Encoding of the words in the file."""
    errors: str = "strict"
    """What to do with words that do not decode: 'strict' (error naming the line), 'replace' or 'ignore'."""


@_frozen
class ModelConfig:
    d_model: int = 128
    """Residual-stream width E."""
    num_layers: int = 4
    num_heads: int = 4
    """Attention heads H; head_dim D = d_model / num_heads."""
    mlp_ratio: int = 4
    """MLP hidden width = mlp_ratio * d_model."""
    positional: Spec = dataclasses.field(default_factory=lambda: {"name": "rope"})
    """Positional encoding scheme (research/positional/)."""
    positions: Spec = dataclasses.field(default_factory=lambda: {"name": "contiguous"})
    """How position ids are drawn at training time (research/positional/positions.py)."""
    embedding: Spec = dataclasses.field(default_factory=lambda: {"name": "table"})
    """Token-embedding design (research/embedding/)."""
    scan_layers: bool = False
    """Stack the layers' parameters on a leading axis and run them with nnx.scan: one layer is compiled whatever
    the depth (compile time flat in num_layers). Same function as the loop (tested); the parameters are initialised
    from other random streams, so a scanned run does not reproduce a looped one bit for bit. Not for `per_layer`."""
    pretrained: PretrainedConfig = dataclasses.field(default_factory=PretrainedConfig)
    """Pretrained vectors for the embedding table (designs `table`, `factorized`)."""


@_frozen
class TrainConfig:
    steps: int = 1000
    learning_rate: float = 3e-3
    """Peak AdamW learning rate, reached after warmup_steps, then cosine decay."""
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    grad_clip: float = 1.0
    """Global-norm gradient clipping threshold."""
    log_every: int = 50
    eval_every: int = 250
    """Validation every this many steps (and at the end); 0 disables periodic validation."""
    checkpoint_every: int = 250
    """Orbax checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 2
    model_axis: int = 1
    """Devices per model-parallel group: the embedding table and readout are sharded over the vocabulary across
    them (for vocabularies of 256k and more); the device count must be a multiple. 1 = pure data parallelism."""
    compute_dtype: str = "float32"
    """Mixed precision: 'bfloat16' runs the training forward and backward pass in bfloat16 from float32 master
    parameters (cast inside the step; optimizer state and updates stay float32). Evaluation runs in float32."""
    loss_chunk: int = 1024
    """> 0: the training loss walks the B*T targets in chunks of this many tokens and computes each chunk's readout
    gradients in the same pass, never holding the [B,T,V] logits (research/loss.py); same value up to summation
    order, faster and smaller. 0 = the plain loss on the full logits (the default before 2026-11-29: configs saved
    without this field read back as 0, see LEGACY_DEFAULTS)."""
    init_from: str | None = None
    """A finished run directory whose final parameters start this run (optimizer state starts fresh): fine-tuning.
    A relative path names a run in the same study folder as this run (e.g. "stage=base"), so a sweep can chain its
    own runs; the sweep starts such a run only after that one has finished. With init_from, steps may be 0
    (evaluate the loaded parameters only)."""


@_frozen
class EvalConfig:
    length_multipliers: tuple[int, ...] = (1, 2, 4, 8)
    """Final test evaluation at these multiples of data.seq_len (the extrapolation curve)."""
    lengths: tuple[int, ...] | None = None
    """Final test evaluation at these absolute lengths instead of the multiples (e.g. a model fine-tuned at 256
    evaluated from 64 up)."""
    batch_size: int = 8
    """Windows per evaluation batch."""
    frequency_buckets: tuple[int, ...] | None = None
    """Also report the test loss at the training length by how often the target token occurs in the train split:
    edges e1 < e2 < ... give buckets `oov` (the tokenizer's <unk>), `1-e1`, `e1+1-e2`, ..., `>ek` (and `0` for
    in-vocabulary ids never seen in training). E.g. [10, 100, 1000]."""
    valid_max_windows: int = 64
    """Windows of seq_len used by periodic validation (0 = whole split)."""
    positional: Spec | None = None
    """Positional encoding for the final test evaluation only (None = the trained one), run with the trained
    parameters, e.g. `rope:scaling=...` on a model trained with plain `rope`; its parameters must match."""


@_frozen
class TaskConfig:
    """A synthetic length-generalisation task instead of a text corpus (research/data/tasks.py, research/train_task.py).

    Training input lengths n are drawn uniformly from [1, train_max_length] (one n per batch, as Ruoss et al. 2023);
    evaluation covers every n in [1, eval_max_length]. Examples are right-padded to one shape, so a run compiles
    one training step and one evaluation step. data.corpus, data.tokenizer and data.seq_len are unused then.
    """

    task: Spec | None = None
    """Task name and options, e.g. {"name": "reverse_string", "symbols": 2}; None = train on data.corpus."""
    train_max_length: int = 16
    """N: the longest input length seen in training."""
    eval_max_length: int = 64
    """M: accuracy is reported for every input length 1..M."""
    eval_examples: int = 128
    """Test examples per input length (a fixed set, the same for every run)."""


@_frozen
class Config:
    seed: int = 0
    """Seeds parameters and the data order."""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)


# ----------------------------------------------------------------------------------------------- specs


def parse_spec(value: str | dict) -> Spec:
    """`rope`, `rope:base=500,interleaved=true` or a JSON object -> Spec dict."""
    if isinstance(value, dict):
        return dict(value)
    value = value.strip()
    if value.startswith("{"):
        spec = json.loads(value)
        if "name" not in spec:
            raise ConfigError(f"spec {value!r} has no 'name'")
        return spec
    name, _, rest = value.partition(":") if not _looks_like_import_path(value) else (value, "", "")
    if _looks_like_import_path(value) and "@" in value:  # pkg.mod:Attr@k=v
        name, _, rest = value.partition("@")
    spec: dict[str, Any] = {"name": name}
    for item in filter(None, rest.split(",")):
        key, eq, raw = item.partition("=")
        if not eq:
            raise ConfigError(f"spec {value!r}: expected key=value, got {item!r}")
        spec[key.strip()] = parse_scalar(raw.strip())
    return spec


def _looks_like_import_path(value: str) -> bool:
    head, sep, tail = value.partition(":")
    return bool(sep) and "." in head and "=" not in head and tail[:1].isupper()


def parse_scalar(raw: str) -> Any:
    """Command-line literal -> int / float / bool / None / list (JSON) / str."""
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def resolve_spec(registry: Registry, spec: Spec | str, *, field: str) -> Any:
    """Spec -> instance of the registered frozen config class; unknown names or keys raise ConfigError."""
    spec = parse_spec(spec)
    if "name" not in spec:
        raise ConfigError(f"{field}: a spec needs a 'name'; valid choices: {', '.join(registry.names())}")
    try:
        cls = registry.get(spec["name"], field=field)
    except KeyError as e:
        raise ConfigError(str(e)) from None
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    valid = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(
            f"{field}: {spec['name']!r} has no option(s) {unknown}; valid options: {sorted(valid) or 'none'}"
        )
    kwargs = {k: _coerce(v, valid[k].type, f"{field}.{k}", cls) for k, v in kwargs.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{field}: {e}") from None


def _coerce(value, annotation, field: str, owner=None):
    """Light type check and conversion for values coming from JSON or the command line."""
    if isinstance(annotation, str):
        hints = typing.get_type_hints(owner) if owner is not None else {}
        annotation = hints.get(field.rsplit(".", 1)[-1], Any)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any or annotation is dict:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, field)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{field}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{field}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, field) for v in value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{field}: expected one of {list(args)}, got {value!r}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{field}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{field}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{field}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{field}: expected a string, got {value!r}")
        return value
    return value


# ------------------------------------------------------------------------------------- (de)serialising


def to_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


LEGACY_DEFAULTS = {"train.loss_chunk": 0}
"""Fields whose default changed after configs had been saved without them (the field did not exist yet): a saved
config that lacks one had the old behaviour, so `from_dict` reads it back with this value, not today's default.
A saved run then still means what it meant (sweep --reuse, resumed runs, reports)."""


def from_dict(cls, data: dict, *, prefix: str = ""):
    """Nested dict (e.g. config.json) -> frozen dataclass, with field names checked; a missing field takes its
    default, or its LEGACY_DEFAULTS value."""
    hints = typing.get_type_hints(cls)
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise ConfigError(f"{prefix or cls.__name__}: unknown field(s) {unknown}; valid: {sorted(valid)}")
    kwargs = {
        key: value
        for key, value in (
            (path.removeprefix(prefix), v) for path, v in LEGACY_DEFAULTS.items() if path.startswith(prefix)
        )
        if "." not in key and key in valid and key not in data
    }
    for key, value in data.items():
        hint = hints[key]
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value, prefix=name + ".")
        elif hint is Spec or typing.get_origin(hint) is dict:
            kwargs[key] = parse_spec(value)
        else:
            kwargs[key] = _coerce(value, hint, name)
    return cls(**kwargs)


def differences(a, b, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves where two configs (or their to_dict forms) differ."""
    a, b = (to_dict(x) if dataclasses.is_dataclass(x) else x for x in (a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def replace_path(config, path: str, value, *, _prefix: str = ""):
    """Functional update of a dotted field: replace_path(cfg, "train.steps", 10)."""
    head, _, rest = path.partition(".")
    fields = {f.name: f for f in dataclasses.fields(config)}
    if head not in fields:
        raise ConfigError(f"unknown config field {_prefix + path!r}; valid: {sorted(fields)}")
    if rest:
        inner = replace_path(getattr(config, head), rest, value, _prefix=f"{_prefix}{head}.")
        return dataclasses.replace(config, **{head: inner})
    hint = typing.get_type_hints(type(config))[head]
    if hint is Spec or typing.get_origin(hint) is dict:
        value = parse_spec(value)
    else:
        value = _coerce(value, hint, _prefix + path)
    return dataclasses.replace(config, **{head: value})


def leaf_fields(cls, prefix: str = ""):
    """(dotted path, type, docstring) for every leaf field, for --help and override parsing."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from leaf_fields(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hint, docs.get(f.name, "")


def field_docs(cls) -> dict[str, str]:
    """Attribute docstrings (the string literal under a field) of a dataclass."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def init_source(init_from: str, workdir: str | Path) -> Path:
    """train.init_from as a directory: absolute as given; relative = next to this run's workdir (same study)."""
    path = Path(init_from)
    return path if path.is_absolute() else Path(workdir).absolute().parent / path
