"""Orbax checkpoints of the whole training state (parameters, optimizer state) keyed by step, as named items.

    checkpoints/<step>/params/      the model's parameters: a nested dict with the model's own names
                                    (blocks/0/attn/qkv/kernel); restorable alone (train.init_from, export)
    checkpoints/<step>/opt_state/   the optimizer state, named by its optax tree (1/0/mu/blocks/0/attn/qkv/kernel)

Names come from the pytree paths of the NNX state and the optax state (`leaf_name`), so a checkpoint can be read
and inspected without building the model (`read_checkpoint`), and restoring maps names back onto the structure,
dtypes and shardings of a freshly initialised state. Orbax writes each step into a temporary directory and renames
it when complete, so a kill during a save leaves the previous step as the latest readable one.

Checkpoints of older runs hold one unnamed item (`<step>/default`: `{"leaves": [...]}`, the leaves of
(params, opt_state) in pytree order); they still resume and initialise (`_restore_legacy`), and the next save of a
resumed run writes the named layout.

A checkpoint that does not restore (a truncated or missing file: a full disk, a copy cut short) never blocks a run:
`restore_latest` says which step failed and why, moves it aside to `<run>/checkpoints_unreadable/` (never deleting
it), and tries the one before. Only when none restores does it stop, in one line that names the fix.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

ITEMS = ("params", "opt_state")
LEGACY_ITEM = "default"  # the single item of the unnamed layout


class CheckpointError(RuntimeError):
    """No checkpoint of a run restores; the message names the folder and the fix."""


class ParamsMismatch(CheckpointError):
    """Saved parameters that do not fit the model asked for; the message names the first difference."""


def _key(k) -> str:
    for attr in ("key", "idx", "name"):  # DictKey / FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def leaf_name(path) -> str:
    """'blocks/0/attn/qkv/kernel' for a pytree key path; an NNX Variable's own `.value` step is left out."""
    return "/".join(
        _key(k) for k in path if not (isinstance(k, jax.tree_util.GetAttrKey) and k.name == "value")
    )


def named(tree) -> dict:
    """{name: leaf} of a pytree, in its flatten order."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = leaf_name(path)
        if name in out:
            raise ValueError(f"two leaves of one pytree share the checkpoint name {name!r}")
        out[name] = leaf
    return out


def nest(flat: dict) -> dict:
    """{'a/b': x} -> {'a': {'b': x}}: the on-disk form of a named tree."""
    out: dict = {}
    for name, leaf in flat.items():
        *parents, last = name.split("/")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = leaf
    return out


def flat(nested: dict, prefix: str = "") -> dict:
    """The inverse of `nest`: {'a': {'b': x}} -> {'a/b': x}."""
    out = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        out.update(flat(value, f"{name}/") if isinstance(value, dict) else {name: value})
    return out


def _abstract(tree) -> dict:
    """The named, nested restore target of `tree`: shape, dtype and sharding of every leaf."""
    return nest({k: ocp.utils.to_shape_dtype_struct(v) for k, v in named(tree).items()})


def _fill(like, nested: dict):
    """`like`'s structure with its leaves taken by name from a restored nested dict."""
    values = flat(nested)
    leaves, treedef = jax.tree.flatten(like)
    return jax.tree.unflatten(treedef, [values[name] for name in named(like)])


def check_fits(saved: dict, like) -> None:
    """ParamsMismatch naming the first parameter whose name or shape differs; `saved` is {name: shape}."""
    wanted = {name: tuple(x.shape) for name, x in named(like).items()}
    for name, shape in wanted.items():
        if name not in saved:
            raise ParamsMismatch(f"{name} {shape} of this model is not in the checkpoint")
        if tuple(saved[name]) != shape:
            raise ParamsMismatch(f"{name}: saved {tuple(saved[name])}, this model {shape}")
    for name, shape in saved.items():
        if name not in wanted:
            raise ParamsMismatch(f"{name} {tuple(shape)} of the checkpoint is not in this model")


