"""One length-generalisation run: train on a synthetic task at input lengths <= N, report accuracy at every length <= M.

Protocol (Ruoss et al. 2023, arXiv 2305.16843, decoder-only framing of research/data/tasks.py):
- training step s draws one input length n ~ U[1, N] and a batch of that length, a pure function of (seed, s);
- the loss is the cross-entropy on output tokens only; inputs are right-padded to the longest training example, so
  the step compiles once, and the position sampler is told each row's real length (`lengths`), so `randomized`
  draws a subset of the row's own size, exactly as for an unpadded row;
- evaluation: a fixed test set per input length 1..M (the same examples for every run and seed), right-padded to the
  longest, greedy per-token predictions (argmax given the true prefix, i.e. teacher forcing), reported as per-token
  accuracy over the output tokens and per-sequence accuracy (every output token right). Ruoss et al. report the
  per-token accuracy averaged over the out-of-distribution lengths N+1..M: `test/ood/token_accuracy` here.

Padding is exact for the real tokens: attention is causal and the padding comes after them. Checkpoints, resume,
metrics.jsonl and summary.json follow the same run-directory contract as research/train.py.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research.checkpoint import Checkpointer
from research.config import Config, ConfigError, resolve_spec, to_dict
from research.data.tasks import PAD, TASKS, Task, TaskBatch
from research.loss import mean_nll
from research.metrics import MetricsWriter, atomic_write_json
from research.model.transformer import Transformer, parameter_counts, resolve_model
from research.parallel import check_batch, make_mesh, replicate, shard_batch
from research.train import TrainingDiverged, check_step_options, config_train_step

EVAL_SEED = 20230526  # the test set is the same for every run: a function of (task, length) only


def resolve_task(config: Config) -> Task:
    return resolve_spec(TASKS, config.task.task, field="task.task")


def sequence_length(task: Task, n: int) -> int:
    """Model sequence length (input + SEP + output - 1) of an example with input length n."""
    return task.sample(np.random.default_rng(0), 1, n).inputs.shape[1]


def max_sequence_length(task: Task, max_n: int) -> int:
    return max(sequence_length(task, n) for n in range(1, max_n + 1))


def validate(config: Config):
    """Task-run checks that need no compilation; returns (task, resolved model). Raises ConfigError."""
    t = config.task
    if t.task is None:
        raise ConfigError("task.task: expected a task spec, e.g. task.task=reverse_string")
    task = resolve_task(config)
    if t.train_max_length < 1:
        raise ConfigError(f"task.train_max_length: expected >= 1, got {t.train_max_length}")
    if t.eval_max_length < t.train_max_length:
        raise ConfigError(
            f"task.eval_max_length: expected >= task.train_max_length={t.train_max_length}, got {t.eval_max_length}"
        )
    if t.eval_examples < 1:
        raise ConfigError(f"task.eval_examples: expected >= 1, got {t.eval_examples}")
    if config.data.batch_size <= 0:
        raise ConfigError(f"data.batch_size: expected a positive integer, got {config.data.batch_size}")
    tr = config.train
    if tr.steps <= 0:
        raise ConfigError(f"train.steps: expected a positive integer, got {tr.steps}")
    if not tr.learning_rate > 0:
        raise ConfigError(f"train.learning_rate: expected > 0, got {tr.learning_rate}")
    if not 0 <= tr.warmup_steps <= tr.steps:
        raise ConfigError(f"train.warmup_steps: expected 0..train.steps={tr.steps}, got {tr.warmup_steps}")
    if config.eval.positional is not None:
        raise ConfigError("eval.positional: not supported for task runs (set it to None)")
    check_step_options(tr)
    if tr.init_from is not None:
        raise ConfigError("train.init_from: not supported for task runs (set it to None)")
    train_len = max_sequence_length(task, t.train_max_length)
    resolved = resolve_model(config.model, max_len=train_len, vocab_size=task.vocab_size)
    return task, resolved


def pad(batch: TaskBatch, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Right-pad to `length` -> inputs, targets (PAD), mask (0) [B,length] and real lengths [B]."""
    b, t = batch.inputs.shape
    if t > length:
        raise ValueError(f"example of {t} tokens does not fit the padded length {length}")
    extra = ((0, 0), (0, length - t))
    lengths = np.full((b,), t, np.int32)
    return (
        np.pad(batch.inputs, extra, constant_values=PAD),
        np.pad(batch.targets, extra, constant_values=PAD),
        np.pad(batch.mask, extra),
        lengths,
    )


