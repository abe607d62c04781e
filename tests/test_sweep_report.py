"""Sweeps skip finished runs, survive failing ones, and reports are generated from summaries."""

from __future__ import annotations

import csv
import json
import statistics
import textwrap

import pytest

from research.studies.experiment import expand_sweep, format_knobs, load_experiment, parse_knobs
from research.studies.report import write_report
from research.studies.sweep import plan, run_sweep

EXPERIMENT = textwrap.dedent(
    '''
    """Tiny study for tests."""
    import dataclasses
    from research.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig
    from research.studies.experiment import parse_knobs

    from pathlib import Path

    ONE_LINE = str(Path(__file__).with_name("one_line.txt"))  # valid, but too short to split: fails once read

    def get_config(arg=""):
        k = parse_knobs(arg, positional="nope", seed=0, broken=False)
        return Config(
            seed=k.seed,
            data=DataConfig(seq_len=8, batch_size=2, max_eval_bytes=1000,
                            corpus={"name": "text", "path": ONE_LINE} if k.broken else {"name": "wiki-sample"}),
            model=ModelConfig(d_model=16, num_layers=1, num_heads=2, positional={"name": k.positional}),
            train=TrainConfig(steps=2, warmup_steps=1, log_every=1, eval_every=0, checkpoint_every=1),
            eval=EvalConfig(length_multipliers=(1,), batch_size=2),
        )

    def sweep(add, arg=""):
        add(positional="nope", seed=0)
        add(positional="alibi", seed=0)
        if "withbroken" in arg:
            add(positional="rope", seed=0, broken=True)

    def metrics():
        return ["test/len_8/bpb"]
    '''
)


def write_experiment(tmp_path):
    path = tmp_path / "tiny_study.py"
    path.write_text(EXPERIMENT.replace('"withbroken" in arg', '"withbroken" in (arg or "")'))
    (tmp_path / "one_line.txt").write_text("a single line of text\n")
    return path


def test_knobs_and_run_names(tmp_path):
    knobs = parse_knobs("demo,positional=alibi,seed=2", demo=False, positional="rope", seed=0)
    assert (knobs.demo, knobs.positional, knobs.seed) == (True, "alibi", 2)
    assert format_knobs({"seed": 1, "positional": "alibi"}) == "positional=alibi,seed=1"
    module = load_experiment(write_experiment(tmp_path))
    assert [format_knobs(k) for k in expand_sweep(module, "")] == [
        "positional=nope,seed=0",
        "positional=alibi,seed=0",
    ]


@pytest.mark.slow
def test_sweep_runs_skips_and_reports_failures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = write_experiment(tmp_path)
    lines = []
    failed = run_sweep(f"{exp}", jobs=2, root=tmp_path / "runs", out=lines.append)
    assert failed == 0, "\n".join(lines)
    study, runs = plan(f"{exp}", tmp_path / "runs")
    assert all(r.finished for r in runs)

    lines = []
    assert run_sweep(f"{exp}", jobs=1, root=tmp_path / "runs", out=lines.append) == 0
    assert "2 already finished" in lines[0] and "0 to run" in lines[0]  # nothing redone

    # A failing run does not stop the others; it is listed with its log tail, and the count is non-zero.
    exp2 = tmp_path / "tiny_study2.py"
    exp2.write_text(exp.read_text().replace('"withbroken" in (arg or "")', "True"))
    lines = []
    failed = run_sweep(f"{exp2}", jobs=1, root=tmp_path / "runs", out=lines.append)
    text = "\n".join(lines)
    assert failed == 1 and "FAILED broken=True,positional=rope,seed=0" in text
    assert "too short to split" in text  # the tail of its log names the problem
    assert text.count(" done  ") == 2
    assert not (
        tmp_path / "runs" / "tiny_study2" / "broken=True,positional=rope,seed=0" / "summary.json"
    ).exists()


