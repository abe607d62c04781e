"""The synthetic-task objective: train on a task at input lengths <= N, report accuracy at every length <= M.

Protocol (Ruoss et al. 2023, arXiv 2305.16843, decoder-only framing of research/data/tasks.py):
- training step s draws one input length n ~ U[1, N] and a batch of that length, a pure function of (seed, s);
- the loss is the cross-entropy on output tokens only; inputs are right-padded to the longest training example, so
  the step compiles once, and the position sampler is told each row's real length (`lengths`), so `randomized`
  draws a subset of the row's own size, exactly as for an unpadded row;
- evaluation: a fixed test set per input length 1..M (the same examples for every run and seed), right-padded to the
  longest, greedy per-token predictions (argmax given the true prefix, i.e. teacher forcing), reported as per-token
  accuracy over the output tokens and per-sequence accuracy (every output token right). Ruoss et al. report the
  per-token accuracy averaged over the out-of-distribution lengths N+1..M: `test/ood/token_accuracy` here.

Padding is exact for the real tokens: attention is causal and the padding comes after them. The run itself
(checkpoints, resume, guards, metrics, summary) is the training loop's, as for a corpus run.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research.config import Config, resolve_spec
from research.data.tasks import PAD, SEP, TASKS, Task, TaskBatch
from research.model.build import ResolvedModel, resolve_model
from research.runtime.mesh import shard_batch
from research.training.loss import mean_nll
from research.training.objective import ModelInputs, ModelView

EVAL_SEED = 20230526  # the test set is the same for every run: a function of (task, length) only


def resolve_task(config: Config) -> Task:
    return resolve_spec(TASKS, config.task.task, field="task.task")


def sequence_length(task: Task, n: int) -> int:
    """Model sequence length (input + SEP + output - 1) of an example with input length n."""
    return task.sample(np.random.default_rng(0), 1, n).inputs.shape[1]


def max_sequence_length(task: Task, max_n: int) -> int:
    return max(sequence_length(task, n) for n in range(1, max_n + 1))


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
    """(params, inputs, targets, mask, lengths) -> (loss, output tokens right per example [B], output tokens per
    example [B]): teacher-forced, each prediction (greedy, argmax) given the true prefix."""

    @jax.jit
    def eval_step(params, inputs, targets, mask, lengths):
        pos = positions.sample(
            inputs.shape[0], inputs.shape[1], key=jax.random.key(EVAL_SEED), train=False, lengths=lengths
        )
        logits = nnx.merge(graphdef, params)(inputs, pos)  # [B,T,V]
        correct = (jnp.argmax(logits, -1) == targets) * mask  # [B,T]
        return mean_nll(logits, targets, mask), jnp.sum(correct, 1), jnp.sum(mask, 1)

    return eval_step


def make_generate_step(graphdef, positions):
    """(params, inputs, targets, mask, lengths, start, stop) -> output tokens right per example [B], free-running:
    from the separator at `start` to the real end `stop`, each greedy prediction is fed back as the next input, so
    an output token is scored given the model's own earlier outputs (autoregressive decoding)."""

    @jax.jit
    def generate(params, inputs, targets, mask, lengths, start, stop):
        pos = positions.sample(
            inputs.shape[0], inputs.shape[1], key=jax.random.key(EVAL_SEED), train=False, lengths=lengths
        )
        model = nnx.merge(graphdef, params)

        def feed(p, x):  # the prediction at p becomes the input at p + 1
            return x.at[:, p + 1].set(jnp.argmax(model(x, pos)[:, p], -1).astype(x.dtype))

        x = jax.lax.fori_loop(start, stop - 1, feed, inputs)
        return jnp.sum((jnp.argmax(model(x, pos), -1) == targets) * mask, 1)

    return generate


BASELINES = ("copy_previous", "input_order", "majority")
"""Trivial predictors scored on the same test set: copy the previous output token (under teacher forcing, the
token just read), the input's own order (output k = input symbol k), and the majority output token."""


def baseline_correct(inputs, targets, mask, start: int, majority: int) -> dict[str, np.ndarray]:
    """Output tokens right per example [B] of each trivial predictor (BASELINES); `start` is the separator's
    position: the output token k is the target at start + k."""
    k = np.arange(inputs.shape[1]) - start  # output index of each target position
    order = np.where((k >= 0) & (k < start), inputs[:, np.clip(k, 0, inputs.shape[1] - 1)], -1)
    predictions = {"copy_previous": inputs, "input_order": order, "majority": np.full_like(inputs, majority)}
    return {name: ((p == targets) * mask).sum(1) for name, p in predictions.items()}