def train_batch(task: Task, *, seed: int, step: int, batch_size: int, max_n: int, length: int):
    """The batch for `step`: a pure function of (seed, step); one input length n ~ U[1, max_n] per batch."""
    rng = np.random.default_rng([seed, step])
    n = int(rng.integers(1, max_n + 1))
    return pad(task.sample(rng, batch_size, n), length)


def eval_batch(task: Task, n: int, *, examples: int, length: int):
    return pad(task.sample(np.random.default_rng([EVAL_SEED, n]), examples, n), length)


def make_eval_step(graphdef, positions):
    """(params, inputs, targets, mask, lengths) -> (loss, correct tokens, output tokens, correct sequences)."""

    @jax.jit
    def eval_step(params, inputs, targets, mask, lengths):
        pos = positions.sample(
            inputs.shape[0], inputs.shape[1], key=jax.random.key(EVAL_SEED), train=False, lengths=lengths
        )
        logits = nnx.merge(graphdef, params)(inputs, pos)  # [B,T,V]
        correct = (jnp.argmax(logits, -1) == targets) * mask  # [B,T]
        per_sequence = jnp.sum(correct, 1) == jnp.sum(mask, 1)  # [B]
        return mean_nll(logits, targets, mask), jnp.sum(correct), jnp.sum(mask), jnp.sum(per_sequence)

    return eval_step


def evaluate_lengths(eval_step, params, task: Task, *, max_n: int, examples: int, length: int, mesh) -> dict:
    """{n: {"loss", "token_accuracy", "sequence_accuracy"}} for every input length 1..max_n."""
    results = {}
    for n in range(1, max_n + 1):
        loss, correct, total, sequences = eval_step(
            params, *shard_batch(eval_batch(task, n, examples=examples, length=length), mesh)
        )
        results[n] = {
            "loss": float(loss),
            "token_accuracy": float(correct) / max(float(total), 1.0),
            "sequence_accuracy": float(sequences) / examples,
        }
    return results


def summarise(per_length: dict, train_max: int) -> dict:
    """Flat metrics: per length, and means over in-distribution (1..N) and out-of-distribution (N+1..M) lengths."""
    metrics = {}
    for n, values in per_length.items():
        metrics.update({f"test/len_{n}/{k}": v for k, v in values.items()})
    for name, lengths in (
        ("in_dist", [n for n in per_length if n <= train_max]),
        ("ood", [n for n in per_length if n > train_max]),
    ):
        for k in ("token_accuracy", "sequence_accuracy"):
            if lengths:
                metrics[f"test/{name}/{k}"] = float(np.mean([per_length[n][k] for n in lengths]))
    return metrics


