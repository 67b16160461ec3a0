"""Stability selection: would another sample of the questions give the same H-neurons?

An L1 probe picks one of many near-equivalent sparse sets. Following Meinshausen and Buehlmann (2010),
the probe is refitted on B random halves of the training questions (drawn by question, half of each
class, so a question's answer and other rows stay together), and each neuron's selection frequency is
the share of the refits that give it a positive weight. The stable set is the neurons selected in at
least ``threshold`` of them (0.6 by default, the low end of the 0.6-0.9 range the method's error bound is
stated for: a smaller set than the single fit's is expected, and it is reported beside it).

The refits use the chosen C per row: liblinear's C multiplies a sum over rows, so half the rows take 2C
(the same balance of data and penalty as the single fit; at C itself every refit would be sparser than
the fit it is compared with). Each refit starts its working set from the single fit's nonzeros (a warm
start: fewer KKT rounds, the same solution).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hedit.find.l1 import L1Fit, fit_l1
from hedit.find.labels import Dataset
from hedit.progress import bar

HALF = 0.5  # the share of each class's training questions in a resample


def half_samples(questions: list[str], classes: dict[str, Any], resamples: int, seed: int) -> list[np.ndarray]:
    """For each resample, the positions (into ``questions``, one per training row) of the rows whose
    question was drawn: half of each class's training questions, seeded."""
    rng = np.random.default_rng(seed)
    q = np.asarray(questions)
    kinds = sorted({classes[x] for x in questions})
    by_class = {c: sorted({x for x in questions if classes[x] == c}) for c in kinds}
    out = []
    for _ in range(resamples):
        drawn = set()
        for ids in by_class.values():
            drawn |= set(rng.choice(ids, max(1, round(len(ids) * HALF)), replace=False).tolist())
        out.append(np.flatnonzero(np.isin(q, sorted(drawn))))
    return out


def stability(
    ds: Dataset,
    rows: list[dict],
    fit: L1Fit,
    c: float,
    resamples: int,
    threshold: float,
    seed: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Selection frequencies of every neuron over ``resamples`` half-sample refits at ``c`` per row.

    Returns the frequencies (a full-width array), each refit's positive weights summed (for a stable
    neuron the single fit gave no weight), and the report's summary of the two sets."""
    questions = [rows[int(i)]["question_id"] for i in ds.train_rows]
    classes = {r["question_id"]: r["class"] for r in rows}
    start = np.flatnonzero(fit.coef != 0)
    d = len(fit.coef)
    hits = np.zeros(d, np.int32)
    weights = np.zeros(d, np.float64)
    sizes, rounds = [], []
    with bar(resamples, "stability", "fit", progress) as pbar:
        for keep in half_samples(questions, classes, resamples, seed):
            sub = ds.restrict(keep)
            if len(set(sub.y_train.tolist())) < 2:  # cannot happen with both classes drawn; kept for safety
                pbar.update(1)
                continue
            refit = fit_l1(sub.x_train, sub.y_train, c / HALF, seed, covariates=sub.z_train, start=start)
            pos = refit.coef > 0
            hits += pos
            weights += np.where(pos, refit.coef, 0.0)
            sizes.append(int(pos.sum()))
            rounds.append(refit.rounds)
            pbar.update(1)
    n = max(1, len(sizes))
    freq = hits / n
    chosen = set(np.flatnonzero(fit.coef > 0).tolist())
    stable = set(np.flatnonzero(freq >= threshold).tolist())
    union = chosen | stable
    summary = {
        "resamples": len(sizes),
        "fraction_of_questions": HALF,
        "C_per_refit": c / HALF,
        "threshold": threshold,
        "stable": len(stable),
        "single_fit": len(chosen),
        "overlap": len(chosen & stable),
        "jaccard": len(chosen & stable) / len(union) if union else None,
        "single_fit_mean_frequency": float(freq[sorted(chosen)].mean()) if chosen else None,
        "refit_sizes": {"mean": float(np.mean(sizes)) if sizes else None, "min": min(sizes, default=None)}
        | {"max": max(sizes, default=None)},
        "working_set_rounds": {"mean": float(np.mean(rounds)) if rounds else None, "max": max(rounds, default=None)},
    }
    mean_weight = np.divide(weights, np.maximum(hits, 1))
    return {"frequency": freq, "mean_weight": mean_weight, "summary": summary}


def stability_line(st: dict[str, Any]) -> str:
    """What `probe` (and the demo) print of the stability report."""
    line = (
        f"stability: {st['stable']} neurons in >= {st['threshold']:g} of {st['resamples']} half-sample refits, "
        f"{st['overlap']} of them in the single fit's {st['single_fit']} (Jaccard {st['jaccard'] or 0:.2f})"
    )
    if st.get("stable_only"):
        a, rnd = st["stable_only"], st["random_like_stable"]["auroc"]
        lo, hi = a["auroc_ci95"]
        line += f"; the stable set alone AUROC {a['auroc']:.3f} [{lo:.2f}, {hi:.2f}] vs random {rnd['mean']:.3f}"
    return line
