"""A sweep's cells summarized (``hedit.measure.summary``): on planted cells, the H-neurons' rates, their
slope against the controls', tune's mean compliance and the printed table."""

import pytest

from hedit.config import SweepConfig
from hedit.measure.summary import BASE, compliance_of, dose_lines, summarize, sweep_evidence, table
from hedit.score.compliance import COMPLIED, EXCLUDED, RESISTED
from hedit.score.suites import Item, Suite

N = 40
SUITE = Suite("false-premise", tuple(Item(f"i{k}", f"q{k}?") for k in range(N)), "bundled")


def cell(set_name, alpha, complied, excluded=0):
    """A cell where the first ``complied`` items comply, the next ``excluded`` are excluded."""
    items = []
    for k in range(N):
        label = COMPLIED if k < complied else EXCLUDED if k < complied + excluded else RESISTED
        items.append({"id": f"i{k}", "label": label, "replies": [f"{set_name}-{alpha}-{label}"]})
    return {"set": set_name, "alpha": alpha, "task": SUITE.name, "items": items}


@pytest.fixture
def summary():
    cfg = SweepConfig(alphas=(0.0, 1.0, 2.0), controls=2, suites=(SUITE.name,), capability=False, bootstrap=200)
    records = [cell(BASE, 1.0, 20)]
    records += [cell("h", 0.0, 4), cell("h", 2.0, 36, excluded=2)]  # the H-neurons move compliance
    records += [cell(c, a, 20) for c in ("control-0", "control-1") for a in (0.0, 2.0)]  # random ones do not
    sets = {"h": None, "control-0": None, "control-1": None}
    return summarize(records, cfg, sets, [SUITE], ())


def test_rates_intervals_and_controls(summary):
    rows = summary["results"][SUITE.name]
    assert [r["h"]["value"] for r in rows] == [4 / 40, 20 / 40, 36 / 38]  # excluded items are not counted
    assert [r["h"]["n"] for r in rows] == [40, 40, 38]
    lo, hi = rows[0]["h"]["ci95"]
    assert lo < 0.1 < hi
    assert rows[0]["controls"] == {"mean": 0.5, "min": 0.5, "max": 0.5, "draws": [0.5, 0.5]}


def test_the_slope_is_found_and_the_controls_stay_flat(summary):
    d = summary["dose_response"][SUITE.name]
    lo, hi = d["h"]["ci95"]
    assert 0.3 < d["h"]["slope"] < 0.5 and lo > 0  # about +0.42 per unit of alpha, away from zero
    assert d["controls_slopes"]["max"] == pytest.approx(0.0, abs=1e-9) and d["controls_slopes"]["share_at_least_h"] == 0
    assert summary["items_flipped_at_any_alpha"][SUITE.name] == pytest.approx(
        32 / 38
    )  # items 4-35 change; 36-37 are excluded at alpha 2
    assert compliance_of(summary, 0.0) == pytest.approx(0.1) and compliance_of(summary, 1.0) == 0.5
    ev = sweep_evidence(summary)["dose_response"][SUITE.name]
    assert ev["slope"] == d["h"]["slope"] and ev["controls_slopes"] == d["controls_slopes"]
    assert dose_lines(summary)[0].startswith(f"{SUITE.name}: +{100 * d['h']['slope']:.2f} points per unit of alpha")


def test_the_table_shows_every_alpha_with_h_and_controls(summary):
    lines = table(summary).splitlines()
    assert lines[0] == f"| alpha | {SUITE.name} (H) | {SUITE.name} (controls) |" and len(lines) == 2 + 3
    assert lines[2].startswith("| 0 | 0.100 [") and "(n=40)" in lines[2] and lines[2].endswith("| 0.500 (0.50-0.50) |")
