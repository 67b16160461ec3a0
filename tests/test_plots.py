"""The plots people read: no legend over the data or over an axis's labels (tick labels, axis labels,
titles), and the over-refusal panel named for what it measures."""

from __future__ import annotations

from pathlib import Path

import pytest

import hedit.find.plots as find_plots
import hedit.measure.plots as measure_plots


def _overlaps(fig) -> list[str]:
    """Legends whose box overlaps an axes with content (its plot area, ticks, labels or title)."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    bad = []
    for leg in legends:
        box = leg.get_window_extent(r)
        for ax in fig.axes:
            if not ax.axison or ax.get_legend() is leg:
                continue
            if box.overlaps(ax.get_tightbbox(r)):
                bad.append(f"legend over {ax.get_title() or ax.get_ylabel()!r}")
    return bad


@pytest.fixture
def figures(monkeypatch):
    seen = {}

    def capture(fig, path, dpi=120):
        seen[Path(path).name] = (_overlaps(fig), [ax.get_ylabel() for ax in fig.axes])

    monkeypatch.setattr(find_plots, "save_png", capture)
    monkeypatch.setattr(measure_plots, "save_png", capture)
    return seen


def test_the_c_sweep_legend_stays_off_the_axes(figures, tmp_path):
    sweep = [
        {"C": c, "heldout": {"accuracy": 0.5 + 0.08 * i, "auroc": 0.6 + 0.05 * i}, "positive": 3 * i + 1}
        for i, c in enumerate([0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 9.0])
    ]
    report = {"per_layer": {"0": 2, "3": 5}, "h_neurons": 7, "C": 1.0, "mode": "3-vs-1", "c_sweep": sweep}
    find_plots.probe_plots(report, 8, tmp_path)
    assert figures["c_sweep.png"][0] == [] and figures["neurons_per_layer.png"][0] == []


@pytest.mark.parametrize("tasks", [6, 7])  # a full grid (legend in a band) and one with a spare panel
def test_the_sweep_legend_stays_off_the_panels(figures, tmp_path, tasks):
    names = ["false-premise", "misleading-context", "sycophancy", "jailbreak", "trivia", "over-refusal", "kl"]
    rows = [
        {"alpha": a, "h": {"value": 0.2 + 0.1 * a, "ci95": [0.1 + 0.1 * a, 0.3 + 0.1 * a]},
         "controls": {"mean": 0.3, "min": 0.2, "max": 0.4}}
        for a in (0.0, 0.5, 1.0, 2.0, 3.0)
    ]  # fmt: skip
    measure_plots.plot({"results": {t: rows for t in names[:tasks]}, "controls": 3}, tmp_path / "sweep.png")
    overlaps, labels = figures["sweep.png"]
    assert overlaps == []
    assert "refusal rate (harmless requests)" in labels and labels.count("compliance rate") == 4
