"""A sweep's cells summarized: per task and alpha, the H-neurons' rate with an interval next to the
controls'; the mean compliance ``tune`` compares; the printed table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hedit.config import SweepConfig
from hedit.score.compliance import COMPLIED, EXCLUDED, REFUSED, UNPARSED
from hedit.score.harness import is_harness_task, task_key
from hedit.score.judge import CORRECT
from hedit.score.stats import bootstrap_ci, dose_response, paired_difference
from hedit.score.suites import Item, Suite

TRIVIA, KL, OVER_REFUSAL = "trivia", "kl", "over-refusal"
CAPABILITY = (TRIVIA, KL, OVER_REFUSAL)
BASE = "base"  # the set name of alpha = 1 (no neuron is changed)


def outcomes(task: str, items: list[dict[str, Any]]) -> list[int]:
    if task == TRIVIA:
        return [int(r["label"] == CORRECT) for r in items]
    if task == OVER_REFUSAL:
        return [int(r["label"] == REFUSED) for r in items]
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
    if any(r["task"] == OVER_REFUSAL for r in records):
        tasks.append(OVER_REFUSAL)
    tasks += [task_key(name) for name in cfg.lm_eval]

    def value(set_name: str, alpha: float, task: str) -> dict[str, Any] | None:
        key = (BASE, 1.0, task) if alpha == 1.0 else (set_name, alpha, task)
        r = cells.get(key)
        if r is None:
            return None
        if task == KL:
            return {"value": r["value"]}
        if is_harness_task(task):  # lm-eval's aggregate, its per-document values for the interval
            x = r["value"]["outcomes"]
            ci = bootstrap_ci(x, cfg.bootstrap, cfg.seed)
            return {"value": r["value"]["value"], "ci95": list(ci) if ci else None, "n": len(x)} | {
                "metric": r["value"]["metric"]
            }
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
    out |= dose_summary(records, cfg, sets, suites)
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
        if OVER_REFUSAL in tasks:
            base_refusal = value("h", 1.0, OVER_REFUSAL)
            for row in out["capability"]:
                v = value("h", row["alpha"], OVER_REFUSAL)
                row["over_refusal"] = v and v["value"]
                row["over_refusal_rise_points"] = (
                    None
                    if not (v and base_refusal) or v["value"] is None
                    else round(100 * (v["value"] - base_refusal["value"]), 3)
                )
    if cfg.lm_eval:  # the H-neurons' score per alpha, and its drop against alpha 1 (what tune bounds)
        out["lm_eval"] = {}
        for name in cfg.lm_eval:
            base = value("h", 1.0, task_key(name))
            rows = []
            for a in cfg.alphas:
                v = value("h", a, task_key(name))
                drop = None if not (v and base) else round(100 * (base["value"] - v["value"]), 3)
                rows.append({"alpha": a, "value": v and v["value"], "drop_points": drop})
            out["lm_eval"][name] = {"metric": base and base["metric"], "per_alpha": rows}
    return out


def _by_item(cell: dict[str, Any] | None, task: str) -> dict[str, int]:
    """item id -> 0/1 outcome of a cell (excluded items left out)."""
    if cell is None:
        return {}
    return {r["id"]: o for r in cell["items"] if r["label"] not in (EXCLUDED, UNPARSED) for o in outcomes(task, [r])}


def dose_summary(
    records: list[dict[str, Any]], cfg: SweepConfig, sets: dict[str, Any], suites: Sequence[Suite]
) -> dict[str, Any]:
    """What the paired design of a sweep can say (every alpha answers the same items):

    - per suite and neuron set, the slope of the rate against alpha with a paired bootstrap interval
      (items resampled, each keeping its outcome at every alpha), and the smallest slope this many items
      could tell from zero; the H-neurons' slope against the distribution of the controls' slopes;
    - per alpha, the H-neurons' paired change of the mean compliance against alpha 1 (what ``tune`` uses);
    - the share of items whose label (complied or not) changes at any alpha, and whose reply's wording
      does, and per alpha the empty replies and the
      judge's unparseable verdicts (a judge that fails more at one alpha fakes an effect)."""
    cells = {(r["set"], r["alpha"], r["task"]): r for r in records}
    alphas = list(cfg.alphas)

    def cell(set_name: str, a: float, task: str):
        return cells.get((BASE, 1.0, task) if a == 1.0 else (set_name, a, task))

    dose: dict[str, Any] = {}
    changes: dict[str, Any] = {}
    flips: dict[str, Any] = {}
    failures: dict[str, Any] = {}
    for s in suites:
        task = s.name
        per_set = {}
        for set_name in sets:
            got = [_by_item(cell(set_name, a, task), task) for a in alphas]
            if not all(got):
                continue
            common = sorted(set.intersection(*(set(g) for g in got)))
            per_set[set_name] = dose_response(
                alphas, np.array([[g[i] for i in common] for g in got]), cfg.bootstrap, cfg.seed
            )
        if "h" in per_set:
            ctrl = [v["slope"] for k, v in per_set.items() if k != "h" and v["slope"] is not None]
            h = per_set["h"]
            dose[task] = {"h": h, "controls": per_set and {k: v for k, v in per_set.items() if k != "h"}}
            if ctrl and h["slope"] is not None:
                dose[task]["controls_slopes"] = {
                    "min": min(ctrl),
                    "max": max(ctrl),
                    "mean": float(np.mean(ctrl)),
                    "share_at_least_h": float(np.mean([c >= h["slope"] for c in ctrl])),
                }
        replies = [cell("h", a, task) for a in alphas]
        if all(replies):
            by = [{r["id"]: r["replies"] for r in c["items"]} for c in replies]
            ref = by[alphas.index(1.0)] if 1.0 in alphas else by[0]
            ids = sorted(set.intersection(*(set(b) for b in by)))
            changes[task] = float(np.mean([any(b[i] != ref[i] for b in by) for i in ids])) if ids else None
            outs = [_by_item(c, task) for c in replies]  # the judged outcome, not the wording
            common = sorted(set.intersection(*(set(o) for o in outs)))
            flips[task] = float(np.mean([len({o[i] for o in outs}) > 1 for i in common])) if common else None
            failures[task] = [
                {
                    "alpha": a,
                    "empty_replies": float(np.mean([not any(x.strip() for x in r["replies"]) for r in c["items"]]))
                    if c["items"]
                    else None,
                    "unparsed_verdicts": float(np.mean([r["label"] == UNPARSED for r in c["items"]]))
                    if c["items"]
                    else None,
                }
                for a, c in zip(alphas, replies)
            ]
    paired = []
    for a in alphas:
        pairs = []
        for s in suites:
            base, other = _by_item(cell("h", 1.0, s.name), s.name), _by_item(cell("h", a, s.name), s.name)
            common = sorted(set(base) & set(other))
            if common:
                pairs.append((np.array([base[i] for i in common]), np.array([other[i] for i in common])))
        paired.append({"alpha": a} | paired_difference(pairs, cfg.bootstrap, cfg.seed))
    return {
        "dose_response": dose,
        "paired_vs_alpha_1": paired,
        "items_changed_at_any_alpha": changes,
        "items_flipped_at_any_alpha": flips,
        "judge_failures": failures,
    }


