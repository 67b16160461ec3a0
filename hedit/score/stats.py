"""Statistics shared by the probe and the sweep: bootstrap intervals of rates and of AUROCs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap_ci(outcomes: Sequence[float], resamples: int = 1000, seed: int = 0) -> tuple[float, float] | None:
    """Percentile 95% interval of the mean of 0/1 outcomes."""
    x = np.asarray(outcomes, dtype=np.float64)
    if len(x) == 0:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def auroc_interval(y: np.ndarray, score: np.ndarray, resamples: int = 1000, seed: int = 0) -> list[float]:
    """Percentile 95% interval of the AUROC, resampling hallucinated and faithful rows separately (so
    every resample has both classes). AUROC by ranks (Mann-Whitney, ties averaged), all resamples at once."""
    (auc,) = _resampled_aurocs(np.asarray(y), [score], resamples, seed)
    return [float(v) for v in np.percentile(auc, [2.5, 97.5])]


def _resampled_aurocs(y: np.ndarray, scores: list[np.ndarray], resamples: int, seed: int) -> list[np.ndarray]:
    """The AUROC of each score over the same stratified resamples of the rows (hallucinated and
    faithful rows drawn separately), by ranks, all resamples at once."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    idx = np.concatenate([rng.choice(pos, (resamples, len(pos))), rng.choice(neg, (resamples, len(neg)))], axis=1)
    out = []
    for score in scores:
        ranks = rankdata(np.asarray(score)[idx], axis=1)
        out.append((ranks[:, : len(pos)].sum(axis=1) - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
    return out


def paired_auroc(y: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int = 1000, seed: int = 0) -> dict:
    """AUROCs of two scores of the same rows and their difference b - a, each with a 95% interval from
    the same (paired) stratified resamples: the difference's interval is far tighter than the two
    intervals side by side suggest. None where ``y`` has one class."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    if len(set(y.tolist())) < 2:
        return {"a": None, "b": None, "difference": None, "rows": int(len(y))}
    ra, rb = _resampled_aurocs(y, [a, b], resamples, seed)
    ci = lambda v: [float(t) for t in np.percentile(v, [2.5, 97.5])]  # noqa: E731
    auc_a, auc_b = float(roc_auc_score(y, a)), float(roc_auc_score(y, b))
    return {
        "a": {"auroc": auc_a, "auroc_ci95": ci(ra)},
        "b": {"auroc": auc_b, "auroc_ci95": ci(rb)},
        "difference": {"auroc": auc_b - auc_a, "ci95": ci(rb - ra)},
        "rows": int(len(y)),
        "hallucinated": int(y.sum()),
    }


Z_POWER = 2.8  # z(0.975) + z(0.80): an effect this many standard errors away is found 80% of the time at 5%


def paired_difference(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], resamples: int = 1000, seed: int = 0
) -> dict[str, float | list[float]]:
    """The mean over suites of mean(b - a), for outcomes ``a`` and ``b`` of the same items (one pair of arrays
    per suite), with a paired bootstrap 95% interval: each resample draws items, keeping each item's two
    outcomes together, independently per suite."""
    rng = np.random.default_rng(seed)
    diffs = [np.asarray(b, float) - np.asarray(a, float) for a, b in pairs if len(a)]
    if not diffs:
        return {"mean": float("nan"), "ci95": [float("nan"), float("nan")], "items": 0}
    boot = np.mean([d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1) for d in diffs], axis=0)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {
        "mean": float(np.mean([d.mean() for d in diffs])),
        "ci95": [float(lo), float(hi)],
        "items": int(sum(len(d) for d in diffs)),
    }


def slope(alphas: Sequence[float], outcomes: np.ndarray) -> float:
    """Least-squares slope of outcomes [alphas, items] against alpha (every item at every alpha)."""
    x = np.asarray(alphas, float)
    y = outcomes.mean(axis=1)
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


def dose_response(
    alphas: Sequence[float], outcomes: np.ndarray, resamples: int = 1000, seed: int = 0
) -> dict[str, float | list[float]]:
    """The slope of the rate against alpha with a paired bootstrap 95% interval (items resampled, each item
    keeping its outcomes at every alpha), its standard error, and the smallest slope this many items could
    tell from zero (80% power, 5% two-sided: 2.8 standard errors)."""
    outcomes = np.asarray(outcomes, float)
    if outcomes.ndim != 2 or outcomes.shape[1] == 0 or len(set(alphas)) < 2:
        return {"slope": None, "ci95": None, "se": None, "min_detectable": None, "items": 0}
    rng = np.random.default_rng(seed)
    n = outcomes.shape[1]
    boot = np.array([slope(alphas, outcomes[:, rng.integers(0, n, n)]) for _ in range(resamples)])
    lo, hi = np.percentile(boot, [2.5, 97.5])
    se = float(boot.std(ddof=1))
    return {
        "slope": slope(alphas, outcomes),
        "ci95": [float(lo), float(hi)],
        "se": se,
        "min_detectable": Z_POWER * se,
        "items": n,
    }
