"""A run's records: metrics.jsonl (the source of truth), TensorBoard event files and, optionally, Weights & Biases;
and the terminal progress bar of the training steps.

metrics.jsonl holds one JSON object per logged step, append-only, safe to resume. On resume from step s the writer
first drops records with step > s (they came from the part of the killed run that the checkpoint does not hold and
will be recomputed identically), so the file never holds duplicates. `open_tracker` fans every record out to each
writer the config asks for (`Tracker`), so TensorBoard and W&B see exactly the records of metrics.jsonl.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import statistics
import time
from pathlib import Path

TENSORBOARD = "tensorboard"
"""The run directory's folder of event files: `tensorboard --logdir runs/<study>` shows each run as
`<run>/tensorboard`."""


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file and rename, so readers never see a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(x):
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def read_jsonl(path) -> list[dict]:
    """Records of a metrics file; a torn last line (killed mid-write) is ignored."""
    records = []
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


class MetricsWriter:
    def __init__(self, path, *, resume_step: int):
        self.path = Path(path)
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a")  # noqa: SIM115  (closed in close())

    def write(self, step: int, metrics: dict) -> None:
        record = {"step": int(step)}
        for key, value in metrics.items():
            value = float(value)
            record[key] = value if math.isfinite(value) else str(value)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class NullWriter:
    """The metrics writer of every process but the primary one: writes nothing."""

    def write(self, step: int, metrics: dict) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardWriter:
    """TensorBoard event files in `logdir`, one per session (start or resume), each record one event of scalars
    (float32, TensorBoard's precision), on disk when `write` returns, as metrics.jsonl's lines are.

    A session resumed from step s starts with a SessionLog START at step s + 1, tensorboardX SummaryWriter's
    `purge_step`: TensorBoard then hides the earlier files' events of steps > s, so a resumed run shows each step
    once. tensorboardX's EventsWriter rather than its SummaryWriter: the latter writes from a queue (events still
    queued at a kill would be missing) and names files to the second (a session started in the same second as the
    previous one would overwrite its file)."""

    def __init__(self, logdir, *, resume_step: int):
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        logdir = Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        session = len(list(logdir.glob("events.out.tfevents.*")))  # TensorBoard reads files in name order
        self._writer = EventsWriter(str(logdir / "events"), filename_suffix=f".{session:04d}")
        start = SessionLog(status=SessionLog.START)
        self._writer.write_event(Event(wall_time=time.time(), step=resume_step + 1, session_log=start))
        self._writer.flush()

    def write(self, step: int, metrics: dict) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=key, simple_value=float(value)) for key, value in metrics.items()]
        self._writer.write_event(Event(wall_time=time.time(), step=int(step), summary=Summary(value=values)))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbWriter:
    """The records sent to a Weights & Biases run (train.wandb), its files in <run>/wandb/. The W&B run id is
    drawn once and kept in <run>/wandb/id, so a resumed run continues the same W&B run (resume="allow"; steps
    W&B has already seen are dropped by W&B, and a resumed run recomputes them identically anyway)."""

    def __init__(self, workdir, *, project: str, mode: str, config: dict):
        import wandb  # optional dependency, imported only when enabled

        workdir = Path(workdir).absolute()
        (workdir / "wandb").mkdir(parents=True, exist_ok=True)
        id_file = workdir / "wandb" / "id"
        if not id_file.exists():
            atomic_write_text(id_file, secrets.token_hex(8))
        self._run = wandb.init(
            project=project, mode=mode, dir=str(workdir), id=id_file.read_text().strip(), resume="allow",
            name=workdir.name, group=workdir.parent.name, config=config,
            settings=wandb.Settings(console="off"),  # the run's stdout stays ours (log lines, progress bar)
        )  # fmt: skip

    def write(self, step: int, metrics: dict) -> None:
        self._run.log({key: float(value) for key, value in metrics.items()}, step=int(step))

    def close(self) -> None:
        self._run.finish()


class Tracker:
    """Several writers as one: each record goes to every writer, in order; `close` closes them all."""

    def __init__(self, writers: list):
        self.writers = writers

    def write(self, step: int, metrics: dict) -> None:
        for writer in self.writers:
            writer.write(step, metrics)

    def close(self) -> None:
        with contextlib.ExitStack() as stack:  # every writer closed, even when one fails
            for writer in self.writers:
                stack.callback(writer.close)


def open_tracker(config, workdir, *, resume_step: int) -> Tracker:
    """The writers of a run that resumes from `resume_step` (0: a fresh start): metrics.jsonl, then TensorBoard
    (train.tensorboard) and W&B (train.wandb) when there are steps left to train."""
    from research.config import to_dict

    t, workdir = config.train, Path(workdir)
    tracker = Tracker([MetricsWriter(workdir / "metrics.jsonl", resume_step=resume_step)])
    try:
        if resume_step < t.steps and t.tensorboard:
            tracker.writers.append(TensorBoardWriter(workdir / TENSORBOARD, resume_step=resume_step))
        if resume_step < t.steps and t.wandb is not None:
            wandb = WandbWriter(workdir, project=t.wandb, mode=t.wandb_mode, config=to_dict(config))
            tracker.writers.append(wandb)
    except BaseException:  # e.g. W&B failing to start: the writers already open are closed
        tracker.close()
        raise
    return tracker


@contextlib.contextmanager
def progress_bar(total: int, start: int, *, enabled: bool):
    """A rich progress bar of the training steps (step/total, steps/s, elapsed, ETA) -> a function step -> None
    that moves it; a no-op when not `enabled` (stdout not a terminal: the log lines are the progress there). While
    it shows, whatever the run prints goes above it."""
    if not enabled:
        yield lambda step: None
        return
    import rich.progress as rp

    columns = (
        rp.TextColumn("train"), rp.BarColumn(), rp.MofNCompleteColumn(), rp.TextColumn("{task.fields[rate]}"),
        rp.TimeElapsedColumn(), rp.TextColumn("ETA"), rp.TimeRemainingColumn(),
    )  # fmt: skip
    with rp.Progress(*columns) as bar:
        task = bar.add_task("train", total=total, completed=start, rate="")

        def advance(step: int) -> None:
            speed = bar.tasks[task].speed  # over this session's recent steps only
            bar.update(task, completed=step, rate=f"{speed:.2f} steps/s" if speed else "")

        yield advance


def steady_throughput(path, key: str) -> float | None:
    """Median of a logged throughput over the run, leaving out the first logged window (it includes compilation)."""
    values = [r[key] for r in read_jsonl(path) if key in r]
    values = values[1:] if len(values) > 1 else values
    return float(statistics.median(values)) if values else None
