"""Study report: runs/<study>/*/summary.json -> results/<study>/{summary.csv, table.md, figures/*.png, runs/}.

Without run directories (a fresh clone), the summaries saved in results/<study>/runs/ are used, so committed tables
and figures regenerate from what is committed.

Generated, never hand-edited. An experiment file may define `derived(summary) -> dict` (metrics computed from a run's
summary, merged into its metrics) and `figures(groups, folder) -> list[Path]` to draw its own
figures (groups: {key: [{"name", "knobs", "summary"}, ...]}); otherwise metrics naming a length (len_N) are drawn as
one extrapolation curve per group. Runs are grouped by their knobs other than `seed`; each metric is reported as
mean ± sample standard deviation over seeds. The table states the command, the machine and the wall time.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import re
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

from research.studies.experiment import load_experiment, split_target, study_name
from research.studies.plotting import save_figure
from research.training.metrics import atomic_write_text

LENGTH = re.compile(r"len_(\d+)")


def parse_run_name(name: str) -> dict:
    return dict(item.split("=", 1) for item in name.split(",") if "=" in item)


def collect(run_root: Path) -> list[dict]:
    rows = []
    for path in sorted(run_root.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        rows.append({"name": path.parent.name, "knobs": parse_run_name(path.parent.name), "summary": summary})
    return rows


def collect_saved(folder: Path) -> list[dict]:
    """The run summaries a previous report saved (results/<study>/runs/<run>.json): a committed study's table and
    figures regenerate from them without its run directories."""
    rows = []
    for path in sorted(folder.glob("*.json")):
        rows.append(
            {"name": path.stem, "knobs": parse_run_name(path.stem), "summary": json.loads(path.read_text())}
        )
    return rows


def _shown(path: Path) -> str:
    """A path as the reader of a committed table knows it: from `results/` on when it lies in a results folder."""
    parts = path.parts
    return str(Path(*parts[parts.index("results") :])) if "results" in parts else str(path)


def _fmt(values: list[float]) -> str:
    """mean ± sample std; NaN entries (a metric that does not apply to a run, e.g. the coverage of a random
    initialisation) are left out, and a cell with none left shows "–"."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {statistics.stdev(values):.4f}"


