"""Several processes, one run: `jax.distributed.initialize` before any other JAX call.

`scripts/train.py ... --coordinator HOST:PORT --num-processes N --process-id I` (or the environment variables
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) starts process I of N; on SLURM and Cloud TPU pods JAX
detects all three itself (pass nothing but set JAX_DISTRIBUTED=1). On CPU the processes talk through the gloo
collectives. Each process reads only its rows of every training batch (research/data/stream.py), process 0 writes
the run directory's files, and every process takes part in the Orbax checkpoints.
"""

from __future__ import annotations

import os


def initialize(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
):
    """Join the process group if one is described (arguments, then environment); a no-op otherwise."""
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    auto = os.environ.get("JAX_DISTRIBUTED") == "1"
    if coordinator is None and not auto:
        if num_processes not in (None, 1):
            raise ValueError("--num-processes > 1 needs --coordinator HOST:PORT (or JAX_COORDINATOR_ADDRESS)")
        return False
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU backend only; set before it starts
    if auto and coordinator is None:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
    return True