class Checkpointer:
    def __init__(self, directory: str | Path, *, keep: int = 2, async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        handlers = {item: ocp.StandardCheckpointHandler() for item in ITEMS}
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def is_legacy(self, step: int) -> bool:
        """True for a checkpoint in the unnamed layout of older runs."""
        return (self.directory / str(step) / LEGACY_ITEM).is_dir()

    def save(self, step: int, state) -> None:
        """Save `state` = (params, opt_state) as the named items `params` and `opt_state`."""
        items = {
            item: ocp.args.StandardSave(nest(named(tree))) for item, tree in zip(ITEMS, state, strict=True)
        }
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, like):
        """Restore `step` into the structure, dtypes and shardings of `like` = (params, opt_state)."""
        if self.is_legacy(step):
            return _restore_legacy(self.directory / str(step), like)
        args = {
            item: ocp.args.StandardRestore(_abstract(tree)) for item, tree in zip(ITEMS, like, strict=True)
        }
        restored = self.manager.restore(step, args=ocp.args.Composite(**args))
        return tuple(_fill(tree, restored[item]) for item, tree in zip(ITEMS, like))

    def restore_params(self, step: int, like):
        """The parameters alone of `step`, in the structure, dtypes and shardings of `like` (the model's state);
        ParamsMismatch naming the first parameter that differs in name or shape."""
        if self.is_legacy(step):
            return _restore_legacy_params(self.directory / str(step), like)
        check_fits(self.saved_shapes(step), like)
        args = ocp.args.Composite(params=ocp.args.StandardRestore(_abstract(like)))
        return _fill(like, self.manager.restore(step, args=args)["params"])

    def saved_shapes(self, step: int, item: str = "params") -> dict:
        """{name: shape} of one saved item, read from its metadata (no array is loaded)."""
        tree = self.manager.item_metadata(step)[item]
        tree = getattr(tree, "tree", tree)
        return {name: tuple(meta.shape) for name, meta in flat(tree).items()}

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


def read_checkpoint(directory: str | Path, step: int | None = None) -> dict:
    """{'params/<name>' | 'opt_state/<name>': numpy array} of `step` (default: the latest) of a checkpoint folder,
    read without building the model (inspection, comparisons). An unnamed checkpoint of an older run reads as
    {'leaves/<i>': array}."""
    directory = Path(directory).absolute()
    if step is None:
        step = max((int(p.name) for p in directory.iterdir() if p.name.isdigit()), default=None)
        if step is None:
            raise CheckpointError(f"{directory}: no checkpoint")
    folder = directory / str(step)
    items = [LEGACY_ITEM] if (folder / LEGACY_ITEM).is_dir() else ITEMS
    out = {}
    for item in items:
        tree = _read_item(folder / item)
        prefix = "" if item == LEGACY_ITEM else f"{item}/"
        out.update({f"{prefix}{name}": x for name, x in flat(tree).items()})
    return out


def _read_item(path: Path) -> dict:
    """One saved item as a nested dict (lists in the unnamed layout) of host numpy arrays."""
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
        tree = reader.metadata(path).item_metadata.tree
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        restored = reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))
    if isinstance(restored.get("leaves"), list):
        restored = {"leaves": {str(i): x for i, x in enumerate(restored["leaves"])}}
    return restored


def _save_legacy(directory: str | Path, step: int, state) -> None:
    """Write `state` in the unnamed layout of older runs (for tests of reading it)."""
    options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
    with ocp.CheckpointManager(Path(directory).absolute(), options=options) as manager:
        manager.save(step, args=ocp.args.StandardSave({"leaves": jax.tree.leaves(state)}), force=True)


def _restore_legacy(folder: Path, like):
    """An unnamed checkpoint (the leaves of (params, opt_state)) restored into `like`'s structure and shardings."""
    leaves, treedef = jax.tree.flatten(like)
    abstract = {"leaves": [ocp.utils.to_shape_dtype_struct(x) for x in leaves]}
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as reader:
        restored = reader.restore(folder / LEGACY_ITEM, args=ocp.args.StandardRestore(abstract))
    return jax.tree.unflatten(treedef, restored["leaves"])


def _restore_legacy_params(folder: Path, like):
    """The parameters of an unnamed checkpoint: its first leaves, as many as `like` has (parameters come first in
    (params, opt_state)), checked by shape and placed with `like`'s dtypes and shardings."""
    saved = list(flat(_read_item(folder / LEGACY_ITEM)).values())
    wanted = named(like)
    if len(saved) < len(wanted):
        raise ParamsMismatch(f"the checkpoint holds {len(saved)} arrays, this model {len(wanted)} parameters")
    check_fits({name: x.shape for name, x in zip(wanted, saved)}, like)
    leaves, treedef = jax.tree.flatten(like)
    placed = [jax.device_put(np.asarray(x, dtype=y.dtype), y.sharding) for x, y in zip(saved, leaves)]
    return jax.tree.unflatten(treedef, placed)


def _reason(error: Exception) -> str:
    """The first sentence of an Orbax / TensorStore error, without its multi-line details."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text.split(' See full')[0][:200]}"
