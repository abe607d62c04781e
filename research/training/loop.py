"""One run: `train_and_evaluate(config, workdir)`, for every objective (research/training/objective.py).

    setup     validate the whole config (before any data or compilation), the run directory, the device mesh, the
              objective's data, the model, the optimizer, and the starting state: a resumed checkpoint, or
              `train.init_from`'s parameters
    fit       the jitted, donated training step over the mesh, with a guard on non-finite losses and on non-finite
              parameters before every checkpoint, periodic validation, metrics.jsonl and Orbax checkpoints
    evaluate  the objective's final metrics, on the evaluation graph (`eval.positional`, checked before training)
    summary   summary.json, written last and atomically: its presence means the run finished

Re-running on the same workdir resumes from the last checkpoint and, batches being a pure function of (seed, step),
ends with the same metrics as an uninterrupted run. Only the primary process writes files and logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from research.config import Config, ConfigError, init_source, stop_rule, to_dict
from research.model.build import ResolvedModel, build_model, resolve_swapped, swapped_graphdef
from research.model.transformer import parameter_counts
from research.runtime import hostmem
from research.runtime.machine import run_info
from research.runtime.mesh import check_batch, is_primary, make_mesh, shard_batch, shard_params, to_host
from research.training.checkpoint import Checkpointer, ParamsMismatch
from research.training.lm import LanguageModel
from research.training.metrics import NullWriter, open_tracker, progress_bar, read_jsonl, steady_throughput
from research.training.objective import ModelView, Objective
from research.training.rundir import RunLock, check_config, load_summary, prepare_workdir, write_summary
from research.training.select import BestParams
from research.training.step import all_finite, config_train_step, make_optimizer, make_schedule
from research.training.task import TaskObjective


class TrainingDiverged(RuntimeError):
    """A non-finite loss or parameters; the last good checkpoint is kept."""


def objective_for(config: Config) -> Objective:
    """The synthetic-task objective when `task.task` is set, else the corpus language model."""
    return TaskObjective(config) if config.task.task is not None else LanguageModel(config)


def validate(config: Config, objective: Objective | None = None) -> ResolvedModel:
    """The one validation entry point of a run: each config section's own checks, its objective's (specs against
    their registries, paths, lengths), and eval.positional against the trained model, all before any data is read
    or anything compiles -> the model resolved at the training length. ConfigError naming the field and what was
    expected."""
    config.validate()
    objective = objective or objective_for(config)
    resolved = objective.validate()
    if config.train.stop_when is not None and (key := stop_rule(config.train.stop_when)[0]) not in (
        objective.validation_keys
    ):
        raise ConfigError(
            f"train.stop_when: {key!r} is not a validation metric of this objective; expected one of "
            f"{', '.join(objective.validation_keys)}"
        )
    if config.train.final_params == "best_valid" and objective.selection is None:
        raise ConfigError(
            "train.final_params: 'best_valid' needs a valid split to select on, and this objective has none "
            "(a synthetic task validates on its test lengths); expected 'last'"
        )
    if config.eval.positional is not None:
        resolve_swapped(resolved, config.eval.positional, field="eval.positional")
    return resolved


@dataclasses.dataclass
class Run:
    """Everything a run holds between setup and summary."""

    config: Config
    workdir: Path
    objective: Objective
    mesh: object
    graphdef: object
    positions: object
    params: object
    opt_state: object
    tx: object
    ckpt: Checkpointer
    start_step: int
    counts: dict
    pretrained: dict | None
    log: object
    started: float
    selected: dict | None = None  # train.final_params=best_valid: the step whose parameters were scored
    validation: dict | None = None  # the last periodic validation's metrics
    stopped_at: int | None = None  # train.stop_when: the step whose validation met it


def train_and_evaluate(config: Config, workdir: str | Path, *, log=print, reevaluate: bool = False) -> dict:
    """Train, evaluate and write the run directory; returns the summary dict. A run directory that already holds a
    finished run (summary.json) is left as it is and its summary returned; `reevaluate` evaluates its final
    parameters again and rewrites the summary, keeping the training's wall time."""
    workdir = Path(workdir)
    objective = objective_for(config)
    validate(config, objective)
    with RunLock(workdir) if is_primary() else contextlib.nullcontext():
        check_config(config, workdir)
        finished = load_summary(workdir)
        if finished is not None and not reevaluate:
            log(
                f"{workdir} holds a finished run (summary.json): nothing to do; --reevaluate evaluates it again"
            )
            return finished
        run = setup(config, workdir, objective, log)
        fit(run)
        evaluated = time.time()
        final = run.objective.evaluate(run.params, run.log)
        return summarise(run, final, previous=finished, evaluation_s=time.time() - evaluated)