def test_report_from_summaries(tmp_path):
    exp = write_experiment(tmp_path)
    root = tmp_path / "runs" / "tiny_study"
    values = {("nope", 0): 2.0, ("nope", 1): 2.2, ("alibi", 0): 1.5, ("alibi", 1): 1.7}
    for (pe, seed), bpb in values.items():
        run = root / format_knobs({"positional": pe, "seed": seed})
        run.mkdir(parents=True)
        summary = {
            "metrics": {"test/len_8/bpb": bpb},
            "params": {"total": 10, "embedding": 4, "positional": 0, "rest": 6},
            "wall_time_s": 3.0,
            "machine": {"cpu": "test cpu" if seed == 0 else "other cpu", "cores": 2},
            "device": {"count": 1, "kind": "cpu", "platform": "cpu"},
            "versions": {"jax": "x"},
            "git_sha": "abc",
        }
        (run / "summary.json").write_text(json.dumps(summary))
    (root / "unfinished").mkdir()  # no summary.json: ignored
    dest = write_report(str(exp), root=tmp_path / "runs", out=tmp_path / "results")
    rows = list(csv.DictReader(open(dest / "summary.csv")))
    assert len(rows) == 4
    table = (dest / "table.md").read_text()
    std = statistics.stdev([2.0, 2.2])
    assert f"| positional=nope | 2 | 2.1000 ± {std:.4f} |" in table
    assert "test cpu, 2 cores" in table and "Wall time" in table
    # Runs from two machines: the header names both, with their run counts, not the first run's alone.
    assert (
        "- Machine (the runs differ): other cpu, 2 cores; JAX device: 1 × cpu (cpu) (2 runs); test cpu"
        in table
    )
    assert "- Versions: jax x." in table
    assert (dest / "figures" / "extrapolation.png").stat().st_size > 1000
    # A fresh clone has no run directories: the report regenerates from the summaries it saved.
    again = write_report(str(exp), root=tmp_path / "no_runs_here", out=tmp_path / "results")
    assert (again / "table.md").read_text() == table


@pytest.mark.slow
def test_sweep_resumes_an_interrupted_run(tmp_path, monkeypatch):
    """A run killed mid-way (checkpoint, no summary) is resumed by the next sweep, not restarted or skipped."""
    from research.training.loop import train_and_evaluate

    monkeypatch.chdir(tmp_path)
    exp = write_experiment(tmp_path)
    study, runs = plan(str(exp), tmp_path / "runs")
    first = runs[0]
    config = load_experiment(exp).get_config(first.arg.split(":", 1)[1])

    def crash(message):
        if message.startswith("step 2/"):
            raise KeyboardInterrupt

    try:
        train_and_evaluate(config, first.workdir, log=crash)
    except KeyboardInterrupt:
        pass
    assert not first.finished
    assert run_sweep(str(exp), root=tmp_path / "runs", out=lambda s: None) == 0
    assert "resumed from checkpoint at step 1" in (first.workdir / "log.txt").read_text()
    assert all(r.finished for r in runs)


def test_report_uses_the_experiments_own_figures(tmp_path):
    """An experiment defining figures(groups, folder) draws its own figures; the table links them."""
    exp = tmp_path / "own_figures.py"
    exp.write_text(
        EXPERIMENT
        + textwrap.dedent(
            """
            def figures(groups, folder):
                path = folder / "custom.png"
                path.write_bytes(b"png")
                (folder / "groups.json").write_text(str(sorted(groups)))
                return [path]
            """
        )
    )
    root = tmp_path / "runs" / "own_figures"
    run = root / format_knobs({"positional": "nope", "seed": 0})
    run.mkdir(parents=True)
    params = {"total": 1, "embedding": 1, "positional": 0, "rest": 0}
    summary = {"metrics": {"test/len_8/bpb": 2.0}, "params": params, "wall_time_s": 1.0}
    (run / "summary.json").write_text(json.dumps(summary))
    dest = write_report(str(exp), root=tmp_path / "runs", out=tmp_path / "results")
    assert (dest / "figures" / "custom.png").read_bytes() == b"png"
    assert not (dest / "figures" / "extrapolation.png").exists()
    assert "![custom](figures/custom.png)" in (dest / "table.md").read_text()
    assert "positional=nope" in (dest / "figures" / "groups.json").read_text()


