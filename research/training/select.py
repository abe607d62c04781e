"""Model selection on the valid split (early stopping): `train.final_params="best_valid"`.

At every periodic validation whose selection metric (the objective's `selection`, e.g. ("valid/loss", "min")) beats
every earlier one, the parameters are saved to <run>/best/ (one Orbax checkpoint, the same named layout as
<run>/checkpoints/). After training, the final evaluation scores those parameters instead of the last step's, and
summary.json records which step was chosen. The run still trains to train.steps, so its last checkpoint (the one
train.init_from and export read) is unchanged; only the scored parameters differ.

Resuming: the best value so far is read back from metrics.jsonl (records up to the resumed step), and a saved best
from after the resumed step is dropped, since training it again reproduces it (batches are a pure function of the
step).
"""

from __future__ import annotations

import math
from pathlib import Path

from research.training.checkpoint import Checkpointer
from research.training.metrics import read_jsonl

FOLDER = "best"


class BestParams:
    def __init__(self, workdir: Path, selection: tuple[str, str], *, resume_step: int):
        self.key, mode = selection
        self.sign = 1.0 if mode == "min" else -1.0
        self.ckpt = Checkpointer(workdir / FOLDER, keep=1, async_save=False)
        for step in self.ckpt.manager.all_steps():
            if step > resume_step:
                self.ckpt.manager.delete(step)
        self.best = math.inf
        for record in read_jsonl(workdir / "metrics.jsonl"):
            if record.get("step", 0) <= resume_step and self.key in record:
                self._offer(record[self.key])

    def _offer(self, value) -> bool:
        value = float(value) * self.sign
        if not value < self.best:  # the earliest of equal values; a nan never wins
            return False
        self.best = value
        return True

    def offer(self, step: int, record: dict, state) -> None:
        """Save `state` = (params, opt_state) when `record`'s selection metric is the best so far."""
        if self.key in record and self._offer(record[self.key]):
            self.ckpt.save(step, state)  # keep=1: the previous best goes

    def load(self, like):
        """The selected parameters in `like`'s structure and shardings, and {"step", "metric", "value"}."""
        step = self.ckpt.latest_step()
        if step is None:
            raise RuntimeError(
                f"train.final_params=best_valid: no validation was saved in {self.ckpt.directory}"
            )
        chosen = {"step": step, "metric": self.key, "value": self.best * self.sign}
        return self.ckpt.restore_params(step, like), chosen

    def close(self) -> None:
        self.ckpt.close()