def open_best(run: Run) -> BestParams | None:
    """The keeper of the best validated parameters when train.final_params is 'best_valid' (research/training/
    select.py)."""
    if run.config.train.final_params != "best_valid":
        return None
    return BestParams(run.workdir, run.objective.selection, resume_step=run.start_step)


def setup(config: Config, workdir: Path, objective: Objective, log) -> Run:
    """Prepare the run directory, the data and the model of a validated config, and restore the starting state."""
    started = time.time()
    prepare_workdir(config, workdir)
    if not is_primary():
        log = lambda message: None  # noqa: E731  (one log per run: the primary process's)
    if jax.default_backend() == "cpu" and (hint := hostmem.missing_hint()):
        log(hint)
    mesh = make_mesh(model=config.train.model_axis)
    for field, size in objective.sharded_sizes().items():
        check_batch(size, mesh, field=field)
    inputs = objective.prepare(log)
    model = build_model(
        inputs.resolved,
        vocab_size=inputs.vocab_size,
        seed=config.seed,
        pieces=inputs.pieces,
        unk_id=inputs.unk_id,
    )
    counts = parameter_counts(model)
    graphdef, params = nnx.split(model)
    del model
    eval_graphdef = graphdef
    if config.eval.positional is not None:  # checked against the parameters now, not after training
        eval_graphdef = swapped_graphdef(
            inputs.resolved, config.eval.positional, params, vocab_size=inputs.vocab_size, pieces=inputs.pieces,
            field="eval.positional",
        )  # fmt: skip
    pretrained = objective.init_params(params, inputs.resolved, log)
    tx = make_optimizer(config.train, config.model.pretrained)
    params = shard_params(params, mesh)
    opt_state = shard_params(tx.init(params), mesh)
    ckpt = Checkpointer(workdir / "checkpoints", keep=config.train.keep_checkpoints)
    params, opt_state, start_step = restore(config, workdir, ckpt, params, opt_state, log)
    objective.attach(ModelView(graphdef, eval_graphdef, inputs.resolved.positions, mesh))
    log(
        f"{counts['total']:,} parameters ({counts['embedding']:,} embedding, {counts['readout']:,} readout, "
        f"{counts['positional']:,} positional, {counts['rest']:,} rest); "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s)"
    )
    return Run(
        config, workdir, objective, mesh, graphdef, inputs.resolved.positions, params, opt_state, tx, ckpt,
        start_step, counts, pretrained, log, started,
    )  # fmt: skip


def restore(config: Config, workdir: Path, ckpt: Checkpointer, params, opt_state, log):
    """(params, opt_state, step) to start from: the newest checkpoint of this run that restores (an unreadable
    one is moved aside, research/training/checkpoint.py), else train.init_from's final parameters (optimizer state
    fresh), else the initial ones at step 0."""
    state, start_step = ckpt.restore_latest((params, opt_state), log=log, fallback=jax.process_count() == 1)
    if start_step:
        params, opt_state = state
        log(f"resumed from checkpoint at step {start_step}")
    elif config.train.init_from is not None:
        params, source = load_initial_params(config.train.init_from, workdir, params)
        log(f"initialised from {source}")
    return params, opt_state, start_step


