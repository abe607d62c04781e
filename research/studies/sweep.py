"""Run every run of an experiment's sweep as local processes, skipping finished ones.

A run is finished when its workdir holds `summary.json` (written last, atomically); anything else is (re)started,
and `train_and_evaluate` resumes it from its last checkpoint. A failed run does not stop the others: it is listed
at the end with the tail of its log, and the sweep exits non-zero.

Runs may depend on each other: a run whose `train.init_from` names another run of the same sweep (a relative
path, e.g. "stage=base") starts only after that run has finished, whatever the order of `add` calls; if that run
fails, its dependants are not started and are listed as failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from research.config import Config, ConfigError, differences, from_dict, init_source, to_dict
from research.studies.experiment import (
    expand_sweep,
    format_knobs,
    join_arg,
    load_experiment,
    split_target,
    study_name,
)
from research.training.metrics import read_jsonl

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    name: str
    arg: str
    workdir: Path
    process: subprocess.Popen | None = None
    returncode: int | None = None
    started: float = 0.0
    log_file: object = field(default=None, repr=False)
    after: Path | None = None
    """The workdir of a run of this sweep that must finish first (this run's train.init_from)."""
    config: dict = field(default_factory=dict, repr=False)
    """The run's resolved config (research.config.to_dict), compared by `reuse_saved`."""

    @property
    def finished(self) -> bool:
        return (self.workdir / "summary.json").exists()

    def status(self) -> str:
        records = read_jsonl(self.workdir / "metrics.jsonl")
        if not records:
            return "starting"
        last = records[-1]
        loss = last.get("train/loss")
        return f"step {last['step']}" + (f" loss {loss:.3f}" if isinstance(loss, float) else "")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join((self.workdir / "log.txt").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def plan(target: str, root: str | Path = "runs") -> tuple[str, list[Run]]:
    path, arg = split_target(target)
    module = load_experiment(path)
    study = study_name(path, arg)
    knobs = expand_sweep(module, arg)
    runs = [
        Run(format_knobs(k), f"{path}:{join_arg(arg, k)}", Path(root) / study / format_knobs(k))
        for k in knobs
    ]
    workdirs = {r.workdir.absolute(): r for r in runs}
    for run, k in zip(runs, knobs):
        config = module.get_config(join_arg(arg, k))
        run.config = to_dict(config)
        init_from = config.train.init_from
        if init_from is not None:
            source = init_source(init_from, run.workdir)
            if source.absolute() in workdirs:
                run.after = source.absolute()
    return study, runs


def reuse_saved(runs: list[Run], folder: str | Path, out=print) -> int:
    """Adopt saved summaries (a report's results/<study>/runs/<run>.json) for unfinished runs whose config is
    identical, field for field, to the one this sweep would train: e.g. the seed-0 runs of `:small` inside the full
    study. The saved config is read back with `from_dict`, so a field added after the run was saved takes its
    default (new options default to the old behaviour). The adopted summary.json records `reused_from`; a saved
    run whose config differs is named with the fields that differ and is trained as usual. Returns the number
    adopted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--reuse: {folder} is not a folder of saved run summaries")
    adopted = 0
    for run in runs:
        source = folder / f"{run.name}.json"
        if run.finished or not source.exists():
            continue
        saved = json.loads(source.read_text())
        try:
            differ = differences(from_dict(Config, saved.get("config", {})), run.config)
        except ConfigError as e:
            differ = [str(e)]
        if differ:
            out(f"not reused: {source} (config differs in {', '.join(differ[:5])})")
            continue
        run.workdir.mkdir(parents=True, exist_ok=True)
        tmp = run.workdir / "summary.json.tmp"
        tmp.write_text(json.dumps({**saved, "reused_from": str(source)}, indent=1, sort_keys=True))
        tmp.replace(run.workdir / "summary.json")
        adopted += 1
        out(f"reused: {run.name} <- {source}")
    return adopted


def _next_launchable(todo: deque, failed: set[Path]):
    """The first queued run whose dependency has finished (its summary.json exists) or that has none; a run whose
    dependency failed is returned as ('blocked', run)."""
    for run in todo:
        if run.after is None or (run.after / "summary.json").exists():
            return "ready", run
        if run.after in failed:
            return "blocked", run
    return None, None


def _launch(run: Run, extra_args: list[str]) -> None:
    run.workdir.mkdir(parents=True, exist_ok=True)
    run.log_file = open(run.workdir / "log.txt", "a")  # noqa: SIM115  (closed when the run ends)
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "train.py"),
        run.arg,
        "--workdir",
        str(run.workdir),
        *extra_args,
    ]
    run.log_file.write(f"$ {' '.join(cmd)}\n")
    run.log_file.flush()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    run.process = subprocess.Popen(
        cmd, stdout=run.log_file, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd()
    )
    run.started = time.time()


def run_sweep(
    target: str, *, jobs: int = 1, root: str | Path = "runs", extra_args=(), out=print, reuse=()
) -> int:
    """Returns the number of failed runs. `reuse`: folders of saved run summaries to adopt (see `reuse_saved`)."""
    study, runs = plan(target, root)
    for folder in reuse:
        reuse_saved(runs, folder, out)
    todo = deque(r for r in runs if not r.finished)
    skipped = len(runs) - len(todo)
    out(f"{study}: {len(runs)} runs, {skipped} already finished, {len(todo)} to run, {jobs} at a time")
    running: list[Run] = []
    failed: list[Run] = []
    done = skipped
    last_status = 0.0
    start = time.time()
    failed_dirs: set[Path] = set()
    while todo or running:
        while todo and len(running) < jobs:
            state, run = _next_launchable(todo, failed_dirs)
            if state is None:
                break  # every queued run waits for a running one
            todo.remove(run)
            if state == "blocked":
                done += 1
                run.returncode = -1
                failed.append(run)
                failed_dirs.add(run.workdir.absolute())
                out(f"[{done}/{len(runs)}] FAIL  {run.name} (not started: {run.after.name} failed)")
                continue
            _launch(run, list(extra_args))
            running.append(run)
            out(f"[{done}/{len(runs)}] start {run.name}")
        if not todo and not running:
            break
        time.sleep(0.5)
        for run in list(running):
            code = run.process.poll()
            if code is None:
                continue
            running.remove(run)
            run.log_file.close()
            run.returncode = code
            done += 1
            took = time.time() - run.started
            if code == 0 and run.finished:
                out(f"[{done}/{len(runs)}] done  {run.name} ({took:.0f} s)")
            else:
                failed.append(run)
                failed_dirs.add(run.workdir.absolute())
                out(f"[{done}/{len(runs)}] FAIL  {run.name} (exit {code}, {took:.0f} s)")
        if running and time.time() - last_status > 15:
            last_status = time.time()
            out(f"[{done}/{len(runs)}] running: " + "; ".join(f"{r.name}: {r.status()}" for r in running))
    out(f"{study}: {len(runs) - len(failed)}/{len(runs)} runs finished in {time.time() - start:.0f} s")
    for run in failed:
        out(f"\nFAILED {run.name} (exit {run.returncode}); last lines of {run.workdir / 'log.txt'}:")
        out(run.log_tail())
    return len(failed)
