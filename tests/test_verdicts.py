"""Verdicts of published claims (research/studies/verdicts.py): the rule on the interval, and the generated table in
results/README.md."""

from __future__ import annotations

import json

import numpy as np
import pytest

from research.studies import verdicts
from research.studies.experiment import format_knobs
from research.studies.intervals import Estimate
from research.studies.report import write_report

from .test_sweep_report import EXPERIMENT, _summary_with_documents


@pytest.mark.parametrize(
    ("expect", "lo", "hi", "verdict"),
    [
        ("<", -0.3, -0.1, "reproduces"),
        ("<", 0.1, 0.3, "does not reproduce"),
        ("<", -0.1, 0.1, "inconclusive at this scale"),
        (">", 0.1, 0.3, "reproduces"),
        (">", -0.3, -0.1, "does not reproduce"),
        (">", -0.1, 0.1, "inconclusive at this scale"),
    ],
)
def test_the_verdict_follows_the_interval_alone(expect, lo, hi, verdict):
    claim = verdicts.Claim("c", "s", "u", "q", expect)
    assert verdicts.judge(claim, Estimate((lo + hi) / 2, lo, hi)) == verdict
    assert verdicts.judge(claim, Estimate(lo)) == "inconclusive (no interval)"


def test_a_verdict_either_way_needs_every_seed_on_its_side():
    """The interval over test units holds no training variance: with >= 2 seeds, a seed on the other side of the
    bound makes the verdict inconclusive, whichever side the interval is on; one seed adds nothing to check."""
    claim = verdicts.Claim("c", "s", "u", "q", ">")
    agree, split = {"0": 0.3, "1": 0.1}, {"0": 0.5, "1": -0.1}
    assert verdicts.judge(claim, Estimate(0.2, 0.15, 0.25, seeds=agree)) == "reproduces"
    assert verdicts.judge(claim, Estimate(0.2, 0.15, 0.25, seeds=split)) == "inconclusive (seeds disagree)"
    assert verdicts.judge(claim, Estimate(-0.2, -0.25, -0.15, seeds={"0": -0.5, "1": 0.1})) == (
        "inconclusive (seeds disagree)"
    )
    assert verdicts.judge(claim, Estimate(0.2, 0.15, 0.25, seeds={"0": -0.1})) == "reproduces"
    assert verdicts.judge(claim, Estimate(0.0, -0.1, 0.1, seeds=agree)) == "inconclusive at this scale"
    assert (
        "+0.200 [+0.150, +0.250] (seeds +0.500, -0.100)"
        in verdicts.row(claim, Estimate(0.2, 0.15, 0.25, seeds=split))["result (95% interval)"]
    )


def test_a_difference_keeps_the_seeds_both_sides_have():
    from research.studies.intervals import difference

    a = Estimate(1.0, seeds={"0": 1.0, "1": 2.0, "2": 0.0})
    b = Estimate(0.5, seeds={"0": 0.5, "1": 0.5})
    assert difference(a, b).seeds == {"0": 0.5, "1": 1.5}
    assert difference(a, Estimate(0.5)).seeds is None


def test_a_bound_other_than_zero_and_a_bad_expectation():
    claim = verdicts.Claim("c", "s", "u", "q", "<", bound=0.05)
    assert verdicts.judge(claim, Estimate(0.02, 0.01, 0.04)) == "reproduces"
    with pytest.raises(ValueError, match="Claim.expect"):
        verdicts.Claim("c", "s", "u", "q", "<=")


VERDICTS = """

from research.studies import verdicts as V

def verdicts(groups):
    nope, alibi = V.group_key(groups, positional="nope"), V.group_key(groups, positional="alibi")
    est = V.paired(groups, (alibi, "test/len_8/bpb"), (nope, "test/len_8/bpb"))
    return [(V.Claim("ALiBi beats NoPE", "Press et al. 2022", "tiny", "alibi minus nope", "<", command="make x"), est)]
"""


def test_the_report_writes_verdicts_into_the_results_readme(tmp_path):
    """A study's verdicts() rows land in results/<study>/verdicts.json and .md and between the README's markers,
    with the interval of the paired difference; the hand-written text around the markers is kept."""
    rng = np.random.default_rng(0)
    doc_bytes = [int(x) for x in rng.integers(50, 500, 9)]
    exp = tmp_path / "v_study.py"
    exp.write_text(EXPERIMENT + VERDICTS)
    for pe, factor in (("nope", 2.0), ("alibi", 1.5)):
        for seed in (0, 1):
            run = tmp_path / "runs" / "v_study" / format_knobs({"positional": pe, "seed": seed})
            run.mkdir(parents=True)
            bits = [b * factor * rng.uniform(0.9, 1.1) for b in doc_bytes]
            (run / "summary.json").write_text(json.dumps(_summary_with_documents(bits, doc_bytes)))
    results = tmp_path / "results"
    results.mkdir()
    (results / "README.md").write_text(
        f"# Results\nbefore\n{verdicts.BEGIN}\nstale row\n{verdicts.END}\nafter\n"
    )
    write_report(str(exp), root=tmp_path / "runs", out=results)
    (row,) = json.loads((results / "v_study" / "verdicts.json").read_text())
    assert row["verdict"] == "reproduces" and row["command"] == "`make x`"
    assert row["result (95% interval)"].startswith("alibi minus nope: -0.")
    assert "(seeds -0." in row["result (95% interval)"]  # both seeds' differences, paired by seed
    readme = (results / "README.md").read_text()
    assert "stale row" not in readme and "| ALiBi beats NoPE | Press et al. 2022 |" in readme
    assert readme.startswith("# Results\nbefore\n") and readme.endswith(f"{verdicts.END}\nafter\n")


def test_a_readme_without_markers_is_left_alone(tmp_path):
    (tmp_path / "README.md").write_text("hand-written\n")
    assert verdicts.update_readme(tmp_path) is False
    assert (tmp_path / "README.md").read_text() == "hand-written\n"


def test_a_study_without_claims_leaves_no_verdict_files(tmp_path):
    verdicts.write([{c: "x" for c in verdicts.COLUMNS}], tmp_path)
    assert (tmp_path / "verdicts.json").exists()
    verdicts.write([], tmp_path)
    assert not (tmp_path / "verdicts.json").exists() and not (tmp_path / "verdicts.md").exists()


def test_too_few_test_documents_give_no_interval_and_no_verdict():
    """A bootstrap over one or two documents is not an interval: the estimate has none, the claim is inconclusive."""
    from research.studies.intervals import MIN_UNITS, estimate
    from research.studies.report import group

    doc_bytes = [100] * (MIN_UNITS - 1)
    rows = [
        {"knobs": {"positional": pe, "seed": "0"},
         "summary": _summary_with_documents([b * f for b in doc_bytes], doc_bytes)}
        for pe, f in (("nope", 2.0), ("alibi", 1.5))
    ]  # fmt: skip
    est = estimate(group(rows), "test/len_8/bpb")
    assert all(e.lo is None for e in est.values())
    claim = verdicts.Claim("c", "s", "u", "q", "<")
    diff = verdicts.paired(
        group(rows), ("positional=alibi", "test/len_8/bpb"), ("positional=nope", "test/len_8/bpb")
    )
    assert verdicts.judge(claim, diff) == "inconclusive (no interval)"
