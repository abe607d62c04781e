"""Typed, frozen experiment configuration: one `Config` describes a run completely.

Sections (`data`, `model`, `train`, `eval`, `task`) are frozen dataclasses. Each validates itself (`validate`: every
field's type, fixed choices as `Literal`s, ranges and constraints between its own fields) and `Config.validate()`
validates them all. Choices with several options are `Spec`s (research/specs.py), resolved through registries by
the code that owns them. The whole check of a run, sections plus what its objective resolves (corpus, tokenizer or
task, model, positional scheme), is `research.training.objective.validate(config)`: it runs before any data is read
or anything compiles, so a typo fails in milliseconds with the field name and the valid choices.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import typing
from pathlib import Path
from typing import Literal

from research.specs import (
    ConfigError,
    Spec,
    coerce,
    is_spec_type,
    parse_scalar,
    parse_spec,
    resolve_spec,
    spec_value,
)

__all__ = [
    "Config", "ConfigError", "DataConfig", "EvalConfig", "ModelConfig", "PretrainedConfig", "Spec", "TaskConfig",
    "TrainConfig", "parse_scalar", "parse_spec", "resolve_spec",
]  # fmt: skip

VectorFormat = Literal["word2vec-text", "word2vec-binary", "glove", "fasttext-vec", "fasttext-bin"]
ComputeDtype = Literal["float32", "bfloat16"]


def _frozen(cls):
    return dataclasses.dataclass(frozen=True, kw_only=True)(cls)


class Section:
    """A config section: `validate(prefix)` checks every field's type (and `Literal` choices), then `check`, the
    section's own constraints, then every nested section. Errors are ConfigError naming `prefix.field`."""

    def validate(self, prefix: str = "") -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value, name = getattr(self, f.name), _join(prefix, f.name)
            if isinstance(value, Section):
                continue
            if is_spec_type(hints[f.name]):
                if value is not None and not isinstance(value, str | dict):
                    raise ConfigError(
                        f"{name}: expected a spec ('name' or 'name:key=value,...'), got {value!r}"
                    )
            else:
                coerce(value, hints[f.name], name)
        self.check(prefix)
        for f in dataclasses.fields(self):
            if isinstance(value := getattr(self, f.name), Section):
                value.validate(_join(prefix, f.name))

    def check(self, prefix: str) -> None:
        """Constraints between this section's fields; raise ConfigError naming the field."""


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _positive(section, prefix: str, *names: str) -> None:
    for name in names:
        if getattr(section, name) <= 0:
            raise ConfigError(f"{prefix}.{name}: expected a positive integer, got {getattr(section, name)}")


@_frozen
class DataConfig(Section):
    corpus: Spec = dataclasses.field(default_factory=lambda: {"name": "wiki-sample"})
    """Which text: `wiki-sample` (default, ships with gensim), `text` (path=file or folder, read whole),
    `wikitext` (path=folder), `files` (path=file, folder or glob of any size, streamed; .gz/.bz2/.xz/.zst)."""
    tokenizer: Spec = dataclasses.field(default_factory=lambda: {"name": "byte"})
    """How text becomes ids: `byte`, `char`, `word` (min_count=..., max_size=...), `bpe` or `unigram`
    (SentencePiece trained here, vocab_size=...), or pretrained: `sentencepiece:model_file=PATH`, `hf:path=PATH`
    (a Hugging Face tokenizer.json)."""
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
    """Train on a contiguous fraction of the train split's tokens only (from `train_fraction_start`); the tokenizer
    is still built on the whole train split (same vocabulary for every fraction), e.g. for data-size ablations."""
    train_fraction_start: float = 0.0
    """Where that fraction starts, as a fraction of the train tokens (start + fraction <= 1): a different slice per
    seed, so that a data-size result is not one slice's."""
    max_eval_bytes: int | None = None
    """Cap on the UTF-8 bytes of the valid/test splits scored: whole documents sampled across the split (by a hash
    of their content, so the same documents for every run), reported with their number; None = the whole split."""

    def check(self, prefix: str) -> None:
        _positive(self, prefix, "seq_len", "batch_size")
        a, b = self.train_docs
        if not 0.0 <= a < b <= 1.0:
            raise ConfigError(f"{prefix}.train_docs: expected 0 <= start < end <= 1, got {self.train_docs}")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ConfigError(
                f"{prefix}.train_fraction: expected 0 < fraction <= 1, got {self.train_fraction}"
            )
        if not 0.0 <= self.train_fraction_start <= 1.0 - self.train_fraction + 1e-9:
            raise ConfigError(
                f"{prefix}.train_fraction_start: expected 0 <= start <= 1 - train_fraction "
                f"({1.0 - self.train_fraction:g}), got {self.train_fraction_start}"
            )
        if self.max_eval_bytes is not None and self.max_eval_bytes <= 0:
            raise ConfigError(f"{prefix}.max_eval_bytes: expected None or > 0, got {self.max_eval_bytes}")


