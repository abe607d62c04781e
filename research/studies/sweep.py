"""Run every run of an experiment's sweep as local processes, skipping finished ones.

Before anything starts, every run's config (the experiment's, with the command line's overrides) is built and
validated, so a typo fails once, naming the run and the field, and `--dry-run` checks it too. A run is finished when
its workdir holds a `summary.json` that parses (written last, atomically); anything else is (re)started, and
`train_and_evaluate` resumes it from its last checkpoint. A run whose directory another process holds (its lock,
research/training/rundir.py) is skipped as running elsewhere. A failed run does not stop the others: it is listed at
the end with the tail of its log, and the sweep exits non-zero.

Runs may depend on each other: a run whose `train.init_from` names another run of the same sweep (a relative
path, e.g. "stage=base") starts only after that run has finished, whatever the order of `add` calls; if that run
fails, its dependants are not started and are listed as failed.

The runs are children in process groups of their own, stopped (SIGTERM, then SIGKILL) when the sweep gets SIGTERM
or SIGINT, and sent SIGTERM by the kernel when the sweep dies any other way (kill -9 included): a stopped sweep
leaves no run behind, and a rerun resumes them.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from research.config import Config, ConfigError, from_dict, init_source, result_differences, to_dict
from research.studies.cli import apply_overrides, parse_overrides
from research.studies.experiment import (
    expand_sweep,
    format_knobs,
    join_arg,
    load_experiment,
    split_target,
    study_name,
)
from research.training.metrics import read_jsonl
from research.training.rundir import load_summary, lock_holder

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
    """The run's config with the overrides applied, as research.config.to_dict (compared by `reuse_saved`)."""
    settings: Config | None = field(default=None, repr=False)
    """The same config as a Config (validated by `plan`)."""

    @property
    def finished(self) -> bool:
        return load_summary(self.workdir) is not None

    @property
    def elsewhere(self) -> int | None:
        """The PID of another process that holds this run's directory, or None."""
        return lock_holder(self.workdir)

    def status(self) -> str:
        records = read_jsonl(self.workdir / "metrics.jsonl")
        if not records:
            return "starting"
        last = records[-1]
        loss = last.get("train/loss")
        total = f"/{self.settings.train.steps}" if self.settings is not None else ""
        return f"step {last['step']}{total}" + (f" loss {loss:.3f}" if isinstance(loss, float) else "")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join((self.workdir / "log.txt").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def plan(target: str, root: str | Path = "runs", extra_args=(), only=()) -> tuple[str, list[Run]]:
    """The study's name and its runs, each config built with the overrides and validated (ConfigError naming the
    run and the field before anything starts). `only`: "knob=value" filters (`select`)."""
    from research.training.loop import validate

    path, arg = split_target(target)
    module = load_experiment(path)
    study = study_name(path, arg)
    overrides = parse_overrides(list(extra_args))
    knobs = expand_sweep(module, arg)
    keep = select(knobs, only)
    runs = [
        Run(format_knobs(k), f"{path}:{join_arg(arg, k)}", Path(root) / study / format_knobs(k))
        for k in knobs
    ]
    workdirs = {r.workdir.absolute(): r for r in runs}
    for run, k in zip(runs, knobs):
        try:
            run.settings = apply_overrides(module.get_config(join_arg(arg, k)), overrides)
            validate(run.settings)
        except ConfigError as e:
            raise ConfigError(f"run {run.name}: {e}") from None
        run.config = to_dict(run.settings)
        init_from = run.settings.train.init_from
        if init_from is not None:
            source = init_source(init_from, run.workdir)
            if source.absolute() in workdirs:
                run.after = source.absolute()
    runs = with_dependencies(runs, keep)
    check_finished(runs)
    return study, runs


def select(knobs: list[dict], only=()) -> list[bool]:
    """Which runs the "knob=value" filters keep: a run is kept when, for every knob named, its value is one of
    those given (`seed=1 seed=2 task=bucket_sort`: seeds 1 and 2 of bucket_sort). ConfigError naming the valid
    knobs or values when a filter matches nothing, so a typo never runs an empty or whole sweep."""
    wanted: dict[str, set[str]] = {}
    for item in only:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--only {item!r}: expected knob=value")
        wanted.setdefault(key, set()).add(value)
    for key, values in wanted.items():
        seen = sorted({str(k[key]) for k in knobs if key in k})
        if not seen:
            names = sorted({n for k in knobs for n in k})
            raise ConfigError(f"--only {key}: not a knob of this sweep; its knobs: {', '.join(names)}")
        if missing := sorted(values - set(seen)):
            raise ConfigError(f"--only {key}={missing[0]}: no such run; {key} takes {', '.join(seen)}")
    return [all(str(k.get(key)) in values for key, values in wanted.items()) for k in knobs]


def with_dependencies(runs: list[Run], keep: list[bool]) -> list[Run]:
    """The kept runs and, in sweep order, every run a kept run waits for (its train.init_from), transitively."""
    after = {r.workdir.absolute(): r.after for r in runs}
    needed = {r.workdir.absolute() for r, k in zip(runs, keep, strict=True) if k}
    stack = list(needed)
    while stack:
        source = after[stack.pop()]
        if source is not None and source not in needed:
            needed.add(source)
            stack.append(source)
    return [r for r in runs if r.workdir.absolute() in needed]


def saved_differences(saved: dict, config) -> list[str]:
    """The fields where a saved run's config (as in its summary; a field added since takes its default) differs
    from `config` in what can change results, or the reason it does not read back."""
    try:
        return result_differences(from_dict(Config, saved), config)
    except (ConfigError, ValueError) as e:
        return [str(e)]


def check_finished(runs: list[Run]) -> None:
    """ConfigError, before anything starts, when finished runs of this sweep's directories were trained with
    another config (an experiment file changed since, or another variant shares the folder): the sweep would skip
    them and the report would present them as this config's. Names the runs, the fields, and the way out."""
    stale = []
    for run in runs:
        summary = load_summary(run.workdir)
        if summary is None or "config" not in summary:
            continue
        if differ := saved_differences(summary["config"], run.settings):
            stale.append(f"{run.name} ({', '.join(differ[:4])}{', ...' if len(differ) > 4 else ''})")
    if stale:
        folder = runs[0].workdir.parent
        raise ConfigError(
            f"{len(stale)} finished run(s) in {folder} were trained with another config than this sweep's: "
            + "; ".join(stale[:5]) + ("; ..." if len(stale) > 5 else "")
            + ". Move them out of the folder (or pass another --root) and rerun; nothing was started"
        )  # fmt: skip


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
        try:
            saved = json.loads(source.read_text())
        except ValueError as e:
            out(f"not reused: {source} (does not parse: {e})")
            continue
        if differ := saved_differences(saved.get("config", {}), run.config):
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
    """The first queued run whose dependency has finished or that has none; a run whose dependency failed is
    returned as ('blocked', run)."""
    for run in todo:
        if run.after is None or load_summary(run.after) is not None:
            return "ready", run
        if run.after in failed:
            return "blocked", run
    return None, None


def _die_with_parent() -> None:  # in the child, before exec: SIGTERM when the sweep dies, however it dies
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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
        cmd, stdout=run.log_file, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd(), start_new_session=True,
        preexec_fn=_die_with_parent,
    )  # fmt: skip
    run.started = time.time()


