"""Device mesh and data sharding: one `data` axis over every device (jit + NamedSharding, the successor of pmap).

We use `jax.jit` with `NamedSharding`s rather than `shard_map`: the batch is laid out over the `data` axis, the
parameters are replicated, and XLA inserts the gradient all-reduce itself, so the same step function runs on one CPU,
eight simulated devices or a pod without a per-device code path.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from research.config import ConfigError


def make_mesh(devices=None, *, model: int = 1) -> Mesh:
    """A ("data", "model") mesh over `devices` (default: every device of every process); `model` devices per group
    share the vocabulary-sharded embedding table and readout (see shard_params), the rest is data parallel."""
    devices = np.asarray(devices if devices is not None else jax.devices()).reshape(-1)
    if model < 1 or len(devices) % model:
        raise ConfigError(f"train.model_axis: expected a divisor of the {len(devices)} devices, got {model}")
    return Mesh(devices.reshape(-1, model), ("data", "model"))


def vocab_spec(path, leaf, mesh: Mesh) -> P:
    """Sharding of one parameter (or optimizer-state leaf shaped like it): the embedding design's `table` [V, E]
    over the vocabulary rows, its `readout` [E, V] over the vocabulary columns, on the `model` axis; the rest (and
    a vocabulary not divisible by the axis) replicated."""
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    model = mesh.shape["model"]
    if model == 1 or "embedding" not in names or getattr(leaf, "ndim", 0) != 2:
        return P()
    if names[-1] == "table" or (len(names) > 1 and names[-2] == "table"):
        return P("model", None) if leaf.shape[0] % model == 0 else P()
    if names[-1] == "readout" or (len(names) > 1 and names[-2] == "readout"):
        return P(None, "model") if leaf.shape[1] % model == 0 else P()
    return P()


def shard_params(tree, mesh: Mesh):
    """Parameters or optimizer state onto the mesh: replicated, except the vocabulary-sharded embedding tensors."""
    if mesh.shape["model"] == 1:
        return replicate(tree, mesh)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jax.device_put(x, NamedSharding(mesh, vocab_spec(path, x, mesh))), tree
    )


def check_batch(batch_size: int, mesh: Mesh, *, field: str = "data.batch_size") -> None:
    n = mesh.shape["data"]
    if batch_size % n:
        raise ConfigError(
            f"{field}: expected a multiple of the {n} devices of the data axis, got {batch_size}"
        )


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(arrays, mesh: Mesh, *, local: bool = False):
    """Host numpy arrays -> device arrays sharded over `data` on axis 0.

    One process: `arrays` are the global batch [B, ...]. Several processes (jax.distributed): with local=False every
    process passes the same global batch and keeps its own rows; with local=True each passes only its own rows
    [B / process_count, ...] (what research/data/stream.train_batch returns for its process_index), and the global
    array is assembled without any process holding the whole batch."""
    sharding = NamedSharding(mesh, P("data"))
    if jax.process_count() == 1:
        return jax.device_put(arrays, sharding)

    def assemble(x):
        x = np.asarray(x)
        if not local:
            rows = x.shape[0] // jax.process_count()
            x = x[jax.process_index() * rows : (jax.process_index() + 1) * rows]
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(assemble, arrays)


def to_host(x) -> np.ndarray:
    """A replicated (or fully addressable) device array as numpy, on any process."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    return np.asarray(x.addressable_data(0))


def is_primary() -> bool:
    """True on the process that writes files (metrics, summaries): process 0."""
    return jax.process_index() == 0
