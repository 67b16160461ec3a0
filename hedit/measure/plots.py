"""The sweep's plot: compliance and capability against alpha, H-neurons next to the controls."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hedit.io.atomic import save_png
from hedit.measure.summary import KL, OVER_REFUSAL, TRIVIA
from hedit.score.harness import is_harness_task


def plot(summary: dict[str, Any], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["results"])
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        data = summary["results"][task]
        xs = [r["alpha"] for r in data if r["h"] and r["h"]["value"] is not None]
        hs = [r["h"] for r in data if r["h"] and r["h"]["value"] is not None]
        ax.plot(xs, [h["value"] for h in hs], "o-", color="#c0392b", label="H-neurons")
        if task != KL and hs and all(h.get("ci95") for h in hs):
            ax.fill_between(xs, [h["ci95"][0] for h in hs], [h["ci95"][1] for h in hs], color="#c0392b", alpha=0.15)
        cs = [(r["alpha"], r["controls"]) for r in data if r.get("controls")]
        if cs:
            ax.plot(
                [a for a, _ in cs],
                [c["mean"] for _, c in cs],
                "s--",
                color="#34495e",
                label=f"random controls ({summary['controls']})",
            )
            ax.fill_between(
                [a for a, _ in cs], [c["min"] for _, c in cs], [c["max"] for _, c in cs], color="#34495e", alpha=0.12
            )
        label = {
            KL: "KL vs alpha=1 (nats)",
            TRIVIA: "trivia accuracy",
            OVER_REFUSAL: "refusal rate (harmless requests)",
        }.get(task, "compliance rate")
        if is_harness_task(task):
            label = next((h["metric"] for h in hs if h.get("metric")), "score")
        xlabel = "alpha (fitted set: its alphas at strength 1 - alpha)" if summary.get("fitted_set") else "alpha"
        ax.set(title=task, xlabel=xlabel, ylabel=label)
        if task != KL:
            ax.set_ylim(-0.02, 1.02)
        ax.axvline(1.0, color="grey", lw=0.6)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in list(axes.flat)[1 : len(tasks)]:  # one legend for every panel, in a band below them
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    spare = list(axes.flat)[len(tasks) :]
    if spare:  # an empty panel holds the legend, away from every curve and label
        spare[0].legend(handles, labels, loc="center", fontsize=9, frameon=False)
        fig.tight_layout()
    else:  # else a band of its own below the panels
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.5 / (3.2 * rows), 1, 1))
    save_png(fig, path, 110)
    plt.close(fig)
