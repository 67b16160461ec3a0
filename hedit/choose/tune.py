"""`hedit tune`: choose alpha from a sweep and write it into the neurons file, with the evidence.

Rule: among the swept alphas whose capability cost is within bounds (held-out trivia accuracy at most
``max_accuracy_drop`` points below alpha = 1, mean KL at most ``max_kl``, the refusal rate on harmless
requests at most ``max_over_refusal`` points above alpha = 1 when the jailbreak suite runs, each lm-eval
task of ``max_drop`` at most its points below alpha = 1) and whose
drop in compliance against alpha = 1 is significant (a paired comparison: the same items at both
alphas, a bootstrap 95% interval below 0), take the one with the lowest mean compliance over the
suites; ties go to the alpha closest to 1 (the smaller edit). When no alpha qualifies, alpha = 1 is
written (no edit) and the note says so. A summary without item-level pairs (older sweeps) is judged on
the point estimates alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hedit.config import Bounds, EngineConfig, TuneConfig
from hedit.engine.choice import Choice
from hedit.errors import HeditError
from hedit.io.atomic import check_place
from hedit.measure.summary import compliance_of, sweep_evidence
from hedit.measure.sweep import run_sweep
from hedit.neurons import NeuronSet
from hedit.score.compliance import RULES


def choose_alpha(summary: dict[str, Any], bounds: Bounds = Bounds()) -> dict[str, Any]:
    """The chosen alpha and, for every alpha, why it was kept or rejected."""
    cap = {c["alpha"]: c for c in summary.get("capability", [])}
    if 1.0 not in summary["alphas"]:
        raise HeditError("tune needs alpha 1 in the sweep (the unedited reference)")
    if not cap:
        raise HeditError("tune needs the capability measurements (the sweep ran without them)")
    base = compliance_of(summary, 1.0)
    if base is None:
        raise HeditError("no suite has judged items at alpha 1; nothing to tune against")
    paired = {p["alpha"]: p for p in summary.get("paired_vs_alpha_1", [])}
    drops, harness = bounds.drops(), summary.get("lm_eval", {})
    for name in drops:
        if name not in harness:
            raise HeditError(
                f"--max-drop names lm-eval task {name!r}, which the sweep did not run (add it to --lm-eval)"
            )
    rows, best = [], None
    for a in summary["alphas"]:
        comp, c = compliance_of(summary, a), cap[a]
        why = []
        if comp is None:
            why.append("no judged items")
        p = paired.get(a)
        if p is not None and a != 1.0 and not (p["ci95"][1] < 0):
            why.append(
                f"no significant drop against alpha 1 (paired change {p['mean']:+.3f}, 95% interval "
                f"[{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}])"
            )
        rise = c.get("over_refusal_rise_points")
        if rise is not None and rise > bounds.max_over_refusal:
            why.append(f"refuses {rise} points more harmless requests > {bounds.max_over_refusal}")
        if c["accuracy_drop_points"] is None or c["accuracy_drop_points"] > bounds.max_accuracy_drop:
            why.append(f"trivia accuracy drop {c['accuracy_drop_points']} points > {bounds.max_accuracy_drop}")
        if c["kl"] is None or c["kl"] > bounds.max_kl:
            why.append(f"KL {c['kl']} > {bounds.max_kl}")
        task_drops = {n: next(r["drop_points"] for r in h["per_alpha"] if r["alpha"] == a) for n, h in harness.items()}
        for name, limit in drops.items():
            d = task_drops[name]
            if d is None or d > limit:
                why.append(f"{name} drop {d} points > {limit}")
        rows.append(
            {
                "alpha": a,
                "compliance": comp,
                "trivia_accuracy": c["trivia_accuracy"],
                "accuracy_drop_points": c["accuracy_drop_points"],
                "kl": c["kl"],
                "over_refusal_rise_points": rise,
                "lm_eval_drop_points": task_drops or None,
                "paired_change": p,
                "within_bounds": not why,
                "rejected_because": why,
            }
        )
        if not why and (best is None or (comp, abs(a - 1)) < (best["compliance"], abs(best["alpha"] - 1))):
            best = rows[-1]
    if best is None or best["compliance"] >= base:
        test = "significantly (paired 95% interval below 0) " if paired else ""
        chosen, reason = (
            1.0,
            f"no alpha lowers compliance {test}below alpha = 1 within the bounds; alpha 1 means no edit",
        )
    else:
        chosen = best["alpha"]
        reason = (
            f"lowest mean compliance within bounds: {best['compliance']:.3f} against {base:.3f} at alpha 1, "
            f"trivia accuracy drop {best['accuracy_drop_points']:.1f} points, KL {best['kl']:.4f}"
        )
    return {
        "alpha": chosen,
        "reason": reason,
        "compliance_at_1": base,
        "bounds": {
            "max_accuracy_drop_points": bounds.max_accuracy_drop,
            "max_kl": bounds.max_kl,
            "max_over_refusal_points": bounds.max_over_refusal,
        }
        | ({"max_drop_points": drops} if drops else {}),
        "paired": bool(paired),
        "candidates": rows,
    }


def tune(
    model_name: str,
    neurons_path: str | Path,
    work: str | Path,
    cfg: TuneConfig = TuneConfig(),
    out: str | Path | None = None,
    suite_files: dict[str, str] | None = None,
    judge=None,
    progress: bool = True,
    log=print,
    loaded=None,
    device: str = "cpu",
    allow_negative: bool = False,
    engine: EngineConfig = EngineConfig(),
    choice: Choice | None = None,
) -> dict[str, Any]:
    """Sweep (resumable, in ``work``), choose alpha, write it into ``out`` (default: the neurons file).
    Returns the decision with the sweep's summary under ``summary``. ``choice``: the engine already
    chosen for the command."""
    if out is not None:
        check_place(out, [("model", model_name)])
    ns = NeuronSet.load(neurons_path)
    if any(n.alpha is not None for n in ns.neurons):
        raise HeditError(
            f"{neurons_path} sets per-neuron alphas, which would override the tuned one; remove them first"
        )
    summary = run_sweep(
        model_name,
        ns,
        work,
        cfg.sweep(),
        suite_files,
        judge or RULES,
        progress=progress,
        log=log,
        loaded=loaded,
        device=device,
        allow_negative=allow_negative,
        engine=engine,
        choice=choice,
    )
    decision = choose_alpha(summary, cfg.bounds)
    ns.alpha = decision["alpha"]
    ns.provenance = dict(ns.provenance) | {
        "tune": decision | {"sweep": "sweep.json"},
        "sweep": sweep_evidence(summary),
    }
    ns.save(out or neurons_path)
    return decision | {"summary": summary}