def stop(runs: list[Run], grace: float = 10.0) -> None:
    """SIGTERM to each running run's process group, then SIGKILL to those still alive after `grace` seconds."""
    alive = [r for r in runs if r.process is not None and r.process.poll() is None]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for r in alive:
            try:
                os.killpg(r.process.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and any(r.process.poll() is None for r in alive):
            time.sleep(0.1)
        alive = [r for r in alive if r.process.poll() is None]
        if not alive:
            return


class Stopped(Exception):
    """The sweep got SIGTERM or SIGINT."""


def _raise_stopped(signum, frame):
    raise Stopped(signal.Signals(signum).name)


class Scheduler:
    """Launches queued runs up to `jobs` at a time, in dependency order, and reaps the finished ones."""

    def __init__(self, runs: list[Run], todo: list[Run], jobs: int, extra_args, out):
        self.total, self.jobs, self.extra, self.out = len(runs), jobs, list(extra_args), out
        self.todo, self.running, self.failed = deque(todo), [], []
        self.failed_dirs: set[Path] = set()
        self.done = len(runs) - len(todo)
        self.started, self.durations = time.time(), []  # durations: of the runs this sweep finished

    def launch(self) -> None:
        while self.todo and len(self.running) < self.jobs:
            state, run = _next_launchable(self.todo, self.failed_dirs)
            if state is None:
                return  # every queued run waits for a running one
            self.todo.remove(run)
            if state == "blocked":
                self._failed(run, -1, f"not started: {run.after.name} failed")
                continue
            _launch(run, self.extra)
            self.running.append(run)
            self.out(f"[{self.done}/{self.total}] start {run.name}")

    def reap(self) -> None:
        for run in list(self.running):
            code = run.process.poll()
            if code is None:
                continue
            self.running.remove(run)
            run.log_file.close()
            took = time.time() - run.started
            if code == 0 and run.finished:
                self.done += 1
                self.durations.append(took)
                self.out(f"[{self.done}/{self.total}] done  {run.name} ({took:.0f} s) | {self.eta()}")
            else:
                self._failed(run, code, f"exit {code}, {took:.0f} s")

    def _failed(self, run: Run, code: int, why: str) -> None:
        self.done += 1
        run.returncode = code
        self.failed.append(run)
        self.failed_dirs.add(run.workdir.absolute())
        self.out(f"[{self.done}/{self.total}] FAIL  {run.name} ({why})")

    def status(self) -> str:
        running = "; ".join(f"{r.name}: {r.status()}" for r in self.running)
        return f"[{self.done}/{self.total}] running: {running} | {self.eta()}"

    def eta(self) -> str:
        """'elapsed E, ETA R': R spreads the queued runs and the rest of the running ones, each taken to last the
        mean of the runs this sweep finished, over the parallel slots they can fill; no ETA before one finished."""
        now = time.time()
        elapsed = f"elapsed {_duration(now - self.started)}"
        if not self.durations:
            return elapsed
        mean = statistics.fmean(self.durations)
        left = mean * len(self.todo) + sum(max(mean - (now - r.started), 0.0) for r in self.running)
        slots = max(1, min(self.jobs, len(self.todo) + len(self.running)))
        return f"{elapsed}, ETA {_duration(left / slots)}"


def _duration(seconds: float) -> str:
    """42s, 5m10s, 2h03m."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    return f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def run_sweep(
    target: str, *, jobs: int = 1, root: str | Path = "runs", extra_args=(), out=print, reuse=(), only=()
) -> int:
    """Returns the number of failed runs. `reuse`: folders of saved run summaries to adopt (see `reuse_saved`);
    `only`: "knob=value" filters (`select`). Raises Stopped (after stopping every run it started) on SIGTERM or
    SIGINT."""
    study, runs = plan(target, root, extra_args, only)
    for folder in reuse:
        reuse_saved(runs, folder, out)
    elsewhere = [r for r in runs if not r.finished and r.elsewhere]
    todo = [r for r in runs if not r.finished and r not in elsewhere]
    for r in elsewhere:
        out(f"skip  {r.name}: running elsewhere (pid {r.elsewhere})")
    out(f"{study}: {len(runs)} runs, {len(runs) - len(todo) - len(elsewhere)} already finished, "
        f"{len(elsewhere)} running elsewhere, {len(todo)} to run, {jobs} at a time")  # fmt: skip
    scheduler, start = Scheduler(runs, todo, jobs, extra_args, out), time.time()
    previous = {s: signal.signal(s, _raise_stopped) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        last_status = 0.0
        while scheduler.todo or scheduler.running:
            scheduler.launch()
            if not scheduler.running:
                break
            time.sleep(0.5)
            scheduler.reap()
            if scheduler.running and time.time() - last_status > 15:
                last_status = time.time()
                out(scheduler.status())
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stop(scheduler.running)
    out(f"{study}: {len(runs) - len(scheduler.failed) - len(elsewhere)}/{len(runs)} runs finished in "
        f"{time.time() - start:.0f} s")  # fmt: skip
    for run in scheduler.failed:
        out(f"\nFAILED {run.name} (exit {run.returncode}); last lines of {run.workdir / 'log.txt'}:")
        out(run.log_tail())
    return len(scheduler.failed)