def load_initial_params(init_from: str, workdir: Path, params):
    """The final parameters of the finished run `init_from` (its latest checkpoint's `params` item alone, so its
    optimizer may differ from this run's), in the structure, dtypes and shardings of `params`. ConfigError naming
    the first parameter whose name or shape differs."""
    source = init_source(init_from, workdir)
    if not (source / "summary.json").exists():
        raise ConfigError(f"train.init_from: {source} is not a finished run (no summary.json)")
    ckpt = Checkpointer(source / "checkpoints", async_save=False)
    try:
        step = ckpt.latest_step()
        if step is None:
            raise ConfigError(f"train.init_from: {source} has no checkpoint")
        try:
            loaded = ckpt.restore_params(step, params)
        except ParamsMismatch as e:
            raise ConfigError(
                f"train.init_from: the parameters of {source} do not fit this model ({e}); the same model config "
                "is needed, apart from parameter-free changes such as RoPE scaling or data.seq_len for relative "
                "schemes"
            ) from None
    finally:
        ckpt.close()
    return loaded, source


def fit(run: Run) -> None:
    """Train from run.start_step to train.steps, logging every train.log_every steps (metrics.jsonl, TensorBoard,
    W&B: research/training/metrics.py), validating every train.eval_every and checkpointing every
    train.checkpoint_every (and at the last step). On a terminal, a progress bar shows the steps and the ETA."""
    t, objective = run.config.train, run.objective
    train_step = config_train_step(run.config, run.graphdef, run.tx, run.positions)
    primary = is_primary()
    tracker = open_tracker(run.config, run.workdir, resume_step=run.start_step) if primary else NullWriter()
    window = Window(make_schedule(t))
    best = open_best(run)  # every process: Orbax saves are collective
    run.stopped_at = stopped_before(run)
    first = t.steps + 1 if run.stopped_at else run.start_step + 1
    try:
        with progress_bar(t.steps, run.start_step, enabled=primary and sys.stdout.isatty()) as advance:
            for step in range(first, t.steps + 1):
                batch = objective.batch(step - 1, jax.process_index(), jax.process_count())
                # masks: (mask, lengths) of a task batch, or ()
                inputs, targets, *masks = shard_batch(batch, run.mesh, local=True)
                run.params, run.opt_state, out = train_step(
                    run.params, run.opt_state, inputs, targets, jnp.int32(step - 1), *masks
                )
                window.add(out)
                advance(step)
                last = step == t.steps
                validates = bool(t.eval_every) and (step % t.eval_every == 0 or last)
                logs = step % t.log_every == 0 or last or validates  # a validation is logged with its step
                saves = step % t.checkpoint_every == 0 or last
                # Checked before anything of this step is written: no metrics of poisoned parameters, and never
                # a checkpoint over good ones.
                if (logs or saves) and not bool(to_host(all_finite(run.params))):
                    raise TrainingDiverged(
                        f"non-finite parameters after step {step}; the last good checkpoint (step "
                        f"{run.ckpt.latest_step()}) is kept in {run.workdir}"
                    )
                if logs:
                    record = window.close(run, step)
                    if validates:
                        run.validation = objective.validation(run.params)
                        record.update(run.validation)
                        if best is not None:
                            best.offer(step, record, (run.params, run.opt_state))
                        if meets_stop_rule(t.stop_when, record):
                            run.stopped_at, saves = step, True
                    tracker.write(step, record)
                    run.log(f"step {step}/{t.steps} " + " ".join(f"{k}={v:.4g}" for k, v in record.items()))
                if saves:
                    run.ckpt.save(step, (run.params, run.opt_state))
                if run.stopped_at:
                    run.log(f"stopped at step {step}: {t.stop_when} met")
                    break
        run.ckpt.wait()
        if best is not None:
            run.params, run.selected = best.load(run.params)
            run.log(f"final evaluation of the parameters of step {run.selected['step']} (best {best.key})")
    finally:
        tracker.close()
        run.ckpt.close()
        if best is not None:
            best.close()


