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


def make_mesh(devices=None) -> Mesh:
    devices = np.asarray(devices if devices is not None else jax.devices())
    return Mesh(devices.reshape(-1), ("data",))


def check_batch(batch_size: int, mesh: Mesh, *, field: str = "data.batch_size") -> None:
    n = mesh.shape["data"]
    if batch_size % n:
        raise ConfigError(
            f"{field}: expected a multiple of the {n} devices of the data axis, got {batch_size}"
        )


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(arrays, mesh: Mesh):
    """Host numpy arrays [B, ...] (the global batch) -> device arrays sharded over `data` on axis 0."""
    return jax.device_put(arrays, NamedSharding(mesh, P("data")))