CHAIN = textwrap.dedent(
    '''
    """A base run and a fine-tune of it (train.init_from names a sibling run)."""
    from research.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig
    from research.studies.experiment import parse_knobs

    from pathlib import Path

    ONE_LINE = str(Path(__file__).with_name("one_line.txt"))  # valid, but too short to split: fails once read

    def get_config(arg=""):
        k = parse_knobs(arg, stage="base", broken=False)
        child = k.stage == "tune"
        broken = k.broken and not child
        return Config(
            data=DataConfig(seq_len=8, batch_size=2, max_eval_bytes=1000,
                            corpus={"name": "text", "path": ONE_LINE} if broken else {"name": "wiki-sample"}),
            model=ModelConfig(d_model=16, num_layers=1, num_heads=2, positional={"name": "rope"}),
            train=TrainConfig(steps=2, warmup_steps=1, log_every=1, eval_every=0, checkpoint_every=1,
                              init_from="stage=base" if child else None),
            eval=EvalConfig(length_multipliers=(1,), batch_size=2),
        )

    def sweep(add, arg=""):
        add(stage="tune")  # listed first: the sweep must still wait for the base run
        add(stage="base")

    def metrics():
        return ["test/len_8/bpb"]
    '''
)


@pytest.mark.slow
def test_sweep_starts_a_dependent_run_after_its_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "chain.py"
    exp.write_text(CHAIN)
    (tmp_path / "one_line.txt").write_text("a single line of text\n")
    study, runs = plan(str(exp), tmp_path / "runs")
    assert runs[0].after == runs[1].workdir.absolute()
    lines = []
    assert run_sweep(str(exp), jobs=2, root=tmp_path / "runs", out=lines.append) == 0
    order = [line.split()[-1] for line in lines if " start " in line]
    assert order == ["stage=base", "stage=tune"]
    # The fine-tune found a finished source (otherwise: "train.init_from: ... is not a finished run").
    assert "initialised from" in (runs[0].workdir / "log.txt").read_text()
    # A failed source: its dependant is not started and is listed as failed.
    lines = []
    assert run_sweep(f"{exp}:broken", jobs=2, root=tmp_path / "runs2", out=lines.append) == 2
    assert any("FAIL  stage=tune (not started: stage=base failed)" in line for line in lines)


@pytest.mark.slow
def test_submitit_launcher_runs_skips_and_chains(tmp_path, monkeypatch):
    """--launcher submitit-local (the SLURM code path on submitit's LocalExecutor): runs every run, the chained run
    after its source, skips finished runs on a second call."""
    from research.studies.cluster import submit_sweep, waves

    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "chain.py"
    exp.write_text(CHAIN)
    _, runs = plan(str(exp), tmp_path / "runs")
    assert [[r.name for r in w] for w in waves(runs)] == [["stage=base"], ["stage=tune"]]
    lines = []
    failed = submit_sweep(
        str(exp), launcher="submitit-local", root=tmp_path / "runs", out=lines.append, poll=0.5
    )
    assert failed == 0, "\n".join(lines)
    assert all(r.finished for r in runs)
    assert "initialised from" in (runs[0].workdir / "log.txt").read_text()
    lines = []
    assert submit_sweep(str(exp), launcher="submitit-local", root=tmp_path / "runs", out=lines.append) == 0
    assert "2 already finished, 0 to submit" in lines[0]


