"""A finished run, loaded back for analysis: its config, its model with the final parameters, and its data.

The model is built as the training loop builds it (research/model/build.py, through the run's objective), and the
parameters are read from the run's latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from flax import nnx

from research.config import Config, from_dict
from research.model.build import ResolvedModel, build_model
from research.training.checkpoint import Checkpointer
from research.training.loop import objective_for, validate
from research.training.objective import Objective
from research.training.task import eval_batch, sequence_length


@dataclasses.dataclass
class TrainedRun:
    config: Config
    model: nnx.Module
    resolved: ResolvedModel
    objective: Objective
    """Prepared: a corpus run's `objective.data` (tokenizer and token splits), a task run's `objective.task`."""


def load_run(run_dir: str | Path) -> TrainedRun:
    run_dir = Path(run_dir)
    config = from_dict(Config, json.loads((run_dir / "config.json").read_text()))
    objective = objective_for(config)
    validate(config, objective)
    inputs = objective.prepare(lambda message: None)
    model = build_model(
        inputs.resolved,
        vocab_size=inputs.vocab_size,
        seed=config.seed,
        pieces=inputs.pieces,
        unk_id=inputs.unk_id,
    )
    graphdef, params = nnx.split(model)
    ckpt = Checkpointer(run_dir / "checkpoints", async_save=False)
    try:
        step = ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(
                f"{run_dir / 'checkpoints'}: no checkpoint to read the trained parameters from"
            )
        params = ckpt.restore_params(step, params)  # the parameters alone: no optimizer config needed
    finally:
        ckpt.close()
    return TrainedRun(config, nnx.merge(graphdef, params), inputs.resolved, objective)


def load_trained_model(run_dir: str | Path):
    """(config, model with the run's final parameters, resolved model) of a finished run directory."""
    run = load_run(run_dir)
    return run.config, run.model, run.resolved


def split_windows(run: TrainedRun, length: int, count: int) -> np.ndarray:
    """Up to `count` test windows [B, length] of a run's data (test split; for task runs, the longest test input
    that fits)."""
    if run.config.task.task is not None:
        task = run.objective.task
        n = max(
            m for m in range(1, run.config.task.eval_max_length + 1) if sequence_length(task, m) <= length
        )
        return eval_batch(task, n, examples=count, length=sequence_length(task, n))[0]
    tokens = np.asarray(run.objective.data.splits["test"].tokens)
    windows = min(count, len(tokens) // length)
    if windows == 0:
        raise ValueError(f"the test split has {len(tokens)} tokens, fewer than one window of {length}")
    return tokens[: windows * length].reshape(windows, length)
