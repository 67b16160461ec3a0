"""The sweep's statistics: paired differences, dose-response slopes with paired bootstrap intervals, and the
power statement (the smallest slope a sweep of this size could tell from zero)."""

import numpy as np
import pytest

from hedit.score.stats import Z_POWER, bootstrap_ci, dose_response, paired_difference, slope

ALPHAS = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]


def test_slope_is_least_squares_over_the_items_mean():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (len(ALPHAS), 40)).astype(float)
    assert slope(ALPHAS, y) == pytest.approx(np.polyfit(ALPHAS, y.mean(axis=1), 1)[0])


def test_item_thresholds_give_the_constructed_slope():
    # item i complies once alpha reaches its own threshold; thresholds spread evenly over the alphas, so the
    # rate is a staircase whose least-squares slope is known exactly
    thresholds = np.repeat(ALPHAS, 10)
    y = np.array([[a >= t for t in thresholds] for a in ALPHAS], float)
    d = dose_response(ALPHAS, y, resamples=500, seed=0)
    assert d["slope"] == pytest.approx(np.polyfit(ALPHAS, y.mean(axis=1), 1)[0])
    assert d["slope"] > 0.25 and d["ci95"][0] > 0 and d["items"] == 60
    assert d["min_detectable"] == pytest.approx(Z_POWER * d["se"])


def test_items_that_never_change_give_a_zero_slope_with_a_zero_width_interval():
    y = np.tile(np.array([1, 0, 1, 1, 0], float), (len(ALPHAS), 1))
    d = dose_response(ALPHAS, y)
    assert d["slope"] == pytest.approx(0, abs=1e-12)
    assert d["ci95"] == pytest.approx([0, 0], abs=1e-12) and d["se"] == pytest.approx(0, abs=1e-12)


def test_power_grows_with_items_and_a_null_interval_holds_zero():
    rng = np.random.default_rng(3)
    small = dose_response(ALPHAS, rng.integers(0, 2, (len(ALPHAS), 50)).astype(float), 400)
    big = dose_response(ALPHAS, rng.integers(0, 2, (len(ALPHAS), 800)).astype(float), 400)
    assert small["ci95"][0] < 0 < small["ci95"][1] and big["ci95"][0] < 0 < big["ci95"][1]
    # the standard error shrinks as 1/sqrt(items): 16x the items, about a quarter the detectable slope
    assert big["min_detectable"] / small["min_detectable"] == pytest.approx(0.25, rel=0.25)


def test_the_paired_design_sees_what_independent_intervals_miss():
    # 200 items with very different base rates; alpha 0 turns 8% of the complying items into refusals
    rng = np.random.default_rng(0)
    a = (rng.random(200) < 0.5).astype(float)
    b = a.copy()
    b[np.flatnonzero(a)[:8]] = 0
    p = paired_difference([(a, b)], 1000, 0)
    assert p["mean"] == pytest.approx(-8 / 200) and p["ci95"][1] < 0 and p["items"] == 200
    lo_a, hi_a = bootstrap_ci(a)
    lo_b, hi_b = bootstrap_ci(b)
    assert lo_a < hi_b  # the independent intervals overlap: no difference could be claimed from them


def test_paired_difference_averages_suites_and_handles_none():
    one = (np.array([1.0, 1, 0, 0]), np.array([0.0, 1, 0, 0]))  # -0.25
    two = (np.array([0.0, 0]), np.array([1.0, 1]))  # +1
    p = paired_difference([one, two], 200, 0)
    assert p["mean"] == pytest.approx(0.375) and p["items"] == 6
    empty = paired_difference([], 10, 0)
    assert empty["items"] == 0 and np.isnan(empty["mean"])


def test_degenerate_sweeps_have_no_slope():
    assert dose_response([1.0], np.ones((1, 5)))["slope"] is None
    assert dose_response(ALPHAS, np.ones((len(ALPHAS), 0)))["slope"] is None