def test_reuse_adopts_only_saved_runs_with_the_same_config(tmp_path):
    """--reuse: a saved summary is adopted only when its config (missing fields at their defaults) is the planned
    one; a saved run with a different config is reported and left to train."""
    from research.config import to_dict
    from research.studies.sweep import reuse_saved

    path = write_experiment(tmp_path)
    _, runs = plan(str(path), tmp_path / "runs")
    saved = tmp_path / "saved"
    saved.mkdir()
    nope, alibi = runs
    old_config = json.loads(json.dumps(nope.config))
    del old_config["model"]["scan_layers"]  # a field added after the run was saved: its default applies
    (saved / f"{nope.name}.json").write_text(json.dumps({"config": old_config, "metrics": {"x": 1.0}}))
    other = json.loads(json.dumps(alibi.config))
    other["train"]["steps"] = 3
    (saved / f"{alibi.name}.json").write_text(json.dumps({"config": other, "metrics": {"x": 2.0}}))
    messages = []
    assert reuse_saved(runs, saved, out=messages.append) == 1
    adopted = json.loads((nope.workdir / "summary.json").read_text())
    assert adopted["metrics"] == {"x": 1.0} and adopted["reused_from"] == str(saved / f"{nope.name}.json")
    assert nope.finished and not alibi.finished
    assert any("not reused" in m and "train.steps" in m for m in messages)
    assert to_dict(load_experiment(path).get_config("positional=nope,seed=0")) == nope.config


def test_table_cells_leave_out_nan():
    from research.studies.report import _fmt

    nan = float("nan")
    assert (
        _fmt([nan, nan, nan]) == "–"
    )  # a metric that does not apply to this row (e.g. coverage of random init)
    assert _fmt([1.0, nan, 3.0]) == "2.0000 ± 1.4142"
    assert _fmt([2.5]) == "2.5000"


def _summary_with_documents(bits: list[float], doc_bytes: list[int], bpb_key="test/len_8") -> dict:
    per_document = [[b, b, x] for b, x in zip(doc_bytes, bits, strict=True)]
    bpb = sum(bits) / sum(doc_bytes)
    return {
        "metrics": {f"{bpb_key}/bpb": bpb}, "params": {"total": 1}, "wall_time_s": 1.0,
        "per_document": {bpb_key: per_document},
        "evaluation": {"mode": "non-overlapping windows", "documents": len(bits), "bytes": sum(doc_bytes)},
    }  # fmt: skip


def test_bootstrap_intervals_and_paired_differences_match_a_direct_computation(tmp_path):
    """Table cells carry the mean over seeds with a 95% percentile bootstrap over test documents (the same
    resamples for every run), and the baseline table the paired difference; both equal a direct numpy
    computation on the same resamples."""
    import numpy as np

    from research.studies import intervals

    rng = np.random.default_rng(3)
    doc_bytes = [int(x) for x in rng.integers(50, 500, 9)]
    bits = {(pe, seed): [float(b * (2.0 if pe == "nope" else 1.5) * rng.uniform(0.8, 1.2)) for b in doc_bytes]
            for pe in ("nope", "alibi") for seed in (0, 1)}  # fmt: skip
    exp = tmp_path / "ci_study.py"
    exp.write_text(EXPERIMENT + "\n\ndef baseline():\n    return {'positional': 'alibi'}\n")
    root = tmp_path / "runs" / "ci_study"
    for (pe, seed), b in bits.items():
        run = root / format_knobs({"positional": pe, "seed": seed})
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps(_summary_with_documents(b, doc_bytes)))
    dest = write_report(str(exp), root=tmp_path / "runs", out=tmp_path / "results")
    table = (dest / "table.md").read_text()

    idx = intervals.draws(len(doc_bytes))
    data = {k: np.asarray(v) for k, v in bits.items()}
    total_bytes = np.asarray(doc_bytes)[idx].sum(1)
    direct = {
        pe: np.mean([data[pe, s][idx].sum(1) / total_bytes for s in (0, 1)], axis=0)
        for pe in ("nope", "alibi")
    }
    for pe in ("nope", "alibi"):
        mean = np.mean([sum(bits[pe, s]) / sum(doc_bytes) for s in (0, 1)])
        lo, hi = np.percentile(direct[pe], [2.5, 97.5])
        assert f"| positional={pe} | 2 | {mean:.4f} [{lo:.4f}, {hi:.4f}] |" in table
    diff = direct["nope"] - direct["alibi"]
    mean = np.mean([sum(bits["nope", s]) / sum(doc_bytes) for s in (0, 1)]) - np.mean(
        [sum(bits["alibi", s]) / sum(doc_bytes) for s in (0, 1)]
    )
    lo, hi = np.percentile(diff, [2.5, 97.5])
    assert f"| positional=nope | {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] |" in table
    assert (
        "bootstrap over the 9 test documents" in table
        and "non-overlapping windows, 9 test documents" in table
    )
    assert (dest / "figures" / "extrapolation.svg").exists()


