"""Study report: runs/<study>/*/summary.json -> results/<study>/{summary.csv, table.md, figures/, runs/}.

Without run directories (a fresh clone), the summaries saved in results/<study>/runs/ are used, so committed tables
and figures regenerate from what is committed. Generated, never hand-edited.

Runs are grouped by their knobs other than `seed`. A cell is the mean over a group's seeds with a 95% interval
from a paired bootstrap over test documents or examples (research/studies/intervals.py) where the summaries hold
per-document or per-example totals, else mean ± sample standard deviation over seeds. An experiment may define
    metrics() -> [metric, ...]            the table's columns (default: every metric of the first run)
    baseline() -> {knob: value}           a second table: each group minus that group (other knobs equal)
    derived(summary) -> {metric: value}   metrics computed from a run's summary
    figures(groups, folder) -> [path]     its own figures (default: metric against evaluation length, and the loss
                                          by position in the window)
    headline(groups) -> [line]            sentences measured from the runs, under the header (what the table shows)
    verdicts(groups) -> [(Claim, Estimate)]  published claims judged by their interval (research/studies/verdicts.py):
                                          written to verdicts.json/.md and into the table of results/README.md
    ID_GATE = 0.9                         task studies: flag out-of-distribution cells of groups whose
                                          in-distribution free-running sequence accuracy is below it
A malformed or incomplete summary is named and left out; a cell without data stays empty.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import re
import shutil
import statistics
import warnings
from collections import Counter, defaultdict
from pathlib import Path

from research.studies import intervals, verdicts
from research.studies.experiment import load_experiment, split_target, study_name
from research.studies.figures import default_figures
from research.training.metrics import atomic_write_text

REQUIRED = ("metrics", "params", "wall_time_s")


def parse_run_name(name: str) -> dict:
    return dict(item.split("=", 1) for item in name.split(",") if "=" in item)


def read_summary(path: Path, warn=warnings.warn) -> dict | None:
    """A run's summary, or None (with a warning naming the file) when it does not parse or lacks a field."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        warn(f"{path}: left out of the report, it does not parse ({e})")
        return None
    missing = [k for k in REQUIRED if k not in summary] if isinstance(summary, dict) else list(REQUIRED)
    if missing:
        warn(f"{path}: left out of the report, it lacks {', '.join(missing)}")
        return None
    return summary


def collect(run_root: Path) -> list[dict]:
    return _rows((p.parent.name, p) for p in sorted(Path(run_root).glob("*/summary.json")))


def collect_saved(folder: Path) -> list[dict]:
    """The run summaries a previous report saved (results/<study>/runs/<run>.json)."""
    return _rows((p.stem, p) for p in sorted(Path(folder).glob("*.json")))


def _rows(named) -> list[dict]:
    rows = []
    for name, path in named:
        if (summary := read_summary(path)) is not None:
            rows.append({"name": name, "knobs": parse_run_name(name), "summary": summary})
    return rows


