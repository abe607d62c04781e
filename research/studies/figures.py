"""A study's default figures, in the house style (research/studies/plotting.py):

    extrapolation.png   each metric that names a length (test/len_N/...) against N, one line per group, with its
                        95% bootstrap band where the runs hold per-document totals
    by_position.png     the loss by position inside the window at each evaluation length (corpus runs): where past
                        the training length a scheme breaks
Series are labelled by the values of the knobs that vary between groups; the subtitle says how they were evaluated.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from research.studies import intervals, plotting

LENGTH = re.compile(r"len_(\d+)")


def default_figures(groups: dict, names: list[str], folder: Path) -> list[Path]:
    paths = [extrapolation(groups, names, folder), by_position(groups, folder)]
    return [p for p in paths if p is not None]


def varying_knobs(groups: dict) -> list[str]:
    """The knobs (other than seed) whose value differs between groups."""
    values: dict[str, set] = {}
    for members in groups.values():
        for k, v in members[0]["knobs"].items():
            if k != "seed":
                values.setdefault(k, set()).add(v)
    return [k for k, v in sorted(values.items()) if len(v) > 1] or sorted(values)


def labels(groups: dict) -> dict[str, str]:
    varying = varying_knobs(groups)
    return {key: plotting.short_label(members[0]["knobs"], varying) for key, members in groups.items()}


def evaluation_note(groups: dict, bands: str = "bootstrap") -> str:
    """The subtitle: window mode, documents scored and seeds, and what the figure's bands are: "bootstrap" (95%
    intervals over test units, where the summaries allow them) or "seeds" (min..max over seeds)."""
    runs = [m for members in groups.values() for m in members]
    modes = sorted({(r["summary"].get("evaluation") or {}).get("mode", "") for r in runs} - {""})
    docs = sorted({(r["summary"].get("evaluation") or {}).get("documents") for r in runs} - {None})
    seeds = sorted({len(members) for members in groups.values()})
    parts = [*modes]
    if docs:
        parts.append(f"{', '.join(map(str, docs))} test documents")
    seeds_text = f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    parts.append(f"{seeds_text} seed{'s' if seeds[-1] > 1 else ''} per line")
    if bands == "bootstrap" and intervals.describe(groups):
        unit = "test examples" if any("per_example" in r["summary"] for r in runs) else "documents"
        parts.append(f"bands: 95% bootstrap over {unit}")
    elif bands == "seeds" and seeds[-1] > 1:
        parts.append("bands: min..max over seeds")
    return "; ".join(parts)


def extrapolation(
    groups: dict, names: list[str], folder: Path, *, panels: dict | None = None, name: str = "extrapolation",
    label=None, order=None, title: str = "Test loss against evaluation length",
) -> Path | None:  # fmt: skip
    """The metric against evaluation length; `panels` ({title: groups}) draws several side by side with one y
    axis (default: one panel of every group). `label(knobs) -> str` names a group's line (default: the knobs that
    vary); `order`, the labels in the order of their colours (plotting.colour)."""
    with_length = sorted((int(LENGTH.search(m).group(1)), m) for m in names if LENGTH.search(m))
    if not with_length:
        return None
    panels = panels or {"": groups}
    fig, axes = plotting.figure(
        1, len(panels), width=5.2 if len(panels) > 1 else 6.8, height=4.2, sharey=True
    )
    for ax, (panel, subset) in zip(axes[0], panels.items(), strict=True):
        _length_curves(ax, subset, with_length, label=label, order=order)
        ax.set_title(panel)
    axes[0][0].set_ylabel(f"test {with_length[0][1].rsplit('/', 1)[-1]} (lower is better)")
    plotting.legend(fig)
    plotting.subtitle(fig, title, evaluation_note(groups))
    return plotting.save_figure(fig, folder / f"{name}.png")


def _length_curves(ax, groups: dict, with_length: list[tuple[int, str]], *, label=None, order=None) -> None:
    xs = [x for x, _ in with_length]
    estimates = {m: intervals.estimate(groups, m) for _, m in with_length}
    named = labels(groups) if label is None else {k: label(g[0]["knobs"]) for k, g in groups.items()}
    rank = (
        (lambda kv: list(order).index(kv[1]) if kv[1] in order else len(order))
        if order
        else (lambda kv: kv[1])
    )
    for key, label in sorted(named.items(), key=rank):
        points = [(x, estimates[m].get(key)) for x, m in with_length]
        points = [(x, e) for x, e in points if e is not None]
        if not points:
            continue
        band = None
        if all(e.lo is not None for _, e in points):
            band = ([e.lo for _, e in points], [e.hi for _, e in points])
        plotting.line(ax, [x for x, _ in points], [e.mean for _, e in points], label, band=band, order=order)
    plotting.length_axis(ax, xs)
    ax.axvline(xs[0], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("evaluation length (tokens); dotted: the training length")


def by_position(groups: dict, folder: Path, *, name: str = "by_position") -> Path | None:
    """Bits per token by position in the window, one panel per evaluation length, one line per group (mean over
    seeds, band: min-max over seeds)."""
    first = next(iter(groups.values()))[0]["summary"].get("by_position") or {}
    lengths = sorted(first, key=lambda k: int(LENGTH.search(k).group(1)))
    if not lengths:
        return None
    train_len = (next(iter(groups.values()))[0]["summary"].get("config") or {}).get("data", {}).get("seq_len")
    fig, axes = plotting.figure(1, len(lengths), width=4.0, height=3.6, sharey=True)
    for ax, key_of_length in zip(axes[0], lengths, strict=True):
        length = int(LENGTH.search(key_of_length).group(1))
        for key, label in sorted(labels(groups).items(), key=lambda kv: kv[1]):
            curves = [m["summary"].get("by_position", {}).get(key_of_length) for m in groups[key]]
            curves = np.asarray([c["bits_per_token"] for c in curves if c])
            if not len(curves):
                continue
            x = (np.arange(curves.shape[1]) + 0.5) * length / curves.shape[1]
            band = (curves.min(0), curves.max(0)) if len(curves) > 1 else None
            plotting.line(ax, x, curves.mean(0), label, band=band, marker="")
        if train_len and train_len < length:
            ax.axvline(train_len, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"windows of {length} tokens")
        ax.set_xlabel("position in the window (tokens)")
    axes[0][0].set_ylabel("test bits per token")
    plotting.legend(fig)
    note = evaluation_note(groups).replace("bands: 95% bootstrap over documents", "bands: min-max over seeds")
    plotting.subtitle(fig, "Test loss by position in the window (dotted: the training length)", note)
    return plotting.save_figure(fig, folder / f"{name}.png")
