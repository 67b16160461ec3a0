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


def stability_plot(stab: dict[str, Any], folder: Path, most: int = 80) -> None:
    """stability.png: the selection frequency of every neuron any refit chose (the ``most`` most
    frequent), the single fit's neurons in red, and the threshold of the stable set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    per = stab["per_neuron"][:most]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    colors = ["#c0392b" if r["in_single_fit"] else "#7f8c8d" for r in per]
    ax.bar(range(len(per)), [r["frequency"] for r in per], color=colors, width=0.85)
    ax.axhline(stab["threshold"], color="black", ls="--", lw=0.8)
    ax.set(ylim=(0, 1.05), xlim=(-1, max(len(per), 1)), ylabel="selection frequency")
    ax.set_xlabel(f"neurons any refit chose, most frequent first ({len(per)} of {len(stab['per_neuron'])} shown)")
    ax.set_title(
        f"stability over {stab['resamples']} half-sample refits: {stab['stable']} stable "
        f"(>= {stab['threshold']:g}), {stab['overlap']} of them in the single fit's {stab['single_fit']}",
        fontsize=9,
    )
    handles = [
        Patch(color="#c0392b", label="in the single fit"),
        Patch(color="#7f8c8d", label="not in the single fit"),
        plt.Line2D([], [], color="black", ls="--", lw=0.8, label="threshold"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    save_png(fig, folder / "stability.png", 120)
    plt.close(fig)
