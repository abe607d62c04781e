"""Fault injection: kill -9 a training run at random moments, resume it each time, and check that nothing was lost.

`kill_and_resume(target, workdir, kills=N, extra=overrides)` starts `scripts/train.py TARGET --workdir WORKDIR ...`, waits until the run
has logged a new step since the last kill (so every kill lands at a random point of real progress: inside a step,
a metrics write or an asynchronous checkpoint save), sleeps a random fraction of a second, sends SIGKILL, and starts
it again, N times; then lets it finish. `compare_runs(a, b)` checks that the final parameters and optimizer state
(the last checkpoint) are bitwise equal and that metrics.jsonl holds every logged step exactly once.

    python scripts/fault_injection.py experiments/pe_extrapolation.py:runlocal --kills 20 \
        --train.steps 60 --train.checkpoint_every 1 --train.log_every 1
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from research.training.metrics import read_jsonl

REPO = Path(__file__).resolve().parents[2]


def _start(target: str, workdir: Path, log, extra=()) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "scripts" / "train.py"), target, "--workdir", str(workdir), *extra]
    return subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1")
    )


def _last_step(workdir: Path) -> int:
    records = read_jsonl(workdir / "metrics.jsonl")
    return records[-1]["step"] if records else 0


def run(target: str, workdir: str | Path, *, extra=(), timeout: float = 900) -> None:
    """One uninterrupted run (the reference)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "log.txt", "a") as log:
        proc = _start(target, workdir, log, extra)
        if proc.wait(timeout=timeout) != 0:
            raise RuntimeError(f"reference run failed; see {workdir / 'log.txt'}")


def kill_and_resume(
    target: str,
    workdir: str | Path,
    *,
    kills: int,
    extra=(),
    seed: int = 0,
    max_delay: float = 0.5,
    timeout: float = 900,
) -> list[int]:
    """Kill the run `kills` times at random moments and resume it; returns the last logged step before each kill."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    killed_at: list[int] = []
    deadline = time.time() + timeout
    with open(workdir / "log.txt", "a") as log:
        while True:
            seen = _last_step(workdir)
            proc = _start(target, workdir, log, extra)
            if len(killed_at) >= kills:
                if proc.wait(timeout=max(1.0, deadline - time.time())) != 0:
                    raise RuntimeError(f"the final resume failed; see {workdir / 'log.txt'}")
                return killed_at
            while proc.poll() is None and _last_step(workdir) <= seen:  # wait for new progress
                if time.time() > deadline:
                    proc.kill()
                    raise TimeoutError(f"no progress in {workdir}")
                time.sleep(0.02)
            if proc.poll() is not None:  # finished before we could kill it: nothing left to interrupt
                if proc.returncode != 0:
                    raise RuntimeError(f"run failed; see {workdir / 'log.txt'}")
                return killed_at
            time.sleep(rng.uniform(0.0, max_delay))
            killed_at.append(_last_step(workdir))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            log.write(f"\n### killed (SIGKILL) after step {killed_at[-1]}\n")
            log.flush()


def final_state(workdir: str | Path) -> list[np.ndarray]:
    """Leaves of the last checkpoint (parameters and optimizer state), read with Orbax."""
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(Path(workdir, "checkpoints").absolute())
    try:
        step = manager.latest_step()
        restored = manager.restore(step, args=ocp.args.StandardRestore())
    finally:
        manager.close()
    return [np.asarray(x) for x in restored["leaves"]]


def compare_runs(reference: str | Path, resumed: str | Path) -> dict:
    """{'bitwise_equal', 'steps_ok', 'steps'}: final state equal bit for bit; metrics steps unique and complete."""
    a, b = final_state(reference), final_state(resumed)
    equal = len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))
    ref_steps = [r["step"] for r in read_jsonl(Path(reference) / "metrics.jsonl")]
    steps = [r["step"] for r in read_jsonl(Path(resumed) / "metrics.jsonl")]
    return {"bitwise_equal": bool(equal), "steps_ok": steps == ref_steps, "steps": steps}