def group(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        key = ",".join(f"{k}={v}" for k, v in sorted(row["knobs"].items()) if k != "seed") or "all"
        groups[key].append(row)
    return dict(groups)


def write_report(target: str, *, root="runs", out="results", command: str | None = None) -> Path:
    """Write the study's results folder; returns it. summary.csv, table.md and runs/ are written together, after
    every figure is drawn."""
    path, arg = split_target(target)
    module = load_experiment(path)
    study = study_name(path, arg)
    rows = collect(Path(root) / study) or collect_saved(Path(out) / study / "runs")
    if not rows:
        raise FileNotFoundError(
            f"no finished runs (summary.json) under {Path(root) / study}, and no saved summaries under "
            f"{Path(out) / study / 'runs'}"
        )
    if hasattr(module, "derived"):
        for r in rows:
            r["summary"]["metrics"] = {**r["summary"]["metrics"], **module.derived(r["summary"])}
    names = list(module.metrics()) if hasattr(module, "metrics") else sorted(rows[0]["summary"]["metrics"])
    dest = Path(out) / study
    groups = group(rows)
    draw = getattr(module, "figures", None) or (lambda g, folder: default_figures(g, names, folder))
    (dest / "figures").mkdir(parents=True, exist_ok=True)
    figures = draw(groups, dest / "figures")
    table = render(target, command, study, rows, groups, names, module)
    table += "".join(f"![{f.stem}](figures/{f.name})\n" for f in figures)
    save_runs(rows, dest / "runs")
    atomic_write_text(dest / "summary.csv", summary_csv(rows, names))
    atomic_write_text(dest / "table.md", table)
    if hasattr(module, "verdicts"):
        verdicts.write([verdicts.row(c, est) for c, est in module.verdicts(groups)], dest)
        verdicts.update_readme(Path(out))
    return dest


def save_runs(rows: list[dict], folder: Path) -> None:
    """Each run's summary, so the results folder stands on its own."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for r in rows:
        (folder / f"{r['name']}.json").write_text(json.dumps(r["summary"], indent=1, sort_keys=True))


def summary_csv(rows: list[dict], names: list[str]) -> str:
    """One row per run: its knobs, the metrics, parameter counts and wall time."""
    knobs = sorted({k for r in rows for k in r["knobs"]})
    params = ("total", "embedding", "readout", "positional", "rest")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run", *knobs, *names, *(f"params_{p}" for p in params), "wall_time_s"])
    for r in rows:
        s = r["summary"]
        writer.writerow([
            r["name"], *(r["knobs"].get(k, "") for k in knobs), *(s["metrics"].get(m, "") for m in names),
            *(s["params"].get(p, 0) for p in params), round(s["wall_time_s"], 1),
        ])  # fmt: skip
    return buffer.getvalue()


def render(target, command, study, rows, groups, names, module) -> str:
    """table.md: the header, the table of groups, the differences to the baseline, the method under them."""
    lines = header(target, command, study, rows)
    if hasattr(module, "headline"):
        lines += [*module.headline(groups), ""]
    estimates = {m: intervals.estimate(groups, m) for m in names}
    gate = gated_groups(groups, getattr(module, "ID_GATE", 0.9))
    lines += table(groups, names, estimates, gate) + task_baselines(groups, names)
    method = (
        intervals.describe(groups)
        or "Values: mean ± sample standard deviation over seeds (n = seeds per row)."
    )
    lines += ["", method]
    if gate:
        lines += [
            "",
            f"† out-of-distribution numbers of a group whose in-distribution free-running sequence accuracy is below "
            f"{getattr(module, 'ID_GATE', 0.9):.0%}: it has not learned the task, so its length generalisation is not "
            f"measured (flagged: {', '.join(sorted(gate))}).",
        ]
    if hasattr(module, "baseline"):
        lines += differences(groups, names, estimates, module.baseline())
    return "\n".join(lines) + "\n\n"


def header(target, command, study, rows) -> list[str]:
    wall = [r["summary"]["wall_time_s"] for r in rows]
    lines = [
        f"# {study}",
        "",
        f"Generated by `python scripts/report.py {target}` on {datetime.date.today().isoformat()} from "
        f"{len(rows)} runs of `{command or f'python scripts/sweep.py {target}'}`.",
        "",
        f"- {_distinct(rows, 'Machine', _machine)}",
        f"- Wall time: {sum(wall) / 60:.1f} min summed over runs ({statistics.fmean(wall):.0f} s per run on "
        "average).",
        f"- {_distinct(rows, 'Versions', _versions)}",
        f"- Git SHA of the runs: {', '.join(sorted({r['summary'].get('git_sha', '?')[:10] for r in rows}))}.",
    ]
    lines += evaluation_lines(rows)
    reused = sorted({r["summary"]["reused_from"] for r in rows if r["summary"].get("reused_from")})
    if reused:  # adopted by `sweep.py --reuse` from another study's saved summaries (same config)
        folders = sorted({_shown(Path(p).parent) for p in reused})
        lines.append(
            f"- {len(reused)} of the {len(rows)} runs were adopted with `sweep.py --reuse` from the saved summaries "
            f"in {', '.join(f'`{f}`' for f in folders)} (identical config; their own git SHA and wall time are kept)."
        )
    return lines + [""]


def _machine(summary: dict) -> str:
    machine, device = summary.get("machine", {}), summary.get("device", {})
    return (
        f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; JAX device: {device.get('count', '?')} × "
        f"{device.get('kind', '?')} ({device.get('platform', '?')})"
    )


def _versions(summary: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(summary.get("versions", {}).items()))


def _distinct(rows: list[dict], label: str, describe) -> str:
    """`label`: what `describe` says of every run, or, where runs differ (a study resumed or extended on another
    machine, runs adopted from another study), each description with its number of runs."""
    counts = Counter(describe(r["summary"]) for r in rows)
    if len(counts) == 1:
        return f"{label}: {next(iter(counts))}."
    return (
        f"{label} (the runs differ): "
        + "; ".join(f"{d} ({n} runs)" for d, n in sorted(counts.items(), key=lambda x: (-x[1], x[0])))
        + "."
    )


def evaluation_lines(rows: list[dict]) -> list[str]:
    """How the runs were evaluated: window mode, documents and bytes scored (corpus runs), test examples (tasks)."""
    seen = defaultdict(set)
    for r in rows:
        e = r["summary"].get("evaluation") or {}
        if "documents" in e:
            seen["corpus"].add(f"{e['mode']}, {e['documents']} test documents ({e['bytes']:,} bytes)")
        elif "examples" in e:
            seen["task"].add(
                f"{e['examples']} test examples per length, the same for every run; accuracy teacher-forced and "
                "free-running (greedy decoding), beside the trivial baselines " + ", ".join(e["baselines"])
            )
    return [f"- Evaluation: {'; '.join(sorted(v))}." for v in seen.values()]


def _shown(path: Path) -> str:
    parts = path.parts
    return str(Path(*parts[parts.index("results") :])) if "results" in parts else str(path)


def _fmt(values: list[float]) -> str:
    """mean ± sample std of the values that are numbers (NaN: a metric that does not apply to a run, e.g. the
    coverage of a random initialisation, is left out); "–" when none is."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    mean = statistics.fmean(values)
    return f"{mean:.4f}" if len(values) == 1 else f"{mean:.4f} ± {statistics.stdev(values):.4f}"


def cell(est: intervals.Estimate | None, values: list[float], *, signed: bool = False) -> str:
    """mean [95% interval] where the bootstrap has one, else `_fmt`; a difference is signed."""
    if est is None:
        return "–"
    if est.lo is not None:
        fmt = "{:+.4f}" if signed else "{:.4f}"
        return f"{fmt.format(est.mean)} [{fmt.format(est.lo)}, {fmt.format(est.hi)}]"
    return f"{est.mean:+.4f}" if signed else _fmt(values)


def _values(members: list[dict], metric: str) -> list[float]:
    values = [m["summary"]["metrics"].get(metric) for m in members]
    return [v for v in values if isinstance(v, int | float)]


def table(groups, names, estimates, gate) -> list[str]:
    lines = ["| run | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for key, members in groups.items():
        cells = []
        for name in names:
            text = cell(estimates[name].get(key), _values(members, name))
            cells.append(text + (" †" if key in gate and "/ood/" in name and text != "–" else ""))
        lines.append(f"| {key} | {len(members)} | " + " | ".join(cells) + " |")
    return lines


def task_baselines(groups, names) -> list[str]:
    """Rows of the trivial baselines on each task's test set (the same for every run of a task)."""
    rows = {}
    for members in groups.values():
        s = members[0]["summary"]
        for b in (s.get("evaluation") or {}).get("baselines", []):
            key = f"baseline: {b} ({s['task']['name']})"
            cells = [
                s["metrics"].get(re.sub(r"^test/(in_dist|ood)/", rf"test/\1/baseline/{b}/", n)) for n in names
            ]
            rows[key] = [f"{v:.4f}" if isinstance(v, float) and "/len_" not in n else "–" for v, n in
                         zip(cells, names, strict=True)]  # fmt: skip
    return [f"| {key} | – | " + " | ".join(cells) + " |" for key, cells in sorted(rows.items())]


def gated_groups(groups, threshold: float) -> set[str]:
    """Task groups whose mean in-distribution free-running sequence accuracy is below `threshold`."""
    out = set()
    for key, members in groups.items():
        values = _values(members, "test/in_dist/free_sequence_accuracy")
        if values and statistics.fmean(values) < threshold:
            out.add(key)
    return out


def differences(groups, names, estimates, baseline: dict) -> list[str]:
    """Each group minus its baseline group (the group with the baseline's knob values and the same other knobs)."""
    lines, label = [], ", ".join(f"{k}={v}" for k, v in baseline.items())
    for key, members in groups.items():
        knobs = {k: v for k, v in members[0]["knobs"].items() if k != "seed"}
        base = ",".join(
            f"{k}={v}" for k, v in sorted({**knobs, **{k: str(v) for k, v in baseline.items()}}.items())
        )
        if base == key or base not in groups:
            continue
        cells = []
        for name in names:
            a, b = estimates[name].get(key), estimates[name].get(base)
            cells.append(cell(intervals.difference(a, b), [], signed=True) if a and b else "–")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if not lines:
        return []
    return [
        "",
        f"Differences to {label} (same other knobs), paired over the same test units: negative = lower than "
        f"{label}.",
        "",
        "| run | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        *lines,
    ]
