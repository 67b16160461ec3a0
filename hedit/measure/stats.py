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
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    idx = np.concatenate([rng.choice(pos, (resamples, len(pos))), rng.choice(neg, (resamples, len(neg)))], axis=1)
    ranks = rankdata(score[idx], axis=1)
    auc = (ranks[:, : len(pos)].sum(axis=1) - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
    return [float(v) for v in np.percentile(auc, [2.5, 97.5])]