def train_and_evaluate_task(config: Config, workdir: str | Path, *, log=print) -> dict:
    """Train on config.task and write the run directory; returns the summary dict."""
    from research.train import _prepare_workdir, make_optimizer, run_info  # shared run-directory contract

    start_time = time.time()
    workdir = Path(workdir)
    task, resolved = validate(config)
    _prepare_workdir(config, workdir)
    t, tr = config.task, config.train
    mesh = make_mesh()
    check_batch(config.data.batch_size, mesh)
    check_batch(t.eval_examples, mesh, field="task.eval_examples")
    train_len = resolved.dims.max_len
    eval_len = max_sequence_length(task, t.eval_max_length)

    model = Transformer(resolved, vocab_size=task.vocab_size, rngs=nnx.Rngs(config.seed))
    counts = parameter_counts(model)
    graphdef, params = nnx.split(model)
    del model
    tx = make_optimizer(tr)
    params = replicate(params, mesh)
    opt_state = replicate(tx.init(params), mesh)
    ckpt = Checkpointer(workdir / "checkpoints", keep=tr.keep_checkpoints)
    start_step = ckpt.latest_step() or 0
    if start_step:
        params, opt_state = ckpt.restore(start_step, (params, opt_state))
        log(f"resumed from checkpoint at step {start_step}")
    metrics = MetricsWriter(workdir / "metrics.jsonl", resume_step=start_step)
    train_step = config_train_step(
        config, graphdef, tx, resolved.positions
    )  # the corpus runs' step, with the padding mask and row lengths
    eval_step = make_eval_step(graphdef, resolved.positions)
    log(
        f"task {t.task['name']}: {counts['total']:,} parameters; vocab {task.vocab_size}; train n <= "
        f"{t.train_max_length} ({train_len} tokens padded), test n <= {t.eval_max_length} ({eval_len} tokens)"
    )

    loss_sum, loss_n, window_start = jnp.zeros(()), 0, time.time()
    try:
        for step in range(start_step + 1, tr.steps + 1):
            batch = train_batch(
                task,
                seed=config.seed,
                step=step - 1,
                batch_size=config.data.batch_size,
                max_n=t.train_max_length,
                length=train_len,
            )
            inputs, targets, mask, lengths = shard_batch(batch, mesh)
            params, opt_state, loss = train_step(
                params, opt_state, inputs, targets, jnp.int32(step - 1), mask, lengths
            )
            loss_sum, loss_n = loss_sum + loss, loss_n + 1
            last = step == tr.steps
            if step % tr.log_every == 0 or last:
                mean_loss = float(loss_sum) / loss_n
                if not math.isfinite(mean_loss):
                    raise TrainingDiverged(
                        f"non-finite training loss ({mean_loss}) in steps {step - loss_n + 1}..{step}; "
                        f"the last good checkpoint (step {ckpt.latest_step()}) is kept in {workdir}"
                    )
                record = {
                    "train/loss": mean_loss,
                    "train/examples_per_s": loss_n
                    * config.data.batch_size
                    / max(time.time() - window_start, 1e-9),
                }
                if tr.eval_every and (step % tr.eval_every == 0 or last):
                    per_length = evaluate_lengths(
                        eval_step, params, task, max_n=t.train_max_length, examples=t.eval_examples,
                        length=eval_len, mesh=mesh,
                    )  # fmt: skip
                    record["valid/in_dist/token_accuracy"] = summarise(per_length, t.train_max_length)[
                        "test/in_dist/token_accuracy"
                    ]
                metrics.write(step, record)
                log(f"step {step}/{tr.steps} " + " ".join(f"{k}={v:.4g}" for k, v in record.items()))
                loss_sum, loss_n, window_start = jnp.zeros(()), 0, time.time()
            if step % tr.checkpoint_every == 0 or last:
                ckpt.save(step, (params, opt_state))
        ckpt.wait()
    finally:
        metrics.close()
        ckpt.close()

    per_length = evaluate_lengths(
        eval_step, params, task, max_n=t.eval_max_length, examples=t.eval_examples, length=eval_len, mesh=mesh
    )
    final = summarise(per_length, t.train_max_length)
    log(
        f"token accuracy: in-distribution {final['test/in_dist/token_accuracy']:.3f}, "
        f"out-of-distribution {final.get('test/ood/token_accuracy', float('nan')):.3f}"
    )
    summary = {
        "metrics": final,
        "params": counts,
        "steps": tr.steps,
        "task": {"name": t.task["name"], "vocab_size": task.vocab_size, **dataclasses.asdict(task)},
        "vocab_size": task.vocab_size,
        "wall_time_s": time.time() - start_time,
        "resumed_from_step": start_step,
        "config": to_dict(config),
        **run_info(),
    }
    atomic_write_json(workdir / "summary.json", summary)
    return summary
