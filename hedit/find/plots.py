"""The probe's plots: H-neurons per layer, and the C sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hedit.io.atomic import save_png


def probe_plots(report: dict[str, Any], layers: int, folder: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = report["per_layer"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.bar(range(layers), [per.get(str(i), 0) for i in range(layers)], color="#c0392b")
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set(xlabel="layer", ylabel="H-neurons", title=f"{report['h_neurons']} H-neurons per layer (C={report['C']:g})")
    fig.tight_layout()
    save_png(fig, folder / "neurons_per_layer.png", 120)
    plt.close(fig)

    sweep = report["c_sweep"]
    cs = [s["C"] for s in sweep]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(cs, [s["heldout"]["accuracy"] for s in sweep], "o-", label="held-out accuracy")
    ax.plot(cs, [s["heldout"]["auroc"] for s in sweep], "s--", label="held-out AUROC")
    ax.set(xscale="log", xlabel="C (inverse L1 strength)", ylabel="score", ylim=(0, 1.02))
    ax2 = ax.twinx()
    ax2.plot(cs, [s["positive"] for s in sweep], "^:", color="#c0392b", label="positive weights")
    ax2.set(ylabel="H-neurons")
    ax.axvline(report["C"], color="grey", lw=0.8)
    ax.set_title(f"C sweep ({report['mode']})")
    # the legend goes below the axes, in a band of its own: never over the data or the axis labels
    fig.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    save_png(fig, folder / "c_sweep.png", 120)
    plt.close(fig)