PAD_MULTIPLE = 16
"""Each input length's test batch is right-padded to its own sequence length rounded up to this multiple (at most
the longest), not to the longest: free-running decoding runs one forward pass per output token, so its cost grows
with the padded length (3x less at the in-distribution lengths of a 16 -> 48 study), while a few distinct shapes keep
the compiles few. Exact: under causal attention the real tokens never see the padding after them (tests/
test_train_task.py), and the randomized sampler draws each row's positions from its real length. A rotary scaling
that reads the call's static length (dynamic_ntk, longrope) sees the rounded length instead of the longest."""


def padded_length(task: Task, n: int, longest: int, multiple: int | None = PAD_MULTIPLE) -> int:
    """The padded length of input length n's test batch (`longest` when `multiple` is None)."""
    if multiple is None:
        return longest
    return min(longest, -(-sequence_length(task, n) // multiple) * multiple)


def evaluate_lengths(
    steps, params, task: Task, *, max_n: int, examples: int, length: int, mesh, majority=None,
    multiple: int | None = PAD_MULTIPLE,
):  # fmt: skip
    """({n: metrics}, {n: per-example counts}) for every input length 1..max_n, each padded to `padded_length` (at
    most `length`). `steps` is an eval step, or (eval step, generate step) to add free-running accuracy and, with
    `majority`, the trivial baselines."""
    eval_step, generate = steps if isinstance(steps, tuple) else (steps, None)
    results, examples_of = {}, {}
    for n in range(1, max_n + 1):
        batch = eval_batch(task, n, examples=examples, length=padded_length(task, n, length, multiple))
        sharded = shard_batch(batch, mesh)
        loss, correct, total = (np.asarray(x) for x in eval_step(params, *sharded))
        counts = {"total": total, "teacher": correct}
        if generate is not None:
            start, stop = int(np.argmax(batch[0][0] == SEP)), int(batch[3][0])
            counts["free"] = np.asarray(generate(params, *sharded, start, stop))
            if majority is not None:
                counts |= baseline_correct(batch[0], batch[1], batch[2], start, majority)
        results[n] = {"loss": float(loss), **accuracies(counts)}
        examples_of[n] = {
            k: v.astype(int).tolist() for k, v in counts.items() if k in ("total", "teacher", "free")
        }
    return results, examples_of


def accuracies(counts: dict) -> dict:
    """Token and sequence accuracy (every output token right) from per-example counts of right output tokens."""
    total = counts["total"]
    names = {"teacher": "", "free": "free_", **{b: f"baseline/{b}/" for b in BASELINES}}
    out = {}
    for key, prefix in names.items():
        if key in counts:
            out[f"{prefix}token_accuracy"] = float(counts[key].sum() / max(total.sum(), 1))
            out[f"{prefix}sequence_accuracy"] = float(np.mean(counts[key] == total))
    return out


def majority_output(task: Task, max_n: int, examples: int) -> int:
    """The most frequent output token over the in-distribution test examples (lengths 1..max_n)."""
    counts = np.zeros(task.vocab_size, np.int64)
    for n in range(1, max_n + 1):
        _, targets, mask, _ = eval_batch(task, n, examples=examples, length=sequence_length(task, n))
        counts += np.bincount(targets[mask > 0], minlength=task.vocab_size)
    return int(np.argmax(counts))


def summarise(per_length: dict, train_max: int) -> dict:
    """Flat metrics: per length (the model's own), and means over in-distribution (1..N) and out-of-distribution
    (N+1..M) lengths of every accuracy, the trivial baselines' included."""
    metrics = {}
    for n, values in per_length.items():
        metrics.update({f"test/len_{n}/{k}": v for k, v in values.items() if not k.startswith("baseline/")})
    for name, lengths in (
        ("in_dist", [n for n in per_length if n <= train_max]),
        ("ood", [n for n in per_length if n > train_max]),
    ):
        for k in (k for k in per_length[lengths[0]] if k != "loss") if lengths else ():
            metrics[f"test/{name}/{k}"] = float(np.mean([per_length[n][k] for n in lengths]))
    return metrics


class TaskObjective:
    """research/training/objective.py: Objective, for a synthetic task (`task.task`)."""

    throughput_key = "train/examples_per_s"
    validation_keys = ("valid/in_dist/token_accuracy", "valid/in_dist/free_sequence_accuracy")
    selection = None  # validation reads the test lengths: selecting on it would select on the test set

    def __init__(self, config: Config):
        self.config = config

    def validate(self) -> ResolvedModel:
        self.task = resolve_task(self.config)
        self.train_len = max_sequence_length(self.task, self.config.task.train_max_length)
        self.resolved = resolve_model(
            self.config.model, max_len=self.train_len, vocab_size=self.task.vocab_size
        )
        return self.resolved

    def sharded_sizes(self) -> dict[str, int]:
        return {
            "data.batch_size": self.config.data.batch_size,
            "task.eval_examples": self.config.task.eval_examples,
        }

    def prepare(self, log) -> ModelInputs:
        t = self.config.task
        self.eval_len = max_sequence_length(self.task, t.eval_max_length)
        log(
            f"task {t.task['name']}: vocab {self.task.vocab_size}; train n <= {t.train_max_length} "
            f"({self.train_len} tokens padded), test n <= {t.eval_max_length} ({self.eval_len} tokens)"
        )
        return ModelInputs(self.resolved, self.task.vocab_size)

    def init_params(self, params, resolved: ResolvedModel, log) -> None:
        return None

    def attach(self, view: ModelView) -> None:
        self.view = view
        self.eval_step = make_eval_step(view.graphdef, view.positions)
        final = (
            self.eval_step
            if view.eval_graphdef is view.graphdef
            else make_eval_step(view.eval_graphdef, view.positions)
        )
        self.final_steps = (final, make_generate_step(view.eval_graphdef, view.positions))
        self.valid_steps = (self.eval_step, make_generate_step(view.graphdef, view.positions))

    def batch(self, step: int, process_index: int, process_count: int) -> tuple:
        """This process's rows of the global batch (every process draws the same global batch, cheaply)."""
        batch = train_batch(
            self.task, seed=self.config.seed, step=step, batch_size=self.config.data.batch_size,
            max_n=self.config.task.train_max_length, length=self.train_len,
        )  # fmt: skip
        rows = self.config.data.batch_size // process_count
        return tuple(x[process_index * rows : (process_index + 1) * rows] for x in batch)

    def throughput(self, steps: int, seconds: float) -> dict:
        return {self.throughput_key: steps * self.config.data.batch_size / max(seconds, 1e-9)}

    def validation(self, params) -> dict:
        """Teacher-forced token accuracy and free-running sequence accuracy (the report's gate) over the
        in-distribution lengths of the test set."""
        per_length, _ = self._per_length(self.valid_steps, params, self.config.task.train_max_length)
        in_dist = summarise(per_length, self.config.task.train_max_length)
        return {
            f"valid/in_dist/{k}": in_dist[f"test/in_dist/{k}"]
            for k in ("token_accuracy", "free_sequence_accuracy")
        }

    def evaluate(self, params, log) -> dict:
        t = self.config.task
        majority = majority_output(self.task, t.train_max_length, t.eval_examples)
        per_length, self.per_example = self._per_length(self.final_steps, params, t.eval_max_length, majority)
        final = summarise(per_length, t.train_max_length)
        ood = lambda key: final.get(f"test/ood/{key}", float("nan"))  # noqa: E731
        log(
            f"token accuracy: in-distribution {final['test/in_dist/token_accuracy']:.3f}, out-of-distribution "
            f"{ood('token_accuracy'):.3f} (free-running sequences {ood('free_sequence_accuracy'):.3f}; baselines: "
            + ", ".join(f"{b} {ood(f'baseline/{b}/token_accuracy'):.3f}" for b in BASELINES)
            + ")"
        )
        return final

    def _per_length(self, steps, params, max_n: int, majority=None):
        return evaluate_lengths(
            steps, params, self.task, max_n=max_n, examples=self.config.task.eval_examples, length=self.eval_len,
            mesh=self.view.mesh, majority=majority,
        )  # fmt: skip

    def summary(self) -> dict:
        name = self.config.task.task["name"]
        task = {"name": name, "vocab_size": self.task.vocab_size, **dataclasses.asdict(self.task)}
        return {
            "task": task, "vocab_size": self.task.vocab_size,
            "evaluation": {"examples": self.config.task.eval_examples, "baselines": list(BASELINES)},
            "per_example": {f"len_{n}": counts for n, counts in self.per_example.items()},
        }  # fmt: skip
