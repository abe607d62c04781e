"""One run: `train_and_evaluate(config, workdir)`.

Validates the whole config before any JAX work, prepares data, builds the model, then trains with a functional,
jitted, donated step (AdamW, warmup + cosine decay, global-norm clipping) over a `data` mesh, with periodic
validation and Orbax checkpoints. Re-running on the same workdir resumes from the last checkpoint and, batches being a
pure function of (seed, step), ends with the same metrics as an uninterrupted run. `summary.json` is written last and
atomically: its presence means the run finished.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from research import hostmem, native
from research.checkpoint import Checkpointer
from research.config import Config, ConfigError, differences, from_dict, init_source, to_dict
from research.data.pipeline import prepare_data, validate_data_config
from research.data.stream import train_batch
from research.evaluate import (
    evaluate_buckets,
    evaluate_split,
    frequency_buckets,
    make_bucket_eval_step,
    make_eval_step,
)
from research.loss import fused_mean_nll, mean_nll
from research.metrics import MetricsWriter, atomic_write_json
from research.model.transformer import Transformer, parameter_counts, resolve_model
from research.parallel import check_batch, is_primary, make_mesh, shard_batch, shard_params, to_host


class TrainingDiverged(RuntimeError):
    """A non-finite loss; the last good checkpoint is kept."""


def validate(config: Config, *, vocab_size: int | None = None):
    """Every check that needs no data and no compilation; raises ConfigError naming the field."""
    if config.task.task is not None:  # a synthetic-task run (research/train_task.py)
        from research.train_task import validate as validate_task

        return validate_task(config)[1]
    validate_data_config(config.data)
    for field in ("seq_len", "batch_size"):
        if getattr(config.data, field) <= 0:
            raise ConfigError(f"data.{field}: expected a positive integer, got {getattr(config.data, field)}")
    t = config.train
    check_step_options(t)
    if t.steps < 0 or (t.steps == 0 and t.init_from is None):
        raise ConfigError(
            f"train.steps: expected a positive integer (or 0 with train.init_from: evaluation only), got {t.steps}"
        )
    if not t.learning_rate > 0:
        raise ConfigError(f"train.learning_rate: expected > 0, got {t.learning_rate}")
    if not 0 <= t.warmup_steps <= t.steps:
        raise ConfigError(f"train.warmup_steps: expected 0..train.steps={t.steps}, got {t.warmup_steps}")
    if not config.eval.length_multipliers or min(config.eval.length_multipliers) <= 0:
        raise ConfigError("eval.length_multipliers: expected positive integers, e.g. [1, 2, 4, 8]")
    buckets = config.eval.frequency_buckets
    if buckets is not None and (not buckets or min(buckets) < 1 or list(buckets) != sorted(set(buckets))):
        raise ConfigError(
            f"eval.frequency_buckets: expected increasing positive edges, e.g. [10, 100], got {buckets}"
        )
    if config.eval.lengths is not None and (not config.eval.lengths or min(config.eval.lengths) <= 0):
        raise ConfigError("eval.lengths: expected positive integers, e.g. [64, 128, 256], or None")
    resolved = resolve_model(config.model, max_len=config.data.seq_len, vocab_size=vocab_size)
    if config.eval.positional is not None:
        eval_model = dataclasses.replace(config.model, positional=config.eval.positional)
        try:
            resolve_model(eval_model, max_len=config.data.seq_len, vocab_size=vocab_size)
        except ConfigError as e:
            raise ConfigError(str(e).replace("model.positional", "eval.positional", 1)) from None
    return resolved


def build_eval_graphdef(config: Config, params, *, vocab_size: int, pieces=None):
    """Graph of the model with `eval.positional` swapped in, checked to take exactly the trained parameters."""
    model_config = dataclasses.replace(config.model, positional=config.eval.positional)
    resolved = resolve_model(model_config, max_len=config.data.seq_len, vocab_size=vocab_size)
    abstract = nnx.eval_shape(
        lambda: Transformer(resolved, vocab_size=vocab_size, rngs=nnx.Rngs(0), pieces=pieces)
    )
    graphdef, eval_params = nnx.split(abstract)
    shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
    if jax.tree.structure(eval_params) != jax.tree.structure(params) or shapes(eval_params) != shapes(params):
        raise ConfigError(
            f"eval.positional={config.eval.positional} needs parameters that differ from the trained "
            f"model.positional={config.model.positional}; only parameter-free changes (e.g. RoPE scaling) can be "
            "swapped in at evaluation"
        )
    return graphdef


@jax.jit
def all_finite(tree) -> jax.Array:
    """True iff every floating-point leaf is finite."""
    leaves = [
        jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def make_optimizer(t, pretrained=None) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW with warmup + cosine decay. With `pretrained` (model.pretrained) in mode
    'frozen' or 'frozen_then_finetune', the embedding table gets its own branch of an optax.multi_transform:
    zero updates, or AdamW scaled by 0 before step freeze_steps and by 1 from then on."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=t.learning_rate,
        warmup_steps=t.warmup_steps,
        decay_steps=max(t.steps, t.warmup_steps + 1),  # optax needs a non-empty decay phase
        end_value=t.learning_rate * t.min_lr_ratio,
    )
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # no decay on gains
    adamw = lambda: optax.adamw(schedule, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay, mask=decay_mask)
    mode = "finetune" if pretrained is None or pretrained.path is None else pretrained.mode
    if mode == "finetune":
        inner = adamw()
    else:
        frozen = (
            optax.set_to_zero()
            if mode == "frozen"
            else optax.chain(adamw(), optax.scale_by_schedule(lambda count: count >= pretrained.freeze_steps))
        )
        inner = optax.multi_transform({"rest": adamw(), "pretrained": frozen}, pretrained_labels)
    return optax.chain(optax.clip_by_global_norm(t.grad_clip), inner)


PRETRAINED_TABLE = "['embedding']['table']"


def pretrained_labels(params):
    """'pretrained' for the embedding table, 'rest' for every other parameter."""
    label = lambda path, _: (
        "pretrained" if jax.tree_util.keystr(path).startswith(PRETRAINED_TABLE) else "rest"
    )
    return jax.tree_util.tree_map_with_path(label, params)


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def cast_floating(tree, dtype):
    """Floating-point leaves cast to `dtype` (the compute copy of float32 master parameters); others unchanged."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_train_step(graphdef, tx, positions, seed: int, compute_dtype=jnp.float32, loss_chunk: int = 0):
    """Pure (params, opt_state, inputs[B,T], targets[B,T], step[, mask, lengths]) -> (params, opt_state, loss);
    donated state.

    `mask` [B,T] (right-padded task batches, research/train_task.py) restricts the mean loss to the marked
    targets, and `lengths` [B] tells the position sampler each row's real length; without them every target
    counts. With compute_dtype bfloat16 the forward and backward pass run on a bfloat16 copy of the parameters;
    the gradients flow back through the cast to the float32 parameters, and the loss is computed in float32.
    `loss_chunk` > 0 computes the loss and the readout's gradients chunk by chunk without the [B,T,V] logits
    (research/loss.py); same value up to summation order."""
    base_key = jax.random.key(seed)

    def loss_fn(params, inputs, targets, pos, key, mask):
        compute = params if compute_dtype == jnp.float32 else cast_floating(params, compute_dtype)
        model = nnx.merge(graphdef, compute)
        if loss_chunk:
            hidden = model.features(inputs, pos, key=key, dtype=compute_dtype)  # [B,T,E]
            return fused_mean_nll(model.embedding, hidden, targets, mask, chunk=loss_chunk)
        return mean_nll(model(inputs, pos, key=key, dtype=compute_dtype), targets, mask)  # [B,T,V] float32

    def train_step(params, opt_state, inputs, targets, step, mask=None, lengths=None):
        key = jax.random.fold_in(base_key, step)
        pos = positions.sample(inputs.shape[0], inputs.shape[1], key=key, train=True, lengths=lengths)
        loss, grads = jax.value_and_grad(loss_fn)(
            params, inputs, targets, pos, jax.random.fold_in(key, 1), mask
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(train_step, donate_argnums=(0, 1))


def check_step_options(t) -> None:
    """The train-step fields shared by corpus and task runs (`config_train_step` reads them)."""
    if t.compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(
            f"train.compute_dtype: expected one of {', '.join(COMPUTE_DTYPES)}, got {t.compute_dtype!r}"
        )
    if t.loss_chunk < 0:
        raise ConfigError(
            f"train.loss_chunk: expected 0 (plain loss) or a positive chunk size, got {t.loss_chunk}"
        )


def config_train_step(config: Config, graphdef, tx, positions):
    """`make_train_step` as `config` asks for it: its seed, train.compute_dtype and train.loss_chunk."""
    t = config.train
    return make_train_step(
        graphdef, tx, positions, config.seed, COMPUTE_DTYPES[t.compute_dtype], loss_chunk=t.loss_chunk
    )


def run_info() -> dict:
    import flax
    import orbax.checkpoint

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    device = jax.devices()[0]
    return {
        "git_sha": sha or "unknown",
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "orbax": orbax.checkpoint.__version__,
            "numpy": np.__version__,
        },
        "device": {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count()},
        "machine": {
            "cpu": _cpu_name(),
            "cores": _cores(),
            "huge_pages": hostmem.active(),
            "native_kernels": native.state(),
        },
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _prepare_workdir(config: Config, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.json"
    if config_path.exists():
        previous = from_dict(Config, json.loads(config_path.read_text()))
        if previous != config:
            differ = differences(previous, config)
            raise ConfigError(
                f"{workdir} holds a run with a different config ({config_path}: {', '.join(differ[:5])} differ); "
                "use another --workdir, delete it, or pass the saved values to continue it"
            )
    if not is_primary():  # process 0 writes the run directory's files
        return
    atomic_write_json(config_path, to_dict(config))
    with open(workdir / "command.txt", "a") as f:
        f.write(" ".join([sys.executable, *sys.argv]) + "\n")


def eval_lengths(config: Config) -> list[int]:
    """Final test lengths: eval.lengths if given, else eval.length_multipliers times data.seq_len."""
    if config.eval.lengths is not None:
        return list(config.eval.lengths)
    return [m * config.data.seq_len for m in config.eval.length_multipliers]


def load_initial_params(init_from: str, workdir: Path, params, opt_state):
    """The final parameters of the finished run `init_from`, in the structure and shardings of `params`."""
    source = init_source(init_from, workdir)
    if not (source / "summary.json").exists():
        raise ConfigError(f"train.init_from: {source} is not a finished run (no summary.json)")
    ckpt = Checkpointer(source / "checkpoints", async_save=False)
    try:
        step = ckpt.latest_step()
        if step is None:
            raise ConfigError(f"train.init_from: {source} has no checkpoint")
        try:
            loaded, _ = ckpt.restore(step, (params, opt_state))
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(
                f"train.init_from: the parameters of {source} do not fit this model (same model config needed, "
                f"apart from parameter-free changes such as RoPE scaling or data.seq_len for relative schemes): {e}"
            ) from None
    finally:
        ckpt.close()
    return loaded, source


def train_and_evaluate(config: Config, workdir: str | Path, *, log=print) -> dict:
    """Train, evaluate and write the run directory; returns the summary dict."""
    if jax.default_backend() == "cpu" and (hint := hostmem.missing_hint()):
        log(hint)
    if config.task.task is not None:  # length-generalisation task instead of a corpus
        from research.train_task import train_and_evaluate_task

        return train_and_evaluate_task(config, workdir, log=log)
    start_time = time.time()
    workdir = Path(workdir)
    resolved = validate(config)
    _prepare_workdir(config, workdir)
    mesh = make_mesh(model=config.train.model_axis)
    check_batch(config.data.batch_size, mesh)
    check_batch(config.eval.batch_size, mesh, field="eval.batch_size")

    data = prepare_data(config.data)
    vocab_size = data.tokenizer.vocab_size
    resolved = validate(config, vocab_size=vocab_size)
    pieces = input_pieces(data.tokenizer) if resolved.embedding.needs_pieces else None
    unk_id = getattr(data.tokenizer, "unk_id", 0)
    model = Transformer(
        resolved, vocab_size=vocab_size, rngs=nnx.Rngs(config.seed), pieces=pieces, unk_id=unk_id
    )
    counts = parameter_counts(model)
    graphdef, params = nnx.split(model)
    del model
    final_graphdef = graphdef
    if config.eval.positional is not None:  # checked now, not after training
        final_graphdef = build_eval_graphdef(config, params, vocab_size=vocab_size, pieces=pieces)
    pretrained_report = None
    if config.model.pretrained.path is not None:
        pretrained_report = init_pretrained(params, config, resolved.embedding, data, log)
    tx = make_optimizer(config.train, config.model.pretrained)
    params = shard_params(params, mesh)
    opt_state = shard_params(tx.init(params), mesh)

    ckpt = Checkpointer(workdir / "checkpoints", keep=config.train.keep_checkpoints)
    start_step = ckpt.latest_step() or 0
    if start_step:
        params, opt_state = ckpt.restore(start_step, (params, opt_state))
        log(f"resumed from checkpoint at step {start_step}")
    elif config.train.init_from is not None:
        params, source = load_initial_params(config.train.init_from, workdir, params, opt_state)
        log(f"initialised from {source}")
    metrics = (
        MetricsWriter(workdir / "metrics.jsonl", resume_step=start_step) if is_primary() else NullWriter()
    )
    if not is_primary():
        log = lambda message: None  # noqa: E731  (one log per run: process 0's)

    train_step = config_train_step(config, graphdef, tx, resolved.positions)
    eval_step = make_eval_step(graphdef, resolved.positions)
    train_tokens = data.splits["train"].tokens
    c, t = config.data, config.train

    def validation() -> dict:
        out = evaluate_split(
            eval_step,
            params,
            data.splits["valid"],
            length=c.seq_len,
            batch_size=config.eval.batch_size,
            mesh=mesh,
            max_windows=config.eval.valid_max_windows or None,
        )
        return {f"valid/{k}": v for k, v in out.items() if k != "tokens"}

    log(
        f"{counts['total']:,} parameters ({counts['embedding']:,} embedding, {counts['readout']:,} readout, "
        f"{counts['positional']:,} "
        f"positional, {counts['rest']:,} rest); vocab {vocab_size}; {len(train_tokens):,} train tokens; "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s)"
    )
    loss_sum, loss_n, window_start = jnp.zeros(()), 0, time.time()
    step = start_step
    try:
        for step in range(start_step + 1, t.steps + 1):
            inputs, targets = train_batch(  # this process's rows of the global batch
                train_tokens,
                seq_len=c.seq_len,
                batch_size=c.batch_size,
                seed=config.seed,
                step=step - 1,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
                close=data.splits["train"].close,
            )
            params, opt_state, loss = train_step(
                params, opt_state, *shard_batch((inputs, targets), mesh, local=True), jnp.int32(step - 1)
            )
            loss_sum, loss_n = loss_sum + loss, loss_n + 1
            last = step == t.steps
            if step % t.log_every == 0 or last:
                mean_loss = float(to_host(loss_sum)) / loss_n
                if not math.isfinite(mean_loss):
                    raise TrainingDiverged(
                        f"non-finite training loss ({mean_loss}) in steps {step - loss_n + 1}..{step}; "
                        f"the last good checkpoint (step {ckpt.latest_step()}) is kept in {workdir}"
                    )
                elapsed = time.time() - window_start
                record = {
                    "train/loss": mean_loss,
                    "train/tokens_per_s": loss_n * c.batch_size * c.seq_len / max(elapsed, 1e-9),
                }
                if t.eval_every and (step % t.eval_every == 0 or last):
                    record.update(validation())
                metrics.write(step, record)
                log(f"step {step}/{t.steps} " + " ".join(f"{k}={v:.4g}" for k, v in record.items()))
                loss_sum, loss_n, window_start = jnp.zeros(()), 0, time.time()
            if step % t.checkpoint_every == 0 or last:
                if not bool(to_host(all_finite(params))):  # never save poisoned parameters over good ones
                    raise TrainingDiverged(
                        f"non-finite parameters after step {step}; the last good checkpoint (step "
                        f"{ckpt.latest_step()}) is kept in {workdir}"
                    )
                ckpt.save(step, (params, opt_state))
        ckpt.wait()
    finally:
        metrics.close()
        ckpt.close()

    final = {}
    if config.eval.positional is not None:
        eval_step = make_eval_step(final_graphdef, resolved.positions)
        log(f"final evaluation with eval.positional={config.eval.positional}")
    for length in eval_lengths(config):
        out = evaluate_split(
            eval_step,
            params,
            data.splits["test"],
            length=length,
            batch_size=config.eval.batch_size,
            mesh=mesh,
        )
        final.update({f"test/len_{length}/{k}": v for k, v in out.items()})
        log(f"test length {length}: loss {out['loss']:.4f} bpb {out['bpb']:.4f} ppl {out['ppl']:.3f}")
    if config.eval.frequency_buckets:  # loss by train-split frequency of the target, at the training length
        names, bucket_of = frequency_buckets(
            train_tokens, vocab_size, config.eval.frequency_buckets, getattr(data.tokenizer, "unk_id", None)
        )
        graph = final_graphdef if config.eval.positional is not None else graphdef
        step_fn = make_bucket_eval_step(graph, resolved.positions, bucket_of, len(names))
        out = evaluate_buckets(
            step_fn,
            params,
            data.splits["test"],
            names,
            length=c.seq_len,
            batch_size=config.eval.batch_size,
            mesh=mesh,
        )
        final.update({f"test/len_{c.seq_len}/{k}": v for k, v in out.items()})
        log(
            "test loss by train frequency: "
            + ", ".join(f"{k[12:]} {v:.3f}" for k, v in out.items() if k.startswith("loss"))
        )

    summary = {
        "metrics": final,
        "params": counts,
        "steps": t.steps,
        "tokens": {name: int(len(s.tokens)) for name, s in data.splits.items()},
        "bytes": {name: int(s.num_bytes) for name, s in data.splits.items()},
        "oov_rate": {name: s.oov_rate for name, s in data.splits.items()},
        "tokenizer": data.tokenizer.name,
        "vocab_size": vocab_size,
        "wall_time_s": time.time() - start_time,
        "train_tokens_per_s": steady_throughput(workdir / "metrics.jsonl", "train/tokens_per_s"),
        "resumed_from_step": start_step,
        "pretrained": pretrained_report,
        "init_from": None
        if config.train.init_from is None
        else str(init_source(config.train.init_from, workdir)),
        "config": to_dict(config),
        **run_info(),
    }
    if is_primary():
        atomic_write_json(workdir / "summary.json", summary)
    return summary


def init_pretrained(params, config: Config, embedding, data, log) -> dict:
    """Overwrite the embedding table in `params` with pretrained vectors aligned to the tokenizer; the coverage
    report (also logged)."""
    from research.embedding.pretrained import align, load_vectors
    from research.vectors import is_recipe, materialize

    p = config.model.pretrained
    start = time.time()
    path, info = materialize(p.path, log=log) if is_recipe(p.path) else (p.path, None)
    vectors = load_vectors(path, p.format, p.limit, encoding=p.encoding, errors=p.errors)
    vocab_size = data.tokenizer.vocab_size
    counts = np.bincount(np.asarray(data.splits["train"].tokens), minlength=vocab_size)[:vocab_size]
    matrix, report = align(
        vectors,
        data.tokenizer.pieces(),
        unmatched=p.unmatched,
        casefold=p.casefold,
        subwords=p.subwords,
        counts=counts,
        seed=config.seed,
    )
    if p.rescale:
        init_std = embedding.init_std
        matrix = matrix * np.float32(init_std / max(float(matrix.std()), 1e-12))
        report["rescaled_to_std"] = init_std
    table = params["embedding"]["table"]
    if table.shape != matrix.shape:
        raise ConfigError(
            f"model.pretrained: aligned vectors {matrix.shape} do not fit the table {table.shape}"
        )
    table[...] = jnp.asarray(matrix)
    if info is not None:
        report["vectors"] = info
    report.update(path=str(p.path), format=vectors.format, words=len(vectors), dim=vectors.dim, mode=p.mode,
                  load_s=round(time.time() - start, 3))  # fmt: skip
    log(
        f"pretrained {vectors.format} vectors {p.path} ({len(vectors):,} x {vectors.dim}): {report['exact']} exact, "
        f"{report['casefold']} case-folded, {report['subword']} from n-grams, {report['unmatched']} unmatched "
        f"({p.unmatched}), {report['special']} special; {report.get('token_coverage', 0):.1%} of train tokens "
        f"covered; most frequent unmatched: {', '.join(repr(w) for w, _ in report['top_unmatched'][:8])}"
    )
    if p.mode != "finetune" and embedding.tied:
        log(
            f"note: model.pretrained.mode={p.mode} with a tied readout: the readout is the table, so it is frozen too"
        )
    return report


def input_pieces(tokenizer) -> list[str]:
    """The string of every input id: `input_pieces()` where the tokenizer spells unknown words, else `pieces()`."""
    return tokenizer.input_pieces() if hasattr(tokenizer, "input_pieces") else tokenizer.pieces()


class NullWriter:
    """MetricsWriter of the processes other than 0."""

    def write(self, step: int, metrics: dict) -> None:
        pass

    def close(self) -> None:
        pass


def steady_throughput(path: Path, key: str) -> float | None:
    """Median of a logged throughput over the run, leaving out the first logged window (it includes compilation)."""
    from research.metrics import read_jsonl

    values = [r[key] for r in read_jsonl(path) if key in r]
    values = values[1:] if len(values) > 1 else values
    return float(np.median(values)) if values else None


def load_summary(workdir) -> dict | None:
    path = Path(workdir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None
