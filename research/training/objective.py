"""What a run optimises and how it is scored: the one part of a run that differs between a corpus language model and
a synthetic task. Everything else (run directory, mesh, resume, guards, metrics, checkpoints, summary) is the
loop's (research/training/loop.py).

An objective is made once per run from its config and used in this order:

    validate()            every check that needs no data and no compilation -> the model resolved at the training
                          length (ConfigError naming the field)
    sharded_sizes()       {field: size} of the batches split over the mesh's data axis (checked by the loop)
    prepare(log)          read or generate the data -> ModelInputs (vocabulary, pieces, the resolved model)
    init_params(params, resolved, log)
                          overwrite initial parameters before training (pretrained vectors) -> report or None
    attach(view)          the built model (ModelView): compile the evaluation steps
    batch(step, process_index, process_count)
                          this process's rows of the global batch of `step`, a pure function of (seed, step):
                          (inputs, targets) or (inputs, targets, mask, lengths), host arrays
    throughput(steps, seconds), throughput_key
                          the logged training rate, e.g. {"train/tokens_per_s": ...}
    validation(params)    periodic metrics, named valid/...
    validation_keys       the metrics validation() returns (train.stop_when names one, checked before training)
    selection             (metric of validation(), "min" | "max") that train.final_params="best_valid" selects
                          on, or None when the objective has no valid split
    evaluate(params, log) final metrics, named test/..., computed on the evaluation graph (eval.positional)
    summary()             the objective's own entries of summary.json

The loop chooses it (`research.training.loop.objective_for`) and validates a whole config through it
(`research.training.loop.validate`).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from research.model.build import ResolvedModel


@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """What building the model needs from the data: the model resolved against the real vocabulary, its size, and
    for designs that spell tokens the string of every input id (`pieces`) and the unknown id."""

    resolved: ResolvedModel
    vocab_size: int
    pieces: list[str] | None = None
    unk_id: int = 0


@dataclasses.dataclass(frozen=True)
class ModelView:
    """The built model as an objective evaluates it: the trained graph, the evaluation graph (the trained one, or
    eval.positional's over the same parameters), the position sampler and the device mesh."""

    graphdef: object
    eval_graphdef: object
    positions: object
    mesh: object


class Objective(Protocol):
    throughput_key: str
    validation_keys: tuple[str, ...]
    selection: tuple[str, str] | None

    def validate(self) -> ResolvedModel: ...

    def sharded_sizes(self) -> dict[str, int]: ...

    def prepare(self, log) -> ModelInputs: ...

    def init_params(self, params, resolved: ResolvedModel, log) -> dict | None: ...

    def attach(self, view: ModelView) -> None: ...

    def batch(self, step: int, process_index: int, process_count: int) -> tuple: ...

    def throughput(self, steps: int, seconds: float) -> dict: ...

    def validation(self, params) -> dict: ...

    def evaluate(self, params, log) -> dict: ...

    def summary(self) -> dict: ...
