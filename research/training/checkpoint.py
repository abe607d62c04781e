"""Orbax checkpoints of the whole training state (parameters, optimizer state) keyed by step.

The state pytree is saved as its list of leaves and restored into the structure of a freshly initialised state,
which keeps the on-disk format independent of NNX/optax container classes. Orbax writes each step into a temporary
directory and renames it when complete, so a kill during a save leaves the previous step as the latest readable one.

A checkpoint that does not restore (a truncated or missing file: a full disk, a copy cut short) never blocks a run:
`restore_latest` says which step failed and why, moves it aside to `<run>/checkpoints_unreadable/` (never deleting
it), and tries the one before. Only when none restores does it stop, in one line that names the fix.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """No checkpoint of a run restores; the message names the folder and the fix."""


class Checkpointer:
    def __init__(self, directory: str | Path, *, keep: int = 2, async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state) -> None:
        leaves = jax.tree.leaves(state)
        self.manager.save(step, args=ocp.args.StandardSave({"leaves": leaves}), force=True)

    def restore(self, step: int, like):
        """Restore `step` into the structure (and shardings) of `like`."""
        leaves, treedef = jax.tree.flatten(like)
        abstract = {"leaves": [ocp.utils.to_shape_dtype_struct(x) for x in leaves]}
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return jax.tree.unflatten(treedef, restored["leaves"])

    def restore_latest(self, like, *, log=print, fallback: bool = True):
        """(state, step) of the newest checkpoint that restores, or (None, 0) when there is none. An unreadable
        checkpoint is logged and moved aside, then the one before is tried (`fallback=False`: raise at once, for
        several processes, which must agree on the step). CheckpointError when checkpoints exist but none
        restores."""
        failed = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                return self.restore(step, like), step
            except Exception as e:  # noqa: BLE001  (Orbax and TensorStore raise many types for a damaged file)
                reason = _reason(e)
                if not fallback:
                    raise CheckpointError(
                        f"checkpoint {self.directory / str(step)} does not restore ({reason})"
                    ) from e
                aside = self.move_aside(step)
                failed.append(step)
                log(f"checkpoint at step {step} does not restore ({reason}); moved aside to {aside}")
        if failed:
            raise CheckpointError(
                f"no checkpoint in {self.directory} restores (steps {', '.join(map(str, failed))} moved aside to "
                f"{self.aside_folder}); delete {self.directory} to train this run from the start"
            )
        return None, 0

    @property
    def aside_folder(self) -> Path:
        return self.directory.parent / f"{self.directory.name}_unreadable"

    def move_aside(self, step: int) -> Path:
        """Move a checkpoint out of the manager's folder (kept, never deleted) and forget it."""
        self.aside_folder.mkdir(parents=True, exist_ok=True)
        target = self.aside_folder / f"{step}-{time.strftime('%Y%m%dT%H%M%S')}"
        shutil.move(str(self.directory / str(step)), target)
        self.manager.reload()
        return target

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _reason(error: Exception) -> str:
    """The first sentence of an Orbax / TensorStore error, without its multi-line details."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text.split(' See full')[0][:200]}"
