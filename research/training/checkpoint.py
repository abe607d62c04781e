"""Orbax checkpoints of the whole training state (parameters, optimizer state) keyed by step.

The state pytree is saved as its list of leaves and restored into the structure of a freshly initialised state,
which keeps the on-disk format independent of NNX/optax container classes. Orbax writes each step into a temporary
directory and renames it when complete, so a kill during a save leaves the previous step as the latest readable one.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str | Path, *, keep: int = 2, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

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

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