def meets_stop_rule(rule: str | None, record: dict) -> bool:
    """Whether a validation record meets train.stop_when."""
    if rule is None:
        return False
    key, op, value = stop_rule(rule)
    return key in record and (record[key] >= value if op == ">=" else record[key] <= value)


def stopped_before(run: Run) -> int | None:
    """The resumed step, when its validation (in metrics.jsonl) already met train.stop_when: a run stopped early
    and killed before its summary resumes into evaluation, not into more training."""
    if not run.start_step or run.config.train.stop_when is None:
        return None
    records = [r for r in read_jsonl(run.workdir / "metrics.jsonl") if r.get("step") == run.start_step]
    return run.start_step if any(meets_stop_rule(run.config.train.stop_when, r) for r in records) else None


@jax.jit
def _accumulate(sums: dict, metrics: dict) -> dict:
    return jax.tree.map(jnp.add, sums, metrics)


class Window:
    """The train step's metrics since the last log line, summed on the device (no host sync per step)."""

    def __init__(self, schedule):
        self.schedule = schedule  # count -> learning rate (research/training/step.py make_schedule)
        self.reset()

    def reset(self) -> None:
        self.sums, self.steps, self.start = None, 0, time.time()

    def add(self, metrics: dict) -> None:
        self.sums = metrics if self.sums is None else _accumulate(self.sums, metrics)
        self.steps += 1

    def close(self, run: Run, step: int) -> dict:
        """{"train/loss", "train/grad_norm" (window means), "train/lr" (of step's update), throughput} of the
        window ending at `step`; TrainingDiverged on a non-finite mean loss."""
        means = {key: float(to_host(value)) / self.steps for key, value in self.sums.items()}
        if not math.isfinite(means["loss"]):
            raise TrainingDiverged(
                f"non-finite training loss ({means['loss']}) in steps {step - self.steps + 1}..{step}; "
                f"the last good checkpoint (step {run.ckpt.latest_step()}) is kept in {run.workdir}"
            )
        record = {"train/loss": means.pop("loss")} | {f"train/{key}": mean for key, mean in means.items()}
        record["train/lr"] = float(self.schedule(step - 1))  # the update of step s uses optax count s - 1
        record.update(run.objective.throughput(self.steps, time.time() - self.start))
        self.reset()
        return record


def summarise(
    run: Run, final: dict, *, previous: dict | None = None, evaluation_s: float | None = None
) -> dict:
    """summary.json: final metrics, parameter counts, the objective's entries, provenance; returns it. Re-evaluating
    a finished run (`previous`) keeps its training wall time and records the evaluation's apart."""
    config, key = run.config, run.objective.throughput_key
    summary = {
        "metrics": final,
        "params": run.counts,
        "steps": config.train.steps,
        **run.objective.summary(),
        "wall_time_s": time.time() - run.started,
        "evaluation_wall_time_s": evaluation_s,
        key.replace("/", "_"): steady_throughput(run.workdir / "metrics.jsonl", key),
        "resumed_from_step": run.start_step,
        "selected": run.selected,
        "stopped_at": run.stopped_at,
        "valid": run.validation if run.validation is not None else (previous or {}).get("valid"),
        "pretrained": run.pretrained,
        "init_from": None
        if config.train.init_from is None
        else str(init_source(config.train.init_from, run.workdir)),
        "config": to_dict(config),
        **run_info(),
    }
    if previous is not None:
        summary.update(
            wall_time_s=previous["wall_time_s"],
            resumed_from_step=previous.get("resumed_from_step", 0),
            reevaluated=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
    write_summary(run.workdir, summary)
    return summary
