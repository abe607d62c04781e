"""One figure style (research/studies/plotting.py, research/studies/figures.py): series labelled by the varying knob's
value, in a documented order and colour, bands from the bootstrap, the legend outside the data, linear y axes with
length ticks written out, a subtitle saying how runs were evaluated, PNG and SVG."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from research.studies import figures, plotting

matplotlib.use("Agg")


def test_colours_are_fixed_for_schemes_by_order_for_a_studys_labels_and_stable_otherwise():
    assert (
        plotting.colour("alibi")
        == plotting.colour("alibi")
        == plotting._PALETTE[plotting._FIXED.index("alibi")]
    )
    assert len({plotting.colour(s) for s in plotting._FIXED}) == len(plotting._FIXED)  # no two schemes alike
    assert plotting.colour("alibi, sliding") == plotting.colour(
        "alibi"
    )  # a scheme keeps its colour in a label
    order = ["none", "linear", "ntk", "dynamic_ntk", "yarn", "llama3"]
    assert [plotting.colour(m, order) for m in order] == list(plotting._PALETTE[: len(order)])
    assert plotting.colour("bpe-4k") == plotting.colour("bpe-4k")


def test_short_labels_are_the_values_of_the_varying_knobs():
    assert plotting.short_label({"positional": "alibi", "seed": "1"}) == "alibi"
    assert plotting.short_label({"mode": "sliding", "positional": "rope"}, ["positional"]) == "rope"
    groups = {
        "mode=windows,positional=rope": [{"knobs": {"mode": "windows", "positional": "rope", "seed": "0"}}],
        "mode=windows,positional=alibi": [{"knobs": {"mode": "windows", "positional": "alibi", "seed": "0"}}],
    }
    assert figures.labels(groups) == {
        "mode=windows,positional=rope": "rope",
        "mode=windows,positional=alibi": "alibi",
    }


def _run(positional: str, seed: int, scale: float) -> dict:
    rng = np.random.default_rng(seed)
    doc_bytes = [400, 300, 500, 200, 600]
    per_document, metrics = {}, {}
    for i, length in enumerate((16, 32, 64)):
        bits = [b * scale * (1 + 0.1 * i) * rng.uniform(0.9, 1.1) for b in doc_bytes]
        per_document[f"test/len_{length}"] = [[b, b, x] for b, x in zip(doc_bytes, bits, strict=True)]
        metrics[f"test/len_{length}/bpb"] = sum(bits) / sum(doc_bytes)
    return {
        "name": f"positional={positional},seed={seed}",
        "knobs": {"positional": positional, "seed": str(seed)},
        "summary": {
            "metrics": metrics, "per_document": per_document,
            "evaluation": {"mode": "non-overlapping windows", "documents": 5, "bytes": 2000},
        },
    }  # fmt: skip


def test_the_extrapolation_figure_in_the_house_style(tmp_path, monkeypatch):
    groups = {
        f"positional={p}": [_run(p, s, scale) for s in (0, 1)] for p, scale in (("rope", 1.0), ("alibi", 0.9))
    }
    drawn = []
    save = plotting.save_figure
    monkeypatch.setattr(plotting, "save_figure", lambda fig, path: drawn.append(fig) or save(fig, path))
    names = [f"test/len_{n}/bpb" for n in (16, 32, 64)]
    path = figures.extrapolation(groups, names, tmp_path)
    assert path.exists() and path.with_suffix(".svg").exists()
    (fig,) = drawn
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert [line.get_label() for line in lines] == ["alibi", "rope"]  # short labels, in order
    assert [matplotlib.colors.to_hex(line.get_color()) for line in lines] == [
        plotting.colour("alibi"), plotting.colour("rope")]  # fmt: skip
    assert len(ax.collections) == 2  # one 95% bootstrap band per series
    assert ax.get_legend() is None and fig.legends and fig.legends[0].get_bbox_to_anchor().x0 > 0  # outside
    assert ax.get_yscale() == "linear"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "32", "64"]
    assert "non-overlapping windows; 5 test documents; 2 seeds per line" in fig._suptitle.get_text()


@pytest.mark.parametrize("missing", ["per_document", "evaluation"])
def test_figures_without_per_document_data_draw_means_without_bands(tmp_path, missing):
    groups = {"positional=rope": [_run("rope", 0, 1.0)]}
    for run in groups["positional=rope"]:
        run["summary"].pop(missing)
    assert figures.extrapolation(groups, ["test/len_16/bpb", "test/len_32/bpb"], tmp_path).exists()
