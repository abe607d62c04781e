"""Export a run's trained parameters as safetensors, loadable without the run's checkpoints or data.

<out>/model.safetensors   every array of the model's state (the checkpoint's `params` item), named by its path
                          in the model: blocks/0/attn/qkv/kernel, embedding/table, ...
<out>/config.json         the run's config (the same file as the run directory's)
<out>/export.json         source run and step, parameter counts, vocabulary size, unknown id, training length
                          (the length the model was built for) and tokenizer name
<out>/pieces.json         the string of every input id, for embedding designs that spell tokens (char_cnn, ...)
<out>/tokenizer/          the tokenizer's own files (what its config's `load(folder)` reads), when it has any

export_run(run_dir, out=None, step=None) -> out      latest (or `step`'s) checkpoint of a run directory
load_exported(out) -> nnx.Module                     the model built from config.json, with the exported arrays
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from research.config import Config, from_dict
from research.model.build import build_model, resolve_model
from research.model.transformer import parameter_counts
from research.training.checkpoint import Checkpointer, ParamsMismatch, named
from research.training.loop import objective_for, validate

WEIGHTS, META, PIECES = "model.safetensors", "export.json", "pieces.json"


class ExportError(RuntimeError):
    """A folder that is not a run directory (or not an export), or a run without the checkpoint asked for."""


def run_config(run_dir: Path) -> Config:
    """The config of a run directory; ExportError when `run_dir` is not one."""
    if not (run_dir / "config.json").is_file():
        raise ExportError(f"{run_dir} is not a run directory (no config.json)")
    return from_dict(Config, json.loads((run_dir / "config.json").read_text()))


def export_run(
    run_dir: str | Path, out: str | Path | None = None, *, step: int | None = None, log=print
) -> Path:
    """Write the export of `run_dir`'s checkpoint at `step` (default: the latest) into `out` (default:
    `<run_dir>/export`) -> out."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    out = Path(out) if out is not None else run_dir / "export"
    step = _pick_step(run_dir, step)
    objective = objective_for(config)
    validate(config, objective)
    inputs = objective.prepare(log)
    model = nnx.eval_shape(lambda: _build(inputs.resolved, inputs.vocab_size, inputs.pieces, inputs.unk_id))
    counts = parameter_counts(model)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), nnx.state(model))
    params = _restore(run_dir, like, step)
    arrays = {name: np.asarray(x) for name, x in named(params).items()}
    out.mkdir(parents=True, exist_ok=True)
    save_file(arrays, out / WEIGHTS, metadata={"step": str(step), "run": str(run_dir.absolute())})
    shutil.copyfile(run_dir / "config.json", out / "config.json")
    meta = {
        "run": str(run_dir.absolute()),
        "step": step,
        "params": counts,
        "arrays": len(arrays),
        "vocab_size": inputs.vocab_size,
        "unk_id": inputs.unk_id,
        "max_len": inputs.resolved.dims.max_len,
        "tokenizer": _save_tokenizer(objective, out),
    }
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    if inputs.resolved.embedding.needs_pieces:
        (out / PIECES).write_text(json.dumps(inputs.pieces))
    log(f"exported step {step} of {run_dir} ({len(arrays)} arrays, {counts['total']:,} parameters) to {out}")
    return out


def _build(resolved, vocab_size: int, pieces, unk_id: int):
    return build_model(resolved, vocab_size=vocab_size, seed=0, pieces=pieces, unk_id=unk_id)


def _pick_step(run_dir: Path, step: int | None) -> int:
    """`step` (default: the latest) when the run has a checkpoint there; ExportError otherwise."""
    folder = run_dir / "checkpoints"
    steps = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
    if not steps:
        raise ExportError(f"{run_dir} has no checkpoint to export (checkpoints/ is empty or missing)")
    if step is not None and step not in steps:
        raise ExportError(f"{run_dir} has no checkpoint at step {step}; steps: {', '.join(map(str, steps))}")
    return steps[-1] if step is None else step


def _restore(run_dir: Path, like, step: int):
    """The parameters of the run's checkpoint at `step`; ExportError when they do not fit the run's config."""
    ckpt = Checkpointer(run_dir / "checkpoints", async_save=False)
    try:
        return ckpt.restore_params(step, like)
    except ParamsMismatch as e:
        raise ExportError(
            f"{run_dir}: the checkpoint at step {step} does not fit config.json ({e})"
        ) from None
    finally:
        ckpt.close()


def _save_tokenizer(objective, out: Path) -> str | None:
    """The tokenizer's name; its files (if it has any) copied to <out>/tokenizer/. None for a synthetic task."""
    tokenizer = getattr(getattr(objective, "data", None), "tokenizer", None)
    if tokenizer is None:
        return None
    folder = out / "tokenizer"
    shutil.rmtree(folder, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        tokenizer.save(Path(tmp))
        if any(Path(tmp).iterdir()):
            shutil.copytree(tmp, folder)
    return tokenizer.name


def load_exported(folder: str | Path) -> nnx.Module:
    """The model of an export folder: built from its config.json and export.json, its state replaced by
    model.safetensors (ExportError naming the first array whose name or shape differs)."""
    folder = Path(folder)
    if not (folder / META).is_file() or not (folder / WEIGHTS).is_file():
        raise ExportError(f"{folder} is not an export (expected {WEIGHTS} and {META})")
    config = from_dict(Config, json.loads((folder / "config.json").read_text()))
    meta = json.loads((folder / META).read_text())
    resolved = resolve_model(config.model, max_len=meta["max_len"], vocab_size=meta["vocab_size"])
    pieces = json.loads((folder / PIECES).read_text()) if (folder / PIECES).is_file() else None
    model = nnx.eval_shape(lambda: _build(resolved, meta["vocab_size"], pieces, meta["unk_id"]))
    graphdef, state = nnx.split(model)
    arrays = load_file(folder / WEIGHTS)
    wanted = named(state)
    for name, x in wanted.items():
        if name not in arrays or arrays[name].shape != tuple(x.shape):
            found = arrays[name].shape if name in arrays else "missing"
            raise ExportError(f"{folder / WEIGHTS}: {name} is {found}, the model expects {tuple(x.shape)}")
    if extra := sorted(set(arrays) - set(wanted)):
        raise ExportError(f"{folder / WEIGHTS}: {extra[0]} is not an array of the model")
    leaves, treedef = jax.tree.flatten(state)
    values = [jnp.asarray(arrays[name], dtype=x.dtype) for name, x in zip(wanted, leaves)]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, values))
