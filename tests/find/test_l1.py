"""The wide L1 fit (``hedit.find.l1``): liblinear's solution at any width, through working sets and the
KKT check on every feature."""

import numpy as np
import pytest

from hedit.errors import HeditError
from hedit.find import l1
from hedit.find.l1 import _liblinear, fit_l1


def planted(rows=300, width=2000, signal=(3, 500, 1999), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((rows, width), dtype=np.float32) * 0.2
    y = (rng.random(rows) < 0.3).astype(np.int64)
    for j in signal:
        x[y == 1, j] += 0.1
    return x, y


def test_working_set_fit_equals_the_full_liblinear_fit():
    """The screened fit (working set + KKT check on every feature) gives liblinear's full solution."""
    x, y = planted()
    for c in (0.3, 3.0):
        full = _liblinear(x, y, c, 0).coef_[0]
        screened = fit_l1(x, y, c, working=50)
        assert screened.rounds >= 1  # the working set was really used
        assert set(np.flatnonzero(screened.coef)) == set(np.flatnonzero(full))
        assert np.allclose(screened.coef, full, atol=1e-3 * np.abs(full).max())


def test_a_small_problem_goes_straight_to_liblinear_and_finds_the_planted_features():
    x, y = planted(width=300, signal=(7, 250))
    fit = fit_l1(x, y, 1.0)
    assert fit.rounds == 0
    top = set(np.argsort(-fit.coef)[:2].tolist())
    assert top == {7, 250} and fit.coef[7] > 0 and fit.coef[250] > 0
    p = fit.predict_proba(x)
    assert p.shape == (300,) and ((p > 0.5) == (y == 1)).mean() > 0.9


def test_the_gradient_never_copies_the_matrix_to_float64():
    x, _ = planted(rows=1000, width=50, signal=(3,))
    v = np.linspace(-1, 1, 1000)
    assert np.allclose(l1._gradient(x, v, chunk=64), x.astype(np.float64).T @ v, rtol=0, atol=1e-4)


def test_a_working_set_that_never_settles_is_one_error(monkeypatch):
    x, y = planted()
    monkeypatch.setattr(l1, "_gradient", lambda x, v, chunk=256: np.full(x.shape[1], 10.0))  # every feature breaks KKT
    with pytest.raises(HeditError, match="did not converge on its working set"):
        fit_l1(x, y, 1.0, working=50)