def group(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        key = ",".join(f"{k}={v}" for k, v in sorted(row["knobs"].items()) if k != "seed") or "all"
        groups[key].append(row)
    return dict(groups)


def write_report(target: str, *, root="runs", out="results", command: str | None = None) -> Path:
    path, arg = split_target(target)
    module = load_experiment(path)
    study = study_name(path, arg)
    rows = collect(Path(root) / study) or collect_saved(Path(out) / study / "runs")
    if not rows:
        raise FileNotFoundError(
            f"no finished runs (summary.json) under {Path(root) / study}, and no saved summaries under "
            f"{Path(out) / study / 'runs'}"
        )
    if hasattr(module, "derived"):  # metrics computed from the summary (e.g. tokens per byte)
        for r in rows:
            r["summary"]["metrics"] = {**r["summary"]["metrics"], **module.derived(r["summary"])}
    metric_names = (
        list(module.metrics()) if hasattr(module, "metrics") else sorted(rows[0]["summary"]["metrics"])
    )
    dest = Path(out) / study
    (dest / "figures").mkdir(parents=True, exist_ok=True)

    # summary.csv: one row per run.
    knob_names = sorted({k for r in rows for k in r["knobs"]})
    lines = [
        [
            "run",
            *knob_names,
            *metric_names,
            "params_total",
            "params_embedding",
            "params_readout",
            "params_positional",
            "params_rest",
            "wall_time_s",
        ]
    ]
    for r in rows:
        s = r["summary"]
        lines.append(
            [
                r["name"],
                *(r["knobs"].get(k, "") for k in knob_names),
                *(s["metrics"].get(m, "") for m in metric_names),
                *(s["params"].get(k, 0) for k in ("total", "embedding", "readout", "positional", "rest")),
                round(s["wall_time_s"], 1),
            ]
        )
    with open(dest / "summary.csv", "w", newline="") as f:
        csv.writer(f).writerows(lines)

    # Per-run config + summary, so the results folder stands on its own.
    runs_dir = dest / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs_dir.mkdir()
    for r in rows:
        (runs_dir / f"{r['name']}.json").write_text(json.dumps(r["summary"], indent=1, sort_keys=True))

    groups = group(rows)
    first = rows[0]["summary"]
    wall = sum(r["summary"]["wall_time_s"] for r in rows)
    machine = first.get("machine", {})
    device = first.get("device", {})
    header = [
        f"# {study}",
        "",
        f"Generated by `python scripts/report.py {target}` on {datetime.date.today().isoformat()} from "
        f"{len(rows)} runs of `{command or f'python scripts/sweep.py {target}'}`.",
        "",
        f"- Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; "
        f"JAX device: {device.get('count', '?')} × {device.get('kind', '?')} ({device.get('platform', '?')}).",
        f"- Wall time: {wall / 60:.1f} min summed over runs "
        f"({statistics.fmean(r['summary']['wall_time_s'] for r in rows):.0f} s per run on average).",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(first.get("versions", {}).items())),
        f"- Git SHA of the runs: {', '.join(sorted({r['summary'].get('git_sha', '?')[:10] for r in rows}))}.",
        "- Values: mean ± sample std over seeds (n = seeds per row).",
        "",
    ]
    reused = sorted({r["summary"]["reused_from"] for r in rows if r["summary"].get("reused_from")})
    if reused:  # adopted by `sweep.py --reuse` from another study's saved summaries (same config)
        folders = sorted({_shown(Path(p).parent) for p in reused})
        header[-1:-1] = [
            f"- {len(reused)} of the {len(rows)} runs were adopted with `sweep.py --reuse` from the saved summaries "
            f"in {', '.join(f'`{f}`' for f in folders)} (identical config; their own git SHA and wall time are "
            "kept)."
        ]
    table = ["| run | n | " + " | ".join(metric_names) + " |", "|---|---|" + "---|" * len(metric_names)]
    for key, members in groups.items():
        cells = [
            _fmt([m["summary"]["metrics"][name] for m in members if name in m["summary"]["metrics"]])
            for name in metric_names
        ]
        table.append(f"| {key} | {len(members)} | " + " | ".join(cells) + " |")
    # An experiment may draw its own figures: figures(groups, folder) -> [paths]; else the extrapolation curve.
    draw = getattr(module, "figures", None) or (lambda g, folder: _figures(g, metric_names, folder))
    figures = draw(groups, dest / "figures")
    body = header + table + [""] + [f"![{f.stem}](figures/{f.name})" for f in figures] + [""]
    atomic_write_text(dest / "table.md", "\n".join(body))
    return dest


def _figures(groups: dict, metric_names: list[str], folder: Path) -> list[Path]:
    """Metrics that name a length (len_N) -> one line per group against N (the extrapolation curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_length = [(int(LENGTH.search(m).group(1)), m) for m in metric_names if LENGTH.search(m)]
    if not with_length:
        return []
    with_length.sort()
    xs = [x for x, _ in with_length]
    unit = metric_names[0].rsplit("/", 1)[-1]
    many = (
        len(groups) > 10
    )  # past the default colour cycle: 20 colours, alternating line styles, legend outside
    fig, ax = plt.subplots(figsize=(9.5 if many else 7, 4.5))
    colours = plt.get_cmap("tab20").colors if many else plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (key, members) in enumerate(sorted(groups.items())):
        means, stds = [], []
        for _, name in with_length:
            values = [m["summary"]["metrics"][name] for m in members if name in m["summary"]["metrics"]]
            means.append(statistics.fmean(values))
            stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        style = {"color": colours[i % len(colours)], "linestyle": ("-", "--")[i % 2] if many else "-"}
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=key, **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.axvline(xs[0], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("evaluation length (tokens); dotted = training length")
    ax.set_ylabel(f"test {unit}")
    ax.set_yscale("log")
    ax.set_title("Length extrapolation (lower is better)")
    if many:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return [save_figure(fig, folder / "extrapolation.png", dpi=120)]
