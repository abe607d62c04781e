"""What happens when things go wrong: one writer per run directory, idempotent reruns, sweeps that validate before
launching and leave no run behind when stopped, one-line errors (docs/running.md: "What happens when things go
wrong"). Damaged checkpoints: tests/test_train.py; vector-file headers: tests/test_pretrained.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from research.config import ConfigError
from research.training.loop import train_and_evaluate
from research.training.rundir import RunLock, RunLocked, lock_holder

from .conftest import tiny_config
from .test_sweep_report import write_experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    """While one process holds a run directory, another run on it stops at once (before writing anything), naming
    the directory and the holder's PID; the lock is free again when the holder ends."""
    with RunLock(tmp_path):
        assert lock_holder(tmp_path) == os.getpid()
        with pytest.raises(
            RunLocked, match=rf"{tmp_path} is being written by another process \(pid {os.getpid()}\)"
        ):
            train_and_evaluate(tiny_config("nope", steps=2), tmp_path, log=lambda m: None)
        assert not (tmp_path / "config.json").exists()
    assert lock_holder(tmp_path) is None


def test_the_kernel_releases_the_lock_of_a_killed_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from research.training.rundir import RunLock\n"
         f"with RunLock(__import__('pathlib').Path({str(tmp_path)!r})):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    assert lock_holder(tmp_path) == holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_holder(tmp_path) is None
    with RunLock(tmp_path):
        pass


def test_rerunning_a_finished_run_is_a_no_op_unless_reevaluated(tmp_path):
    """A finished run is left as it is (summary.json untouched, no evaluation); --reevaluate evaluates it again and
    keeps the training's wall time, recording the evaluation's apart."""
    config = tiny_config("alibi", steps=2)
    first = train_and_evaluate(config, tmp_path, log=lambda m: None)
    before = (tmp_path / "summary.json").read_text()
    messages = []
    again = train_and_evaluate(config, tmp_path, log=messages.append)
    assert again == first and (tmp_path / "summary.json").read_text() == before
    assert any("holds a finished run" in m and "--reevaluate" in m for m in messages)
    re = train_and_evaluate(config, tmp_path, log=lambda m: None, reevaluate=True)
    assert (
        re["wall_time_s"] == first["wall_time_s"] and re["evaluation_wall_time_s"] > 0 and "reevaluated" in re
    )
    assert re["metrics"] == first["metrics"]


def test_the_diverged_step_writes_no_metrics(tmp_path):
    """The stop on a non-finite loss comes before that step's validation: metrics.jsonl ends at the last good step."""
    from research.training.loop import TrainingDiverged
    from research.training.metrics import read_jsonl

    config = tiny_config(
        "nope", steps=6, learning_rate=1e38, checkpoint_every=1, warmup_steps=0, eval_every=1
    )
    with pytest.raises(TrainingDiverged, match=r"non-finite .* after step (\d+)") as stop:
        train_and_evaluate(config, tmp_path, log=lambda m: None)
    bad = int(__import__("re").search(r"step (\d+);", str(stop.value)).group(1))
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert all(r["step"] < bad for r in records)
    assert all(isinstance(v, float) for r in records for k, v in r.items() if k.startswith("valid/"))


def test_sweep_checks_every_config_and_override_before_launching(tmp_path, monkeypatch):
    """A bad override, an abbreviation and a bad list fail once, before any run starts (no run directory is made);
    --dry-run checks the same; comma lists and bare boolean flags are accepted."""
    from research.studies.sweep import plan, run_sweep

    monkeypatch.chdir(tmp_path)
    exp = write_experiment(tmp_path)
    for extra, message in (
        (["--train.stepz", "3"], "unknown option '--train.stepz'; did you mean --train.steps?"),
        (["--train.step", "3"], "unknown option '--train.step'"),
        (["--eval.lengths", "8,x"], "eval.lengths: expected an integer, got 'x'"),
        (["--model.positional", "rotary"], "run positional=nope,seed=0: model.positional: unknown"),
    ):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
            run_sweep(str(exp), root=tmp_path / "runs", extra_args=extra, out=lambda s: None)
        assert not (tmp_path / "runs").exists()
    _, runs = plan(str(exp), tmp_path / "runs", ["--eval.lengths", "8,16", "--model.scan_layers"])
    assert runs[0].settings.eval.lengths == (8, 16) and runs[0].settings.model.scan_layers is True
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "sweep.py"), str(exp), "--dry-run", "--train.stepz", "3"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().startswith("error: unknown option '--train.stepz'")


