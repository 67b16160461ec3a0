"""L1 logistic regression as scikit-learn's liblinear solves it, exact at any width (working sets + KKT)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from hedit.errors import HeditError


@dataclass
class L1Fit:
    coef: np.ndarray  # [features], zero outside the working set
    intercept: float
    rounds: int  # working-set rounds until every feature met the optimality (KKT) conditions

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return _probability(x, self.coef, self.intercept)


def _probability(x: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    """Logistic probability of class 1; float32 products so a wide x is never copied to float64."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(x @ coef.astype(np.float32)).ravel() + intercept)))


def _liblinear(x: np.ndarray, y: np.ndarray, c: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(
        l1_ratio=1.0, solver="liblinear", C=c, class_weight="balanced", max_iter=1000, tol=1e-6, random_state=seed
    ).fit(x, y)


def _gradient(x: np.ndarray, v: np.ndarray, chunk: int = 256) -> np.ndarray:
    """x.T @ v in row chunks (float32 products, float64 sum): no float64 copy of x is ever made. A sparse
    x (a mixture's CSR features) in one product over its nonzeros."""
    from scipy.sparse import issparse

    if issparse(x):  # one pass over the nonzeros, in float32 (a float64 vector, or slicing rows, would copy them)
        return np.asarray(x.T @ v.astype(np.float32)).ravel().astype(np.float64)
    g = np.zeros(x.shape[1], dtype=np.float64)
    for i in range(0, x.shape[0], chunk):
        g += x[i : i + chunk].T @ v[i : i + chunk].astype(np.float32)
    return g


def _csr_columns(x, cols: np.ndarray, chunk: int = 1024):
    """Columns ``cols`` (sorted) of a CSR matrix, row chunk by row chunk (on threads: numpy's gathers
    release the GIL), without a CSC copy of it (which would double a mixture of experts' feature memory)
    or any array as long as all its nonzeros."""
    from concurrent.futures import ThreadPoolExecutor

    from scipy.sparse import csr_matrix

    lut = np.full(x.shape[1], -1, dtype=np.int32)
    lut[cols] = np.arange(len(cols), dtype=np.int32)

    def part(r0: int):
        r1 = min(r0 + chunk, x.shape[0])
        lo, hi = x.indptr[r0], x.indptr[r1]
        new = lut[x.indices[lo:hi]]
        kept = np.flatnonzero(new >= 0)  # few: the working set is a sliver of the columns
        return np.diff(np.searchsorted(kept, x.indptr[r0 : r1 + 1] - lo)), x.data[lo:hi][kept], new[kept]

    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        parts = list(pool.map(part, range(0, x.shape[0], chunk)))
    counts = [p[0] for p in parts]
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))]) if counts else np.zeros(1, np.int64)
    cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt)  # noqa: E731
    data, indices = cat([p[1] for p in parts], np.float32), cat([p[2] for p in parts], np.int32)
    return csr_matrix((data, indices, indptr), shape=(x.shape[0], len(cols)))


def fit_l1(x: np.ndarray, y: np.ndarray, c: float, seed: int = 0, working: int = 4096, tol: float = 1e-3) -> L1Fit:
    """L1 logistic regression as scikit-learn's liblinear solves it (classes balanced), exact and wide.

    liblinear copies its input to float64 feature nodes (16 bytes per value): for 4,000 rows of
    Llama-8B width (458,752 neurons) that is ~29 GB. Instead liblinear solves the problem on a working
    set of features; a feature left out is provably zero in the full solution when
    |C * sum_i w_i x_ij (p_i - y_i)| <= 1 (its KKT condition, w_i the class weights). Features that
    break it join the working set and the fit is redone, until none does. Small problems go straight
    to liblinear.
    """
    from scipy.sparse import issparse

    n, d = x.shape
    sparse = issparse(x)
    if d <= working:
        m = _liblinear(x, y, c, seed)
        return L1Fit(m.coef_[0].astype(np.float64), float(m.intercept_[0]), 0)
    pos = y.sum()
    sw = np.where(y == 1, n / (2.0 * pos), n / (2.0 * (n - pos))) * c  # C times the balanced class weights
    grad = _gradient(x, sw * (0.5 - y))  # at w = 0 the balanced-weight prior is p = 0.5
    active = np.sort(np.argpartition(-np.abs(grad), working)[:working])  # the largest, in linear time
    for rounds in range(1, 50):
        xa = _csr_columns(x, active) if sparse else np.ascontiguousarray(x[:, active])
        m = _liblinear(xa, y, c, seed)
        w = m.coef_[0]
        p = _probability(xa, w, m.intercept_[0])
        grad = np.abs(_gradient(x, sw * (p - y)))
        grad[active] = 0.0
        broken = np.flatnonzero(grad > 1.0 + tol)
        if broken.size == 0:
            coef = np.zeros(d)
            coef[active] = w
            return L1Fit(coef, float(m.intercept_[0]), rounds)
        keep = active[w != 0]
        add = broken[np.argsort(-grad[broken])][:working]
        active = np.union1d(np.union1d(keep, add), active[: max(0, working - len(keep) - len(add))])
    raise HeditError("the L1 probe did not converge on its working set; try a smaller C")