def test_a_bucket_loss_has_an_interval_over_documents():
    """`test/len_T/loss_after/<bucket>` (and loss_bucket) is resampled over test documents from a summary's
    per-document bucket totals; a draw without a target in the bucket is left out of the percentiles."""
    import numpy as np

    from research.studies import intervals

    rows = [[4, 10.0], [0, 0.0], [6, 9.0], [2, 5.0], [8, 20.0], [1, 1.0]]  # [targets, bits] per document
    summary = {
        "metrics": {"test/len_8/loss_after/oov": 45.0 * np.log(2) / 21},
        "per_document": {"test/len_8": [[100, 21, 50.0]] * len(rows)},
        "per_document_buckets": {"test/len_8": {"loss_after/oov": rows}},
    }
    est = intervals.estimate({"g": [{"summary": summary}]}, "test/len_8/loss_after/oov")["g"]
    idx = intervals.draws(len(rows))
    data = np.asarray(rows)
    targets = data[idx, 0].sum(1)
    direct = np.where(targets > 0, data[idx, 1].sum(1) * np.log(2) / np.maximum(targets, 1), np.nan)
    assert (est.lo, est.hi) == pytest.approx(tuple(np.nanpercentile(direct, [2.5, 97.5])))
    assert est.lo < est.mean < est.hi
    assert intervals.statistic(summary, "test/len_8/loss_bucket/oov") is None  # no totals for it: no interval


def test_report_names_and_skips_a_malformed_summary(tmp_path):
    exp = write_experiment(tmp_path)
    root = tmp_path / "runs" / "tiny_study"
    good = root / format_knobs({"positional": "nope", "seed": 0})
    bad = root / format_knobs({"positional": "alibi", "seed": 0})
    for run in (good, bad):
        run.mkdir(parents=True)
    params = {"total": 1, "embedding": 1, "positional": 0, "rest": 0}
    (good / "summary.json").write_text(json.dumps({"metrics": {"test/len_8/bpb": 2.0}, "params": params,
                                                   "wall_time_s": 1.0}))  # fmt: skip
    (bad / "summary.json").write_text('{"metrics": {"test/len_8/b')  # truncated
    with pytest.warns(UserWarning, match=r"positional=alibi,seed=0/summary.json: left out .* does not parse"):
        dest = write_report(str(exp), root=tmp_path / "runs", out=tmp_path / "results")
    assert "positional=alibi" not in (dest / "table.md").read_text()


def test_only_selects_runs_by_knob_and_keeps_the_runs_they_start_from(tmp_path):
    """--only knob=value: values of one knob are alternatives, knobs combine; a kept run's train.init_from source
    comes with it; a knob or value that matches no run is a ConfigError naming the valid ones."""
    from research.config import ConfigError

    path = write_experiment(tmp_path)
    _, runs = plan(str(path), tmp_path / "runs", only=["positional=alibi"])
    assert [r.name for r in runs] == ["positional=alibi,seed=0"]
    _, every = plan(str(path), tmp_path / "runs", only=["positional=alibi", "positional=nope", "seed=0"])
    assert len(every) == 2
    chain = tmp_path / "chain.py"
    chain.write_text(CHAIN)
    _, runs = plan(str(chain), tmp_path / "runs", only=["stage=tune"])
    assert [r.name for r in runs] == ["stage=tune", "stage=base"]  # sweep order, with the source it waits for
    with pytest.raises(
        ConfigError, match="--only seeds: not a knob of this sweep; its knobs: positional, seed"
    ):
        plan(str(path), tmp_path / "runs", only=["seeds=1"])
    with pytest.raises(ConfigError, match="--only seed=3: no such run; seed takes 0"):
        plan(str(path), tmp_path / "runs", only=["seed=3"])
    with pytest.raises(ConfigError, match="expected knob=value"):
        plan(str(path), tmp_path / "runs", only=["alibi"])
