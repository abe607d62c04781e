"""Sweeps on a cluster through submitit (SLURM), with the local sweep's semantics.

`python scripts/sweep.py experiments/<study>.py --launcher slurm --partition gpu --time 60 --gpus-per-run 1`
submits one job per unfinished run; each job runs `scripts/train.py <target> --workdir <run dir>` (so the same
checkpoint/resume logic applies: a requeued or resubmitted job resumes, a finished run is never resubmitted).
Runs are submitted in waves by dependency (`train.init_from` naming another run of the sweep: that run's wave
comes first), the launcher waits for each wave, prints progress (done/total, job states), and lists failed runs
with the tail of their logs. `--launcher submitit-local` uses submitit's LocalExecutor (tests, or a machine without
SLURM) with the same code path. The run directories must be on a file system the compute nodes share.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from research.studies.sweep import REPO, Run, plan


@dataclass
class TrainJob:
    """A picklable job: one run of scripts/train.py, its output appended to the run's log.txt."""

    target: str
    workdir: str
    extra: tuple[str, ...] = ()

    def __call__(self) -> int:
        Path(self.workdir).mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(REPO / "scripts" / "train.py"), self.target, "--workdir", self.workdir]
        with open(Path(self.workdir) / "log.txt", "a") as log:
            log.write(f"$ {' '.join([*cmd, *self.extra])}\n")
            log.flush()
            code = subprocess.call([*cmd, *self.extra], stdout=log, stderr=subprocess.STDOUT)
        if code != 0:
            raise RuntimeError(f"{self.target} exited with {code}; see {self.workdir}/log.txt")
        return code


def make_executor(
    launcher: str, folder: Path, *, partition=None, time_min=60, gpus_per_run=0, cpus_per_run=None
):
    import submitit

    if launcher == "slurm":
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        params = {"timeout_min": time_min, "gpus_per_node": gpus_per_run, "slurm_partition": partition}
        if cpus_per_run:
            params["cpus_per_task"] = cpus_per_run
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    elif launcher == "submitit-local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=time_min)
    else:
        raise ValueError(f"--launcher: expected local, slurm or submitit-local, got {launcher!r}")
    return executor


def waves(runs: list[Run]) -> list[list[Run]]:
    """Runs grouped so that every run comes after the run it initialises from."""
    depth: dict[Path, int] = {}
    by_dir = {r.workdir.absolute(): r for r in runs}

    def level(run: Run) -> int:
        key = run.workdir.absolute()
        if key not in depth:
            depth[key] = 0 if run.after is None or run.after not in by_dir else level(by_dir[run.after]) + 1
        return depth[key]

    out: dict[int, list[Run]] = {}
    for run in runs:
        out.setdefault(level(run), []).append(run)
    return [out[k] for k in sorted(out)]


def submit_sweep(
    target: str, *, launcher: str, root="runs", extra_args=(), out=print, poll=5.0, only=(), **options
) -> int:
    """Returns the number of failed runs. `only`: "knob=value" filters, as for a local sweep."""
    study, runs = plan(target, root, only=only)
    todo = [r for r in runs if not r.finished]
    out(
        f"{study}: {len(runs)} runs, {len(runs) - len(todo)} already finished, {len(todo)} to submit ({launcher})"
    )
    folder = Path(root) / study / "_submitit"
    executor = make_executor(launcher, folder, **options)
    failed: list[Run] = []
    done = len(runs) - len(todo)
    for wave in waves(todo):
        jobs = []
        for run in wave:
            if run.after is not None and any(f.workdir.absolute() == run.after for f in failed):
                failed.append(run)
                out(f"[{done}/{len(runs)}] FAIL  {run.name} (not started: {run.after.name} failed)")
                done += 1
                continue
            job = executor.submit(TrainJob(run.arg, str(run.workdir.absolute()), tuple(extra_args)))
            jobs.append((run, job))
            out(f"[{done}/{len(runs)}] submitted {run.name} (job {job.job_id})")
        pending = list(jobs)
        while pending:
            time.sleep(poll)
            for run, job in list(pending):
                if not job.done():
                    continue
                pending.remove((run, job))
                done += 1
                try:
                    job.result()
                    ok = run.finished
                except Exception:  # the job raised (non-zero exit) or the scheduler failed it
                    ok = False
                if ok:
                    out(f"[{done}/{len(runs)}] done  {run.name}")
                else:
                    failed.append(run)
                    out(f"[{done}/{len(runs)}] FAIL  {run.name} (job {job.job_id})")
            if pending:
                states = ", ".join(f"{r.name}: {j.state}" for r, j in pending[:4])
                out(f"[{done}/{len(runs)}] waiting: {states}{' ...' if len(pending) > 4 else ''}")
    out(f"{study}: {len(runs) - len(failed)}/{len(runs)} runs finished")
    for run in failed:
        out(f"\nFAILED {run.name}; last lines of {run.workdir / 'log.txt'}:")
        out(run.log_tail())
    return len(failed)
