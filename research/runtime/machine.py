"""What a run ran on, for its records: git commit, library versions, devices, CPU, cores, huge pages, native kernels."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from research.runtime import hostmem, native


def run_info() -> dict:
    """{"git_sha", "versions", "device", "machine"} of this process (written into summary.json and the benchmark)."""
    import flax
    import jax
    import numpy as np
    import optax
    import orbax.checkpoint

    device = jax.devices()[0]
    return {
        "git_sha": git_sha(),
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "orbax": orbax.checkpoint.__version__,
            "numpy": np.__version__,
        },
        "device": {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count()},
        "machine": {
            "cpu": cpu_name(),
            "cores": cores(),
            "huge_pages": hostmem.active(),
            "native_kernels": native.state(),
        },
    }


def git_sha() -> str:
    """The commit of this checkout, or "unknown" outside a git work tree."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return sha or "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
