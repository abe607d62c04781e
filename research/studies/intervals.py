"""Confidence intervals for report tables: a paired bootstrap over test documents (corpus runs) or test examples
(task runs), seeds kept.

A run's summary holds per-unit totals: for every evaluation length, each test document's [bytes, targets, bits]
(`per_document`) and, with frequency buckets, its [targets, bits] in each bucket (`per_document_buckets`), or each
test example's output tokens and how many of them were right (`per_example`). A table cell averages a metric over
the runs (seeds) of a group. One bootstrap draw resamples the units with replacement, recomputes the metric of every
run on those units, and averages over the group's seeds; the 95% interval is the 2.5 and 97.5 percentiles of
`RESAMPLES` draws. Every run and group uses the same draws (the same test set: the units are paired), so the
difference of a group to a baseline group has its own interval from the same draws.

    statistic(summary, metric) -> f(indices [R, U]) -> values [R], or None where the summary has no per-unit data
    estimate(groups, metric)   -> {group: Estimate(mean, lo, hi, draws)}
    difference(a, b)           -> Estimate of a - b from paired draws
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

RESAMPLES = 2000
SEED = 0
MIN_UNITS = 5
"""Fewer test units than this give no interval (a bootstrap over one or two documents is not one): the table falls
back to the spread over seeds, and a verdict to 'inconclusive'."""
_LENGTH_METRIC = re.compile(r"^(test/len_\d+)/(bpb|loss)$")
_BUCKET_METRIC = re.compile(r"^(test/len_\d+)/(loss_(?:bucket|after)/.+)$")
_TASK_METRIC = re.compile(r"^test/(in_dist|ood|len_(\d+))/(free_)?(token|sequence)_accuracy$")


@dataclasses.dataclass
class Estimate:
    mean: float
    lo: float | None = None
    hi: float | None = None
    draws: np.ndarray | None = None
    seeds: dict[str, float] | None = None
    """The value of each seed's run ({seed: value}; a difference keeps the seeds both sides have): the training
    runs' variance, which the interval over test units does not hold."""


def units(summary: dict) -> int | None:
    """The number of resampling units (test documents, or test examples per length) of a run, or None."""
    per_document = summary.get("per_document") or {}
    if per_document:
        first = next(iter(per_document.values()))
        return len(first) if first else None
    per_example = summary.get("per_example") or {}
    if per_example:
        return len(next(iter(per_example.values()))["total"])
    return None


def statistic(summary: dict, metric: str):
    """f(indices [R, U]) -> the metric of this run recomputed on each row of resampled units; None when the
    summary has no per-unit data for the metric."""
    if m := _LENGTH_METRIC.match(metric):
        rows = (summary.get("per_document") or {}).get(m.group(1))
        if not rows:
            return None
        data = np.asarray(rows, np.float64)  # [D, 3]: bytes, targets, bits
        if m.group(2) == "bpb":
            return lambda idx: data[idx, 2].sum(1) / data[idx, 0].sum(1)
        return lambda idx: data[idx, 2].sum(1) * math.log(2) / data[idx, 1].sum(1)
    if m := _BUCKET_METRIC.match(metric):
        rows = ((summary.get("per_document_buckets") or {}).get(m.group(1)) or {}).get(m.group(2))
        if not rows:
            return None
        data = np.asarray(rows, np.float64)  # [D, 2]: targets, bits

        def bucket_loss(idx):  # nats per target; NaN for a draw without a target in the bucket
            targets = data[idx, 0].sum(1)
            return np.where(targets > 0, data[idx, 1].sum(1) * math.log(2) / np.maximum(targets, 1), np.nan)

        return bucket_loss
    if m := _TASK_METRIC.match(metric):
        return _task_statistic(summary, m)
    return None


