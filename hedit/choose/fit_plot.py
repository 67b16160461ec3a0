"""``fit.png``: the fitted alphas (a histogram per source) and, per suite, the held-out complied and
resisted rates of every edit with their paired 95% intervals against no edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hedit.io.atomic import save_png

COLORS = {"probe": "#c0392b", "stable": "#d35400", "attribution": "#2471a3"}


def plot_fit(report: dict[str, Any], alphas: dict, origin: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = list(report["heldout"])
    fig, axes = plt.subplots(1, 1 + len(suites), figsize=(4.4 * (1 + len(suites)), 3.6), squeeze=False)
    ax = axes[0, 0]
    by: dict[str, list[float]] = {}
    for site, pairs in alphas.items():
        for j, a in pairs:
            by.setdefault(origin.get((site, j), "attribution"), []).append(a)
    ax.hist(list(by.values()), bins=24, stacked=True, color=[COLORS.get(k, "grey") for k in by], label=list(by))
    ax.axvline(1.0, color="grey", lw=0.6)
    ax.set(title="fitted alphas", xlabel="alpha (1: unchanged)", ylabel="neurons")
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(0, -0.2), ncol=len(by))
    for ax, name in zip(axes[0, 1:], suites):
        row = report["heldout"][name]
        cells = list(row)
        xs = range(len(cells))
        for shift, key, color in ((-0.15, "complied", "#c0392b"), (0.15, "resisted", "#27ae60")):
            vals = [row[c][key] if row[c][key] is not None else float("nan") for c in cells]
            base = row["none"][key] or 0.0
            lo = [v - (base + row[c][f"{key}_change"]["ci95"][0]) if c != "none" else 0 for c, v in zip(cells, vals)]
            hi = [(base + row[c][f"{key}_change"]["ci95"][1]) - v if c != "none" else 0 for c, v in zip(cells, vals)]
            ax.errorbar([x + shift for x in xs], vals, yerr=[[max(0, e) for e in lo], [max(0, e) for e in hi]],
                        fmt="o", color=color, label=key, capsize=3)  # fmt: skip
        ax.set_xticks(list(xs), [c.replace("control-", "ctl ") for c in cells], rotation=30, fontsize=8)
        ax.set(title=f"{name} (held out, {row['fit']['items']} items)", ylabel="rate", ylim=(-0.02, 1.02))
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(0, -0.25), ncol=2)
    fig.tight_layout()
    save_png(fig, path, 110)
    plt.close(fig)