@_frozen
class PretrainedConfig(Section):
    """Initialise the embedding table from pretrained word vectors (research/vectors/)."""

    path: str | None = None
    """A word2vec text/binary, GloVe or fastText .vec/.bin file, or a recipe `train:ALGO:CORPUS[,key=value...]`
    (research/vectors/train.py: vectors trained with gensim once, cached, e.g.
    `train:word2vec:wiki-sample:0.5-1.0,dim=128`); None = the design's random initialisation."""
    format: VectorFormat | None = None
    """The file's format; None = detect it from the file."""
    limit: int | None = None
    """Read only the first N vectors (files are usually sorted by frequency)."""
    unmatched: Literal["random", "zeros", "mean"] = "random"
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
    mode: Literal["finetune", "frozen", "frozen_then_finetune"] = "finetune"
    """'finetune' (train the table with the rest), 'frozen' (never update it), or 'frozen_then_finetune'
    (frozen for freeze_steps steps, then trained); through optax.multi_transform. A tied readout shares the
    table, so freezing the table freezes it too. Without `path` the design's random table is frozen: the control
    for pretrained vectors (does a frozen table help by itself, as a regulariser?)."""
    freeze_steps: int = 0
    """Steps the table stays frozen with mode='frozen_then_finetune'."""
    encoding: str = "utf-8"
    """Encoding of the words in the file."""
    errors: Literal["strict", "replace", "ignore"] = "strict"
    """What to do with words that do not decode: 'strict' (error naming the line), 'replace' or 'ignore'."""

    def check(self, prefix: str) -> None:
        if self.freeze_steps < 0 or (self.freeze_steps and self.mode != "frozen_then_finetune"):
            raise ConfigError(
                f"{prefix}.freeze_steps: expected >= 0, and > 0 only with mode='frozen_then_finetune', got "
                f"{self.freeze_steps} with mode={self.mode!r}"
            )
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{prefix}.limit: expected a positive integer or None, got {self.limit}")


@_frozen
class ModelConfig(Section):
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

    def check(self, prefix: str) -> None:
        _positive(self, prefix, "d_model", "num_layers", "num_heads", "mlp_ratio")
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"{prefix}.d_model: expected a multiple of {prefix}.num_heads={self.num_heads}, got {self.d_model}"
            )