def _task_statistic(summary: dict, m):
    per_example = summary.get("per_example") or {}
    train_max = summary.get("config", {}).get("task", {}).get("train_max_length")
    where, length, free, kind = m.group(1), m.group(2), bool(m.group(3)), m.group(4)
    lengths = sorted(int(k[4:]) for k in per_example)
    if length is not None:
        lengths = [int(length)]
    elif train_max is not None:
        lengths = [n for n in lengths if (n <= train_max) == (where == "in_dist")]
    key = "free" if free else "teacher"
    if not lengths or any(key not in per_example.get(f"len_{n}", {}) for n in lengths):
        return None
    right = [np.asarray(per_example[f"len_{n}"][key], np.float64) for n in lengths]
    total = [np.asarray(per_example[f"len_{n}"]["total"], np.float64) for n in lengths]

    def f(idx):
        if kind == "token":
            values = [r[idx].sum(1) / np.maximum(t[idx].sum(1), 1) for r, t in zip(right, total, strict=True)]
        else:
            values = [(r[idx] == t[idx]).mean(1) for r, t in zip(right, total, strict=True)]
        return np.mean(values, axis=0)

    return f


def draws(n_units: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Bootstrap indices [resamples, n_units]: the same for every run and group of a report (paired)."""
    return np.random.default_rng(seed).integers(0, n_units, (resamples, n_units))


def estimate(groups: dict[str, list[dict]], metric: str) -> dict[str, Estimate]:
    """{group: mean over its runs of `metric`, with a 95% bootstrap interval when every run of every group has
    per-unit data on the same number of units}."""
    out = {}
    funcs = {g: [statistic(r["summary"], metric) for r in members] for g, members in groups.items()}
    sizes = {units(r["summary"]) for members in groups.values() for r in members}
    paired = len(sizes) == 1 and None not in sizes and min(sizes) >= MIN_UNITS
    idx = draws(sizes.pop()) if paired else None
    for g, members in groups.items():
        values = [r["summary"]["metrics"].get(metric) for r in members]
        values = [v for v in values if isinstance(v, int | float) and not math.isnan(v)]
        if not values:
            continue
        est = Estimate(float(np.mean(values)), seeds=by_seed(members, metric))
        if paired and all(f is not None for f in funcs[g]):
            est.draws = np.mean([f(idx) for f in funcs[g]], axis=0)
            est.lo, est.hi = (float(x) for x in np.nanpercentile(est.draws, [2.5, 97.5]))
        out[g] = est
    return out


def by_seed(members: list[dict], metric: str) -> dict[str, float] | None:
    """{seed: the run's metric} for a group whose runs name distinct seeds; None otherwise."""
    out = {}
    for r in members:
        seed, value = r.get("knobs", {}).get("seed"), r["summary"]["metrics"].get(metric)
        if seed is None or str(seed) in out or not isinstance(value, int | float) or math.isnan(value):
            return None
        out[str(seed)] = float(value)
    return out


def difference(a: Estimate, b: Estimate) -> Estimate:
    """a - b, with the interval of the paired draws when both have them, and seed by seed for the seeds both
    have."""
    est = Estimate(a.mean - b.mean)
    if a.seeds and b.seeds and (common := sorted(a.seeds.keys() & b.seeds.keys())):
        est.seeds = {s: a.seeds[s] - b.seeds[s] for s in common}
    if a.draws is not None and b.draws is not None:
        est.draws = a.draws - b.draws
        est.lo, est.hi = (float(x) for x in np.nanpercentile(est.draws, [2.5, 97.5]))
    return est


def describe(groups: dict[str, list[dict]]) -> str | None:
    """One sentence on the interval method and the units, for under a table; None without per-unit data."""
    sizes = {units(r["summary"]) for members in groups.values() for r in members}
    if len(sizes) != 1 or None in sizes or min(sizes) < MIN_UNITS:
        return None
    n = sizes.pop()
    any_run = next(iter(groups.values()))[0]["summary"]
    unit = "test documents" if any_run.get("per_document") else "test examples (per length)"
    return (
        f"Intervals: 95% percentile bootstrap over the {n} {unit}, {RESAMPLES} resamples, the same resamples for "
        "every run (so differences are paired); each resample recomputes every seed's metric and averages the "
        "seeds. n = seeds per row."
    )