def dose_lines(summary: dict[str, Any]) -> list[str]:
    """The slopes in words, with the power statement beside every null result."""
    out = []
    for task, d in summary.get("dose_response", {}).items():
        h = d["h"]
        if h["slope"] is None:
            continue
        lo, hi = h["ci95"]
        line = f"{task}: {100 * h['slope']:+.2f} points per unit of alpha [{100 * lo:+.2f}, {100 * hi:+.2f}]"
        c = d.get("controls_slopes")
        if c:
            line += f"; random controls {100 * c['min']:+.2f} to {100 * c['max']:+.2f}"
        changed = summary.get("items_changed_at_any_alpha", {}).get(task)
        flipped = summary.get("items_flipped_at_any_alpha", {}).get(task)
        if flipped is not None:
            line += f"; {100 * flipped:.0f}% of items change label at some alpha"
        if changed is not None:
            line += f" ({100 * changed:.0f}% change the reply's wording)"
        if lo <= 0 <= hi:
            line += (
                f" - no effect found; with {h['items']} items the sweep could tell a slope of "
                f"{100 * h['min_detectable']:.2f} points per unit of alpha from zero (80% power)"
            )
        out.append(line)
    return out


def sweep_evidence(summary: dict[str, Any]) -> dict[str, Any]:
    """The sweep's slopes in the compact form an edited model's card and ``hedit.json`` carry: per suite
    the H-neurons' slope with its interval and power, the controls' slopes, and the items that change."""
    out = {}
    for task, d in summary.get("dose_response", {}).items():
        h = d["h"]
        if h["slope"] is None:
            continue
        out[task] = {
            "slope": h["slope"],
            "ci95": h["ci95"],
            "min_detectable": h["min_detectable"],
            "items": h["items"],
            "controls_slopes": d.get("controls_slopes"),
            "items_changed_at_any_alpha": summary.get("items_changed_at_any_alpha", {}).get(task),
            "items_flipped_at_any_alpha": summary.get("items_flipped_at_any_alpha", {}).get(task),
        }
    return {"alphas": summary.get("alphas"), "dose_response": out} | (
        {"lm_eval": summary["lm_eval"]} if summary.get("lm_eval") else {}
    )


def compliance_of(summary: dict[str, Any], alpha: float) -> float | None:
    """Mean compliance of the H-neurons at ``alpha`` over the suites with judged items (sycophancy has
    none when no first answer is right); None when no suite has any."""
    vals = []
    for task, rows in summary["results"].items():
        if task in CAPABILITY or is_harness_task(task):
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