@_frozen
class TrainConfig(Section):
    steps: int = 1000
    """Optimizer steps; 0 (with init_from) evaluates the loaded parameters only."""
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
    compute_dtype: ComputeDtype = "float32"
    """Mixed precision: 'bfloat16' runs the training forward and backward pass in bfloat16 from float32 master
    parameters (cast inside the step; optimizer state and updates stay float32). Evaluation runs in float32."""
    loss_chunk: int = 1024
    """> 0: the training loss walks the B*T targets in chunks of this many tokens and computes each chunk's readout
    gradients in the same pass, never holding the [B,T,V] logits (research/training/loss.py); same value up to
    summation order, faster and smaller. 0 = the plain loss on the full logits (configs saved before this field
    existed read back as 0: LEGACY_DEFAULTS)."""
    final_params: Literal["last", "best_valid"] = "last"
    """Which parameters the final evaluation scores: the last step's, or 'best_valid': those of the periodic
    validation with the best valid loss (early stopping as model selection; saved in <run>/best/, the chosen step
    in summary.json's `selected`; research/training/select.py). Needs eval_every > 0."""
    stop_when: str | None = None
    """Stop training at the first periodic validation that meets 'METRIC>=VALUE' or 'METRIC<=VALUE' (a metric of
    the objective's validation, e.g. 'valid/in_dist/free_sequence_accuracy>=0.9': train until the in-distribution gate
    passes, up to train.steps); the learning-rate schedule stays the one of train.steps. summary.json records
    `stopped_at`. Needs eval_every > 0."""
    init_from: str | None = None
    """A finished run directory whose final parameters start this run (optimizer state starts fresh): fine-tuning.
    A relative path names a run in the same study folder as this run (e.g. "stage=base"), so a sweep can chain its
    own runs; the sweep starts such a run only after that one has finished. With init_from, steps may be 0
    (evaluate the loaded parameters only)."""
    tensorboard: bool = True
    """Also write every metrics.jsonl record as TensorBoard scalars in <run>/tensorboard/ (`tensorboard --logdir
    runs/<study>` shows a sweep's runs side by side; the viewer: pip install -e .[tensorboard])."""
    wandb: str | None = None
    """A Weights & Biases project to also send every metrics.jsonl record (and the config) to, with the W&B files
    in <run>/wandb/; None = off. Needs the `wandb` package (pip install -e .[wandb])."""
    wandb_mode: Literal["offline", "online"] = "offline"
    """With train.wandb: 'offline' keeps the W&B run on disk only (no network; `wandb sync <run>/wandb/...`
    uploads it later), 'online' streams it to the W&B server."""

    def check(self, prefix: str) -> None:
        if self.steps < 0 or (self.steps == 0 and self.init_from is None):
            raise ConfigError(
                f"{prefix}.steps: expected a positive integer (or 0 with {prefix}.init_from: evaluation only), "
                f"got {self.steps}"
            )
        if not self.learning_rate > 0:
            raise ConfigError(f"{prefix}.learning_rate: expected > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ConfigError(
                f"{prefix}.warmup_steps: expected 0..{prefix}.steps={self.steps}, got {self.warmup_steps}"
            )
        for name, low, high in (("min_lr_ratio", 0, 1), ("b1", 0, 1), ("b2", 0, 1)):
            if not low <= getattr(self, name) <= high:
                raise ConfigError(f"{prefix}.{name}: expected {low}..{high}, got {getattr(self, name)}")
        if self.weight_decay < 0 or not self.grad_clip > 0:
            raise ConfigError(
                f"{prefix}.weight_decay / grad_clip: expected >= 0 and > 0, got {self.weight_decay}, {self.grad_clip}"
            )
        _positive(self, prefix, "log_every", "checkpoint_every", "keep_checkpoints", "model_axis")
        if self.eval_every < 0:
            raise ConfigError(
                f"{prefix}.eval_every: expected >= 0 (0 = no periodic validation), got {self.eval_every}"
            )
        if self.stop_when is not None:
            if stop_rule(self.stop_when) is None:
                raise ConfigError(
                    f"{prefix}.stop_when: expected 'METRIC>=VALUE' or 'METRIC<=VALUE' with a valid/... metric, e.g. "
                    f"'valid/in_dist/token_accuracy>=0.9'; got {self.stop_when!r}"
                )
            if not self.eval_every:
                raise ConfigError(
                    f"{prefix}.stop_when: needs periodic validation; expected {prefix}.eval_every > 0"
                )
        if self.final_params == "best_valid" and not self.eval_every:
            raise ConfigError(
                f"{prefix}.final_params: 'best_valid' selects among periodic validations; expected "
                f"{prefix}.eval_every > 0, got 0"
            )
        if self.loss_chunk < 0:
            raise ConfigError(
                f"{prefix}.loss_chunk: expected 0 (plain loss) or a positive chunk size, got {self.loss_chunk}"
            )
        if self.wandb is not None and importlib.util.find_spec("wandb") is None:
            raise ConfigError(
                f"{prefix}.wandb: the Weights & Biases writer needs the wandb package: pip install -e .[wandb] "
                f"(or {prefix}.wandb=None)"
            )