def test_sweep_skips_a_run_written_elsewhere(tmp_path, monkeypatch):
    from research.studies.sweep import plan, run_sweep

    monkeypatch.chdir(tmp_path)
    exp = write_experiment(tmp_path)
    _, runs = plan(str(exp), tmp_path / "runs")
    finished, locked = runs
    finished.workdir.mkdir(parents=True)
    (finished.workdir / "summary.json").write_text(json.dumps({"metrics": {}}))
    lines = []
    with RunLock(locked.workdir):
        assert run_sweep(str(exp), root=tmp_path / "runs", out=lines.append) == 0
    assert any(f"skip  {locked.name}: running elsewhere (pid {os.getpid()})" in line for line in lines)
    assert not (locked.workdir / "log.txt").exists()  # never started
    (finished.workdir / "summary.json").write_text('{"metrics": {')  # torn: not finished
    assert not plan(str(exp), tmp_path / "runs")[1][0].finished


def test_expected_stops_are_one_line_with_a_non_zero_status(tmp_path, capsys, monkeypatch):
    """scripts/train.py: a vector-file error found while reading, a run directory that cannot be written and a
    diverged run each end in one line on stderr; --debug shows the traceback."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from train import main

    exp = write_experiment(tmp_path)
    vectors = tmp_path / "bad.txt"
    vectors.write_text("2 3\na 1 2 3\nb 4 x 6\n")
    cases = [
        (["--model.pretrained.path", str(vectors)], r"bad.txt:3: b'x' is not a number", 1),
        (
            ["--train.learning_rate", "1e38", "--train.warmup_steps", "0"],
            r"non-finite (training loss|parameters)",
            1,
        ),
    ]
    for extra, pattern, status in cases:
        assert main([f"{exp}", "--workdir", str(tmp_path / f"run{status}{len(extra)}"), *extra]) == status
        err = capsys.readouterr().err.strip()
        assert (
            len(err.splitlines()) == 1 and err.startswith("error: ") and __import__("re").search(pattern, err)
        )
    (tmp_path / "file").write_text("not a folder")
    assert main([f"{exp}", "--workdir", str(tmp_path / "file" / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: cannot write")
    with pytest.raises(OSError):
        main([f"{exp}", "--workdir", str(tmp_path / "file" / "run"), "--debug"])


def _train_processes(root) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", f"train.py .*--workdir {root}"], capture_output=True, text=True
    ).stdout
    return [int(pid) for pid in out.split()]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_sweep_leaves_no_run_behind(tmp_path, sig):
    """SIGTERM (the runs are stopped, then killed) or SIGKILL (the kernel sends each run SIGTERM when the sweep
    dies) to a sweep: within seconds no training process of it is left, and a rerun finishes every run."""
    exp = tmp_path / "long_study.py"
    exp.write_text(
        write_experiment(tmp_path).read_text().replace("steps=2, warmup_steps=1", "steps=400, warmup_steps=1")
    )
    root = tmp_path / "runs"
    cmd = [
        sys.executable,
        os.path.join(REPO, "scripts", "sweep.py"),
        str(exp),
        "--jobs",
        "2",
        "--root",
        str(root),
    ]
    sweep = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    deadline = time.time() + 120
    while not _train_processes(root) and time.time() < deadline:
        time.sleep(0.2)
    assert _train_processes(root)
    time.sleep(2)
    sweep.send_signal(sig)
    sweep.wait(timeout=60)
    deadline = time.time() + 30
    while _train_processes(root) and time.time() < deadline:
        time.sleep(0.2)
    assert not _train_processes(root)
    rerun = subprocess.run(cmd[:-2] + ["--root", str(root), "--train.steps", "400"], capture_output=True, text=True,
                           cwd=tmp_path)  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-2000:]


@pytest.mark.slow
def test_two_processes_started_together_on_one_run_directory(tmp_path):
    """Two trainings started at once on the same directory: one trains to the end, the other stops at once with a
    one-line error naming the holder; the run directory is whole (summary, every step once)."""
    from research.training.metrics import read_jsonl

    exp = write_experiment(tmp_path)
    cmd = [sys.executable, os.path.join(REPO, "scripts", "train.py"), str(exp), "--workdir", str(tmp_path / "run"),
           "--train.steps", "40"]  # fmt: skip
    both = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in both]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    assert "is being written by another process (pid" in loser and len(loser.strip().splitlines()) == 1
    steps = [r["step"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert steps == list(range(1, 41)) and (tmp_path / "run" / "summary.json").exists()


@pytest.mark.slow
def test_every_kind_of_fault_leaves_the_run_bitwise_equal(tmp_path, monkeypatch):
    """research/training/faults.py: kills, a truncated latest checkpoint, a second writer and a killed launcher, at
    random moments: the run still ends bitwise equal to an uninterrupted one, every step logged once."""
    from research.training.faults import compare_runs, inject, run

    monkeypatch.chdir(tmp_path)
    exp = write_experiment(tmp_path)
    extra = ["--train.steps", "200", "--train.checkpoint_every", "1", "--train.log_every", "1"]
    run(f"{exp}:positional=alibi", tmp_path / "reference", extra=extra)
    kinds = ("kill", "truncate", "writer", "sweep")
    done = inject(f"{exp}:positional=alibi", tmp_path / "faulted", faults=8, kinds=kinds, extra=extra, seed=3)
    assert len(done) == 8 and {kind for kind, _ in done} == set(kinds), done
    result = compare_runs(tmp_path / "reference", tmp_path / "faulted")
    assert result["steps"] == list(range(1, 201)) and result["bitwise_equal"]


def test_a_saved_config_reruns_without_its_experiment(tmp_path, capsys):
    """scripts/train.py --config RUN_DIR/config.json (or RUN_DIR) reruns a run with the same metrics; giving both
    an experiment and --config, or neither, is a one-line error."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from train import main

    exp = write_experiment(tmp_path)
    assert main([str(exp), "--workdir", str(tmp_path / "first")]) == 0
    assert (
        main(["--config", str(tmp_path / "first" / "config.json"), "--workdir", str(tmp_path / "again")]) == 0
    )
    first, again = (json.loads((tmp_path / r / "summary.json").read_text()) for r in ("first", "again"))
    assert again["metrics"] == first["metrics"] and again["config"] == first["config"]
    assert (
        main(["--config", str(tmp_path / "first"), "--workdir", str(tmp_path / "x"), "--train.steps", "1"])
        == 0
    )
    assert json.loads((tmp_path / "x" / "config.json").read_text())["train"]["steps"] == 1
    capsys.readouterr()
    for argv in ([str(exp), "--config", str(tmp_path / "first")], []):
        assert main([*argv, "--workdir", str(tmp_path / "y")]) == 2
        assert "give an experiment" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "none.json"), "--workdir", str(tmp_path / "y")]) == 2
    assert "--config: cannot read" in capsys.readouterr().err


def test_a_finished_run_of_another_config_stops_the_sweep_before_it_starts(tmp_path):
    """A run directory that holds a finished run trained with another config (the experiment file changed, or a
    variant shares the folder) is named with the differing fields; the sweep starts nothing instead of skipping it
    and letting the report present it as this config's."""
    import json

    from research.config import ConfigError, replace_path, to_dict
    from research.studies.sweep import plan

    target = "experiments/pe_extrapolation.py:runlocal"
    study, runs = plan(target, tmp_path)
    run = runs[0]
    run.workdir.mkdir(parents=True)
    other = to_dict(replace_path(run.settings, "train.steps", 7))
    (run.workdir / "summary.json").write_text(json.dumps({"metrics": {}, "config": other}))
    with pytest.raises(
        ConfigError, match=rf"1 finished run\(s\) .* {run.name} \(train.steps\)\. Move them out"
    ):
        plan(target, tmp_path)
    (run.workdir / "summary.json").write_text(json.dumps({"metrics": {}, "config": to_dict(run.settings)}))
    assert plan(target, tmp_path)[1][0].finished
