"""Where a run executes: the device mesh and data sharding (mesh.py), several processes through jax.distributed
(distributed.py), huge pages for host memory (hostmem.py), native C++ CPU kernels built on first use (native.py),
and what a run records about its machine (machine.py)."""
