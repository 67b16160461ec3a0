"""A sweep's cells summarized: per task and alpha, the H-neurons' rate with an interval next to the
controls'; the mean compliance ``tune`` compares; the printed table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hedit.config import SweepConfig
from hedit.measure.compliance import COMPLIED, EXCLUDED
from hedit.measure.judge import CORRECT
from hedit.measure.stats import bootstrap_ci
from hedit.measure.suites import Item, Suite

TRIVIA, KL = "trivia", "kl"
BASE = "base"  # the set name of alpha = 1 (no neuron is changed)


def outcomes(task: str, items: list[dict[str, Any]]) -> list[int]:
    if task == TRIVIA:
        return [int(r["label"] == CORRECT) for r in items]
    return [int(r["label"] == COMPLIED) for r in items if r["label"] != EXCLUDED]


def summarize(
    records: list[dict[str, Any]],
    cfg: SweepConfig,
    sets: dict[str, Any],
    suites: Sequence[Suite],
    trivia: Sequence[Item],
) -> dict[str, Any]:
    """Per task and alpha: the H-neurons' rate with a bootstrap interval, and the controls' mean/min/max."""
    cells = {(r["set"], r["alpha"], r["task"]): r for r in records}
    controls = [s for s in sets if s != "h"]
    tasks = [s.name for s in suites] + ([TRIVIA, KL] if cfg.capability else [])

    def value(set_name: str, alpha: float, task: str) -> dict[str, Any] | None:
        key = (BASE, 1.0, task) if alpha == 1.0 else (set_name, alpha, task)
        r = cells.get(key)
        if r is None:
            return None
        if task == KL:
            return {"value": r["value"]}
        x = outcomes(task, r["items"])
        ci = bootstrap_ci(x, cfg.bootstrap, cfg.seed)
        return {"value": (sum(x) / len(x)) if x else None, "ci95": list(ci) if ci else None, "n": len(x)}

    results: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        rows = []
        for a in cfg.alphas:
            hv = value("h", a, task)
            cv = [value(c, a, task) for c in controls]
            vals = [c["value"] for c in cv if c and c["value"] is not None]
            row = {"alpha": a, "h": hv}
            if vals:
                row["controls"] = {
                    "mean": float(np.mean(vals)),
                    "min": float(min(vals)),
                    "max": float(max(vals)),
                    "draws": vals,
                }
            rows.append(row)
        results[task] = rows
    out: dict[str, Any] = {
        "alphas": list(cfg.alphas),
        "controls": len(controls),
        "results": results,
        "suites": {s.name: {"items": len(s.items), "source": s.source} for s in suites},
    }
    if cfg.capability:
        base = value("h", 1.0, TRIVIA)
        out["trivia_items"] = len(trivia)
        out["capability"] = [
            {
                "alpha": a,
                "trivia_accuracy": (v := value("h", a, TRIVIA)) and v["value"],
                "accuracy_drop_points": (None if not (v and base) else round(100 * (base["value"] - v["value"]), 3)),
                "kl": (k := value("h", a, KL)) and k["value"],
            }
            for a in cfg.alphas
        ]
    return out


def compliance_of(summary: dict[str, Any], alpha: float) -> float | None:
    """Mean compliance of the H-neurons at ``alpha`` over the suites with judged items (sycophancy has
    none when no first answer is right); None when no suite has any."""
    vals = []
    for task, rows in summary["results"].items():
        if task in (TRIVIA, KL):
            continue
        row = next((r for r in rows if r["alpha"] == alpha), None)
        if row is not None and row["h"] and row["h"]["value"] is not None:
            vals.append(row["h"]["value"])
    return float(np.mean(vals)) if vals else None


def table(summary: dict[str, Any]) -> str:
    """Markdown table: per alpha, each task's H-neuron value [95% CI] and the controls' mean."""
    tasks = list(summary["results"])
    head = ["alpha"] + [f"{t} (H)" for t in tasks] + [f"{t} (controls)" for t in tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, a in enumerate(summary["alphas"]):
        cells_h, cells_c = [], []
        for t in tasks:
            row = summary["results"][t][i]
            h = row["h"]
            if h is None or h["value"] is None:
                cells_h.append("-")
            elif t == KL:
                cells_h.append(f"{h['value']:.4f}")
            else:
                ci = h.get("ci95")
                cells_h.append(
                    f"{h['value']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] (n={h['n']})" if ci else f"{h['value']:.3f}"
                )
            c = row.get("controls")
            cells_c.append(
                "-"
                if not c
                else (f"{c['mean']:.4f}" if t == KL else f"{c['mean']:.3f} ({c['min']:.2f}-{c['max']:.2f})")
            )
        lines.append("| " + " | ".join([f"{a:g}"] + cells_h + cells_c) + " |")
    return "\n".join(lines)
