"""L1 logistic regression as scikit-learn's liblinear solves it, exact at any width (working sets + KKT).

Covariates (``probe --control length``) enter the model beside the neurons, standardized and scaled by
``UNPENALIZED``: liblinear penalizes every coefficient alike, and a column scaled by s needs a
coefficient s times smaller, so its L1 penalty shrinks s-fold. That is scikit-learn's own remedy for
liblinear's penalized intercept (``intercept_scaling``), used here for the intercept too. At s = 100 the
covariates' coefficients lie within 1% of an unpenalized fit's at C = 0.05 and 0.1% at C = 1 (600 rows;
tested), and liblinear converges as fast as without them (s = 1000 took 3.5x longer on the demo's
features). The neurons' columns are never copied or changed (a wide or sparse matrix stays as it is).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from hedit.errors import HeditError

UNPENALIZED = 100.0  # covariates' (and then the intercept's) scale: their L1 penalty is 1/100 of a neuron's


@dataclass
class Covariates:
    """Unpenalized covariates: their values on the training rows, standardized with the training rows'
    mean and spread (``apply`` does the same to other rows)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, z: np.ndarray) -> Covariates:
        z = np.asarray(z, np.float64)
        std = z.std(axis=0)
        return cls(z.mean(axis=0), np.where(std > 0, std, 1.0))

    def apply(self, z: np.ndarray) -> np.ndarray:
        return (np.asarray(z, np.float64) - self.mean) / self.std * UNPENALIZED


@dataclass
class L1Fit:
    coef: np.ndarray  # [features], zero outside the working set
    intercept: float
    rounds: int  # working-set rounds until every feature met the optimality (KKT) conditions
    covariates: Covariates | None = None
    cov_coef: np.ndarray | None = None  # per scaled covariate column

    def logit(self, x: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
        """float32 products, so a wide x is never copied to float64."""
        out = np.asarray(x @ self.coef.astype(np.float32)).ravel() + self.intercept
        if self.covariates is not None:
            if z is None:
                raise HeditError("this probe was fitted with covariates (--control): score it with them")
            out = out + self.covariates.apply(z) @ self.cov_coef
        return out

    def predict_proba(self, x: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logit(x, z)))


def _liblinear(x: np.ndarray, y: np.ndarray, c: float, seed: int, zs: np.ndarray | None = None):
    """liblinear on x, and on the scaled covariates ``zs`` beside it (their coefficients are the last ones)."""
    from scipy.sparse import hstack, issparse
    from sklearn.linear_model import LogisticRegression

    if zs is not None:
        x = hstack([x, zs], format="csr") if issparse(x) else np.hstack([np.asarray(x, np.float64), zs])
    return LogisticRegression(
        l1_ratio=1.0,
        solver="liblinear",
        C=c,
        class_weight="balanced",
        max_iter=1000,
        tol=1e-6,
        random_state=seed,
        intercept_scaling=1.0 if zs is None else UNPENALIZED,
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


def fit_l1(
    x: np.ndarray,
    y: np.ndarray,
    c: float,
    seed: int = 0,
    working: int = 4096,
    tol: float = 1e-3,
    covariates: np.ndarray | None = None,
    start: np.ndarray | None = None,
) -> L1Fit:
    """L1 logistic regression as scikit-learn's liblinear solves it (classes balanced), exact and wide.

    liblinear copies its input to float64 feature nodes (16 bytes per value): for 4,000 rows of
    Llama-8B width (458,752 neurons) that is ~29 GB. Instead liblinear solves the problem on a working
    set of features; a feature left out is provably zero in the full solution when
    |C * sum_i w_i x_ij (p_i - y_i)| <= 1 (its KKT condition, w_i the class weights). Features that
    break it join the working set and the fit is redone, until none does. Small problems go straight
    to liblinear.

    ``covariates`` [rows, k]: columns beside the neurons with (in effect) no penalty (``Covariates``).
    ``start``: a warm start, feature indices that open the working set (a fit of a similar problem's
    nonzeros: a stability refit then meets the KKT conditions in fewer rounds). The solution does not
    depend on it.
    """
    from scipy.sparse import issparse

    n, d = x.shape
    sparse = issparse(x)
    cov = Covariates.of(covariates) if covariates is not None else None
    zs = cov.apply(covariates) if cov is not None else None
    k = 0 if zs is None else zs.shape[1]

    def done(m, active: np.ndarray | None, rounds: int) -> L1Fit:
        w = m.coef_[0].astype(np.float64)
        coef = w[: len(w) - k] if active is None else np.zeros(d)
        if active is not None:
            coef[active] = w[: len(w) - k]
        intercept = float(m.intercept_[0])
        return L1Fit(coef, intercept, rounds, cov, w[len(w) - k :] if k else None)

    if d <= working:
        return done(_liblinear(x, y, c, seed, zs), None, 0)
    pos = y.sum()
    sw = np.where(y == 1, n / (2.0 * pos), n / (2.0 * (n - pos))) * c  # C times the balanced class weights
    grad = np.abs(_gradient(x, sw * (0.5 - y)))  # at w = 0 the balanced-weight prior is p = 0.5
    first = np.zeros(0, np.int64) if start is None else np.unique(np.asarray(start, np.int64))
    grad_rest = grad.copy()
    grad_rest[first] = -1.0
    room = max(0, working - len(first))
    top = np.argpartition(-grad_rest, room)[:room] if room < d else np.arange(d)  # the largest, in linear time
    active = np.union1d(first, top)
    for rounds in range(1, 50):
        xa = _csr_columns(x, active) if sparse else np.ascontiguousarray(x[:, active])
        m = _liblinear(xa, y, c, seed, zs)
        fit = done(m, active, rounds)
        w = m.coef_[0][: len(active)]
        logit = np.asarray(xa @ w.astype(np.float32)).ravel() + m.intercept_[0]
        if zs is not None:
            logit = logit + zs @ m.coef_[0][len(active) :]
        p = 1.0 / (1.0 + np.exp(-logit))
        grad = np.abs(_gradient(x, sw * (p - y)))
        grad[active] = 0.0
        broken = np.flatnonzero(grad > 1.0 + tol)
        if broken.size == 0:
            return fit
        keep = active[w != 0]
        add = broken[np.argsort(-grad[broken])][:working]
        active = np.union1d(np.union1d(keep, add), active[: max(0, working - len(keep) - len(add))])
    raise HeditError("the L1 probe did not converge on its working set; try a smaller C")
