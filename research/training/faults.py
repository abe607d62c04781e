"""Fault injection: hit a training run with faults at random moments, let it resume each time, and check that nothing
was lost.

`inject(target, workdir, faults=N, kinds=KINDS)` starts `scripts/train.py TARGET --workdir WORKDIR ...`, waits until
the run has logged a new step since the last fault (so every fault lands at a random point of real progress: inside a
step, a metrics write or an asynchronous checkpoint save), sleeps a random fraction of a second, and injects one
fault of a random kind; then starts the run again, N times, and lets it finish:

    kill       SIGKILL the run
    truncate   SIGKILL it, then truncate a data file of its latest checkpoint (a full disk, a copy cut short): the
               run must move that checkpoint aside and resume from the one before
    writer     start a second training process on the same run directory: it must stop at once with an error
               naming the holder, leaving the first untouched; then SIGKILL the first
    sweep      the run is started by a launcher process, as a sweep starts it; SIGKILL the launcher: the kernel
               must stop the run (it dies with its sweep), which is then resumed

`compare_runs(a, b)` checks that the final parameters and optimizer state (the last checkpoint) are bitwise equal and
that metrics.jsonl holds every logged step exactly once.

    python scripts/fault_injection.py experiments/pe_extrapolation.py:runlocal --faults 20 \\
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
KINDS = ("kill", "truncate", "writer", "sweep")
LAUNCHER = (
    "import subprocess, sys, time\n"
    "from research.studies.sweep import _die_with_parent\n"
    "subprocess.Popen(sys.argv[1:], start_new_session=True, preexec_fn=_die_with_parent)\n"
    "time.sleep(3600)\n"
)


def _command(target: str, workdir: Path, extra=()) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "train.py"), target, "--workdir", str(workdir), *extra]


def _start(target: str, workdir: Path, log, extra=(), *, launcher: bool = False) -> subprocess.Popen:
    command = _command(target, workdir, extra)
    if launcher:  # a parent process that starts the run as a sweep does, and does nothing else
        command = [sys.executable, "-c", LAUNCHER, *command]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


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


def inject(
    target: str, workdir: str | Path, *, faults: int, kinds=KINDS, extra=(), seed: int = 0, max_delay: float = 0.5,
    timeout: float = 900,
) -> list[tuple[str, int]]:  # fmt: skip
    """Hit the run with `faults` faults of random `kinds` and resume it each time -> [(kind, last logged step
    before the fault)]."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    order = [
        k for _ in range(-(-faults // len(kinds))) for k in rng.sample(list(kinds), len(kinds))
    ]  # each kind
    done: list[tuple[str, int]] = []  # in every round of len(kinds) faults, in a random order
    deadline = time.time() + timeout
    with open(workdir / "log.txt", "a") as log:
        while True:
            seen = _last_step(workdir)
            kind = order[len(done)] if len(done) < faults else None
            proc = _start(target, workdir, log, extra, launcher=kind == "sweep")
            if kind is None:
                if proc.wait(timeout=max(1.0, deadline - time.time())) != 0:
                    raise RuntimeError(f"the final resume failed; see {workdir / 'log.txt'}")
                return done
            if not _await_progress(proc, workdir, seen, deadline):
                return done  # finished before a fault could land: nothing left to interrupt
            time.sleep(rng.uniform(0.0, max_delay))
            done.append((kind, _last_step(workdir)))
            FAULTS[kind](proc, target, workdir, log, extra)
            log.write(f"\n### fault: {kind} after step {done[-1][1]}\n")
            log.flush()


def _await_progress(proc, workdir: Path, seen: int, deadline: float) -> bool:
    """Wait for a step logged after `seen`; False when the run finished first."""
    while proc.poll() is None and _last_step(workdir) <= seen:
        if time.time() > deadline:
            proc.kill()
            raise TimeoutError(f"no progress in {workdir}")
        time.sleep(0.02)
    if proc.poll() is not None:
        if proc.returncode != 0:
            raise RuntimeError(f"run failed; see {workdir / 'log.txt'}")
        return False
    return True


def _kill(proc, *_):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _truncate(proc, target, workdir: Path, log, extra):
    _kill(proc)
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    if len(steps) < 2:  # no earlier checkpoint to fall back to: this fault is a plain kill
        return
    files = [
        p for p in (workdir / "checkpoints" / str(steps[-1])).rglob("*") if p.is_file() and "/d/" in str(p)
    ]
    biggest = max(files, key=lambda p: p.stat().st_size)
    with open(biggest, "r+b") as f:
        f.truncate(biggest.stat().st_size // 2)


def _second_writer(proc, target, workdir: Path, log, extra):
    second = subprocess.run(_command(target, workdir, extra), capture_output=True, text=True, timeout=300)
    if second.returncode == 0 or "is being written by another process" not in second.stderr:
        raise RuntimeError(
            f"a second writer was not refused: exit {second.returncode}, {second.stderr[-500:]}"
        )
    if proc.poll() is not None:
        raise RuntimeError("the first writer stopped while the second was refused")
    _kill(proc)


def _kill_launcher(proc, target, workdir: Path, log, extra):
    _kill(proc)  # the launcher; the kernel sends the run SIGTERM
    deadline = time.time() + 60
    while time.time() < deadline:
        pattern = f"scripts/train.py .*--workdir {workdir}( |$)"
        out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
        if not out.split():
            return
        time.sleep(0.1)
    raise RuntimeError(f"the run of {workdir} outlived its launcher")


FAULTS = {"kill": _kill, "truncate": _truncate, "writer": _second_writer, "sweep": _kill_launcher}


def final_state(workdir: str | Path) -> list[np.ndarray]:
    """Arrays of the last checkpoint (named parameters and optimizer state), read with Orbax."""
    from research.training.checkpoint import read_checkpoint

    return [np.asarray(x) for x in read_checkpoint(Path(workdir, "checkpoints")).values()]


def compare_runs(reference: str | Path, resumed: str | Path) -> dict:
    """{'bitwise_equal', 'steps_ok', 'steps'}: final state equal bit for bit; metrics steps unique and complete."""
    a, b = final_state(reference), final_state(resumed)
    equal = len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))
    ref_steps = [r["step"] for r in read_jsonl(Path(reference) / "metrics.jsonl")]
    steps = [r["step"] for r in read_jsonl(Path(resumed) / "metrics.jsonl")]
    return {"bitwise_equal": bool(equal), "steps_ok": steps == ref_steps, "steps": steps}


def kill_and_resume(
    target: str, workdir: str | Path, *, kills: int, extra=(), seed: int = 0, **options
) -> list[int]:
    """SIGKILL only (`inject` with kind "kill") -> the last logged step before each kill."""
    return [step for _, step in inject(target, workdir, faults=kills, kinds=("kill",), extra=extra, seed=seed,
                                       **options)]  # fmt: skip
