"""One figure style for every report, experiment and script.

    figure(rows, cols)             a figure in the house style (linear axes, light grid, no top/right spines)
    colour(label)                  the same colour for a label in every figure of every study (a positional
                                   scheme, a tokenizer, a design): the registered schemes first, in a fixed order
    line(ax, x, y, label, band=)   a series with an optional interval band (lo, hi)
    bars(ax, categories, series)   grouped bars, one colour per series label
    legend(fig)                    one legend, outside the data, to the right
    subtitle(fig, text)            what was evaluated: mode, documents scored, seeds
    length_axis(ax, lengths)       a log2 axis of evaluation lengths labelled 64, 128, ...
    save_figure(fig, path)         PNG and SVG beside it, the folder created, the figure closed
Labels are short: the varying knob's value (`alibi`), not `positional=alibi` (`short_label`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Fixed colours: the classic schemes first (the same six colours in every study), then every other label.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363",
)  # fmt: skip
_FIXED = (
    "nope", "learned", "sinusoidal", "rope", "alibi", "t5_bias", "scaled_sinusoidal", "xpos", "kerple", "sandwich",
    "fire", "cope", "xl_relative", "dynamic_bias", "data_dependent_alibi", "per_layer",
)  # fmt: skip


def colour(label: str, order=None) -> str:
    """A label's colour, the same in every figure: fixed for the positional schemes (every study); for a study's
    own labels, by their place in `order` (the experiment's list of them, so no two collide); else from a hash of
    the label (stable across runs and machines)."""
    if (fixed := _fixed_colour(label)) is not None:
        return fixed
    if order is not None and label in order:  # the palette entries the fixed labels in `order` leave free
        taken = {_fixed_colour(o) for o in order}
        free = [c for c in _PALETTE if c not in taken]
        own = [o for o in order if _fixed_colour(o) is None]
        return free[own.index(label) % len(free)]
    digest = int(hashlib.sha1(label.encode()).hexdigest(), 16)
    return _PALETTE[digest % len(_PALETTE)]


def _fixed_colour(label: str) -> str | None:
    """The fixed colour of a positional scheme's label (`alibi`, `alibi, sliding`), else None."""
    base = label.split(" ")[0].split(",")[0]
    return _PALETTE[_FIXED.index(base) % len(_PALETTE)] if base in _FIXED else None


def short_label(knobs: dict, varying: list[str] | None = None) -> str:
    """The values of the knobs that vary (all when None), joined: `alibi` or `alibi, sliding`."""
    keys = [k for k in sorted(knobs) if k != "seed" and (varying is None or k in varying)]
    return ", ".join(str(knobs[k]) for k in keys) or "all"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


STYLE = {
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8,
    "figure.dpi": 110, "axes.formatter.useoffset": False,
}  # fmt: skip


def figure(rows: int = 1, cols: int = 1, *, width: float = 6.5, height: float = 3.8, **options):
    """(fig, axes[rows][cols]) in the house style."""
    plt = _pyplot()
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, **options)
    for ax in fig.axes:
        for key, value in (("top", False), ("right", False)):
            ax.spines[key].set_visible(value)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
    return fig, axes


def line(ax, x, y, label: str, *, band=None, marker: str = "o", order=None, **options):
    """One series in its label's colour (`order`: see `colour`); `band` = (lo, hi) drawn as a shaded interval."""
    c = options.pop("color", colour(label, order))
    ax.plot(x, y, marker=marker, markersize=3.5, linewidth=1.5, label=label, color=c, **options)
    if band is not None:
        ax.fill_between(x, band[0], band[1], color=c, alpha=0.15, linewidth=0)


def bars(ax, categories: list[str], series: dict[str, list[float]], *, order=None) -> None:
    """Grouped bars: for each category, one bar per series (label -> values in category order), each series in its
    label's colour (`order`: see `colour`)."""
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        x = [c + (i - (len(series) - 1) / 2) * width for c in range(len(categories))]
        ax.bar(x, values, width, label=label, color=colour(label, order))
    ax.set_xticks(range(len(categories)), categories)
    ax.grid(True, axis="y", alpha=0.3)
    ax.grid(False, axis="x")


def legend(fig, *, title: str | None = None) -> None:
    """One legend for the figure's series (each label once), outside the data, to the right of the axes."""
    entries = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(
            list(entries.values()), list(entries), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
            title=title, fontsize=8,
        )  # fmt: skip


def subtitle(fig, title: str, detail: str | None = None) -> None:
    """A bold title and, below it, what was evaluated (mode, documents scored, seeds)."""
    fig.suptitle(title if detail is None else f"{title}\n{detail}", fontsize=10)


def length_axis(ax, lengths) -> None:
    """A log2 axis of evaluation lengths, labelled with the lengths themselves (64, 128, ...)."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(lengths), [str(x) for x in lengths])
    ax.minorticks_off()


def save_figure(fig, path: str | Path, *, dpi: int = 130) -> Path:
    """Lay out and write the figure as PNG (at `path`) and SVG beside it, creating the folder; close it. Returns
    the PNG's path."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    for target in (path, path.with_suffix(".svg")):
        fig.savefig(
            target, dpi=dpi, bbox_inches="tight", metadata={"Date": None} if target.suffix == ".svg" else {}
        )
    plt.close(fig)
    return path
