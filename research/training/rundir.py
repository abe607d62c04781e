"""The run directory: `config.json` (checked against the config of a rerun), `command.txt`, `metrics.jsonl`,
`checkpoints/` and, written last and atomically, `summary.json`, whose presence means the run finished.

One writer per run directory: the primary process holds an advisory lock (`fcntl.flock` on `.lock`) from before it
writes anything until the run ends; the kernel releases it however the process ends (kill -9 included). A second
process on the same directory stops at once, naming the holder's PID; a sweep skips a locked run as running
elsewhere. Only the primary process (process 0) writes these files; every process reads them.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import sys
from pathlib import Path

from research.config import Config, ConfigError, from_dict, result_differences, to_dict
from research.runtime.mesh import is_primary
from research.training.metrics import atomic_write_json


def check_config(config: Config, workdir: Path) -> None:
    """Refuse a run directory that holds a run of another config (its config.json)."""
    config_path = workdir / "config.json"
    if config_path.exists():
        previous = from_dict(Config, json.loads(config_path.read_text()))
        differ = result_differences(previous, config)
        if differ:
            raise ConfigError(
                f"{workdir} holds a run with a different config ({config_path}: {', '.join(differ[:5])} differ); "
                "use another --workdir, delete it, or pass the saved values to continue it"
            )


def prepare_workdir(config: Config, workdir: Path) -> None:
    """Create `workdir`, refuse one that holds a run of another config, and record the config and the command."""
    workdir.mkdir(parents=True, exist_ok=True)
    check_config(config, workdir)
    if not is_primary():
        return
    atomic_write_json(workdir / "config.json", to_dict(config))
    with open(workdir / "command.txt", "a") as f:
        f.write(shlex.join([sys.executable, *sys.argv]) + "\n")


def write_summary(workdir: Path, summary: dict) -> None:
    """summary.json, atomically, from the primary process only."""
    if is_primary():
        atomic_write_json(workdir / "summary.json", summary)


def load_summary(workdir) -> dict | None:
    """The run's summary, or None when it has none or it does not parse (a run that did not finish writing it)."""
    try:
        summary = json.loads((Path(workdir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


LOCK = ".lock"


class RunLocked(RuntimeError):
    """Another live process writes this run directory."""


class RunLock:
    """The run directory's advisory lock, for `with`: taken (non-blocking) on entry, released on exit."""

    def __init__(self, workdir: Path):
        self.path = Path(workdir) / LOCK
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise RunLocked(
                f"{self.path.parent} is being written by another process (pid {pid or '?'}); wait for it to end or "
                "stop it, or use another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def lock_holder(workdir: Path) -> int | None:
    """The PID of the live process that holds the run's lock, or None when none does."""
    path = Path(workdir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None