@_frozen
class EvalConfig(Section):
    length_multipliers: tuple[int, ...] = (1, 2, 4, 8)
    """Final test evaluation at these multiples of data.seq_len (the extrapolation curve)."""
    lengths: tuple[int, ...] | None = None
    """Final test evaluation at these absolute lengths instead of the multiples (e.g. a model fine-tuned at 256
    evaluated from 64 up)."""
    batch_size: int = 8
    """Windows per evaluation batch."""
    stride: int | None = None
    """Final test evaluation with sliding windows `stride` tokens apart: each window scores only its last `stride`
    targets (the first window all of them), so every target is still predicted once, with at least length - stride
    tokens of context. None = each window's own length: non-overlapping windows. At lengths <= stride the windows
    do not overlap either."""
    frequency_buckets: tuple[int, ...] | None = None
    """Also report the test loss at the training length by how often the target token occurs in the train split
    (`loss_bucket/...`), and by how often the input token just read occurs (`loss_after/...`: the prediction after a
    rare or unknown word): edges e1 < e2 < ... give buckets `oov` (the tokenizer's <unk>, and words outside the
    vocabulary that a char-aware design reads), `1-e1`, `e1+1-e2`, ..., `>ek` (and `0` for in-vocabulary ids never
    seen in training). E.g. [10, 100, 1000]."""
    valid_max_windows: int = 64
    """Windows of seq_len used by periodic validation (0 = whole split)."""
    positional: Spec | None = None
    """Positional encoding for the final test evaluation only (None = the trained one), run with the trained
    parameters, e.g. `rope:scaling=...` on a model trained with plain `rope`; its parameters must match."""

    def check(self, prefix: str) -> None:
        if not self.length_multipliers or min(self.length_multipliers) <= 0:
            raise ConfigError(f"{prefix}.length_multipliers: expected positive integers, e.g. [1, 2, 4, 8]")
        if self.lengths is not None and (not self.lengths or min(self.lengths) <= 0):
            raise ConfigError(f"{prefix}.lengths: expected positive integers, e.g. [64, 128, 256], or None")
        buckets = self.frequency_buckets
        if buckets is not None and (not buckets or min(buckets) < 1 or list(buckets) != sorted(set(buckets))):
            raise ConfigError(
                f"{prefix}.frequency_buckets: expected increasing positive edges, e.g. [10, 100], got {buckets}"
            )
        _positive(self, prefix, "batch_size")
        if self.stride is not None and self.stride <= 0:
            raise ConfigError(
                f"{prefix}.stride: expected a positive number of tokens or None, got {self.stride}"
            )
        if self.valid_max_windows < 0:
            raise ConfigError(
                f"{prefix}.valid_max_windows: expected >= 0 (0 = whole split), got {self.valid_max_windows}"
            )


@_frozen
class TaskConfig(Section):
    """A synthetic length-generalisation task instead of a text corpus (research/data/tasks.py,
    research/training/task.py).

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

    def check(self, prefix: str) -> None:
        _positive(self, prefix, "train_max_length", "eval_examples")
        if self.eval_max_length < self.train_max_length:
            raise ConfigError(
                f"{prefix}.eval_max_length: expected >= {prefix}.train_max_length={self.train_max_length}, "
                f"got {self.eval_max_length}"
            )


@_frozen
class Config(Section):
    seed: int = 0
    """Seeds parameters and the data order."""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)

    def check(self, prefix: str) -> None:
        if self.seed < 0:
            raise ConfigError(f"seed: expected a non-negative integer, got {self.seed}")


# ------------------------------------------------------------------------------------- (de)serialising


def to_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def stop_rule(text: str) -> tuple[str, str, float] | None:
    """'valid/x>=0.9' -> ('valid/x', '>=', 0.9); None when malformed."""
    m = re.fullmatch(r"\s*(valid/[\w/.-]+)\s*(>=|<=)\s*([-+0-9.eE]+)\s*", text)
    if m is None:
        return None
    try:
        return m.group(1), m.group(2), float(m.group(3))
    except ValueError:
        return None


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
        elif is_spec_type(hint):
            kwargs[key] = spec_value(value)
        else:
            kwargs[key] = coerce(value, hint, name)
    return cls(**kwargs)


TRACKING_FIELDS = frozenset({"train.tensorboard", "train.wandb", "train.wandb_mode"})
"""Fields that change where a run's records go, never its results: a rerun or --reuse may differ in them."""


def result_differences(a, b) -> list[str]:
    """`differences` that can change a run's results (TRACKING_FIELDS left out)."""
    return [d for d in differences(a, b) if d not in TRACKING_FIELDS]


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
    if is_spec_type(hint):
        value = spec_value(value)
    else:
        value = coerce(value, hint, _prefix + path)
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
