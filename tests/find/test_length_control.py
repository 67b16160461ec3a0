"""`probe --control length`: the answer's and the response's lengths enter the L1 probe as unpenalized
covariates, so a neuron that only tracks length is dropped and one that adds to length is kept; and the
paired "beyond length" report (length alone, length + H-neurons, their difference)."""

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from hedit.config import ProbeConfig
from hedit.errors import HeditError
from hedit.find.confounds import confound_lines
from hedit.find.features import FEATURES, META, ROWS
from hedit.find.l1 import UNPENALIZED, fit_l1
from hedit.find.probe import run_probe
from hedit.neurons import NeuronSet

from conftest import run_cli

LAYERS, INTER = 2, 40
TRUTH, LENGTH = (0, 4), (1, 11)  # (layer, index)


def features(folder, n=400, seed=0, truth=0.08, lengths=True):
    """The label depends on length (logistic in log(1 + answer tokens)); neuron LENGTH is a function of
    log(1 + answer tokens) plus noise, so it tells nothing the lengths do not; neuron TRUTH rises with
    hallucination by ``truth`` whatever the length."""
    rng = np.random.default_rng(seed)
    rows, mats = [], []
    for q in range(n):
        ans = int(rng.integers(1, 12))
        resp = ans + int(rng.integers(0, 4))
        hall = bool(rng.random() < 1 / (1 + np.exp(-3.0 * (np.log1p(ans) - np.log1p(6)))))
        for region in ("answer", "other"):
            x = rng.random(LAYERS * INTER).astype(np.float32) * 0.1
            if region == "answer":
                x[TRUTH[0] * INTER + TRUTH[1]] += truth * hall
                x[LENGTH[0] * INTER + LENGTH[1]] += 0.12 * np.log1p(ans)
            mats.append(x)
            row = {
                "question_id": f"q{q}",
                "sample": 0,
                "class": "hallucinated" if hall else "correct",
                "label": "x",
                "region": region,
                "split": "heldout" if q % 4 == 0 else "train",
            }
            if lengths:
                row |= {"answer_tokens": ans, "response_tokens": resp}
            rows.append(row)
    folder.mkdir()
    np.asarray(mats, dtype=np.float32).tofile(folder / FEATURES)
    (folder / ROWS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = {"name": "synthetic", "model_type": "llama", "num_layers": LAYERS, "intermediate_size": INTER}
    (folder / META).write_text(json.dumps(meta | {"rows": len(rows), "columns": LAYERS * INTER}))
    return folder


CFG = dict(c_grid=(0.1, 0.3, 1.0), random_draws=2, stability=0, mode="1-vs-1")


def found(path):
    return {(n.layer, n.index) for n in NeuronSet.load(path).neurons}


def test_the_length_neuron_is_dropped_and_the_truth_neuron_kept(tmp_path):
    folder = features(tmp_path / "f")
    plain = run_probe(folder, tmp_path / "plain" / "n.json", ProbeConfig(**CFG), False)
    held = run_probe(folder, tmp_path / "held" / "n.json", ProbeConfig(**CFG, control="length"), False)
    # without the control the probe takes length through the LENGTH neuron
    assert {TRUTH, LENGTH} <= found(tmp_path / "plain" / "n.json")
    # with it, the lengths themselves carry that signal: LENGTH adds nothing and goes, TRUTH stays
    assert TRUTH in found(tmp_path / "held" / "n.json")
    assert LENGTH not in found(tmp_path / "held" / "n.json")
    assert held["control"] == "length" and plain["control"] == "none"
    names, coefs = held["covariates"]["names"], held["covariates"]["coefficients_standardized"]
    assert names[0] == "log1p_answer_tokens" and coefs[0] > 0.5  # the label rises with the answer's length
    assert NeuronSet.load(tmp_path / "held" / "n.json").provenance["probe"]["control"] == "length"


def test_the_control_needs_lengths_and_the_cli_says_so(tmp_path):
    old = features(tmp_path / "old", n=80, lengths=False)
    with pytest.raises(HeditError, match="record no answer lengths"):
        run_probe(old, tmp_path / "o" / "n.json", ProbeConfig(**CFG, control="length"), False)
    assert not (tmp_path / "o").exists()
    new = features(tmp_path / "new")
    args = ("--c", "0.1,0.3,1", "--random-draws", "1", "--stability", "0", "--mode", "1-vs-1", "--quiet")
    r = run_cli("probe", new, "--out", tmp_path / "a" / "n.json", "--control", "length", *args)
    assert r.exit_code == 0, r.output
    assert "length held fixed" in r.output.splitlines()[0]
    r = run_cli("probe", new, "--out", tmp_path / "b" / "n.json", "--control", "size", *args)
    assert r.exit_code != 0 and "size" in r.output


def test_covariates_are_unpenalized_and_the_working_set_keeps_them(tmp_path):
    """Noise neurons at a C too small for any of them: the covariates' coefficients are those of an
    unpenalized logistic regression on the (standardized) covariates alone; and the working-set path
    (a wide problem) gives the same fit as liblinear on everything at once."""
    rng = np.random.default_rng(3)
    n = 600
    z = np.c_[rng.normal(size=n), rng.normal(size=n) * 3 + 1]
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.2 * z[:, 0] - 0.3 * z[:, 1] + 0.5)))).astype(np.int64)
    x = rng.random((n, 300), dtype=np.float32) * 0.002
    zs = (z - z.mean(0)) / z.std(0)
    ref = LogisticRegression(C=np.inf, class_weight="balanced", tol=1e-10, max_iter=10_000).fit(zs, y)
    for c, rtol in ((0.05, 1e-2), (1.0, 1e-3)):  # the covariates' penalty, 1/UNPENALIZED of a neuron's, fades with C
        fit = fit_l1(x, y, c, covariates=z)
        assert not fit.coef.any()
        assert np.allclose(fit.cov_coef * UNPENALIZED, ref.coef_[0], rtol=rtol)
        assert abs(fit.intercept - ref.intercept_[0]) < 10 * rtol
    # a planted neuron joins; the working-set fit equals the direct one (and with a warm start too)
    x = rng.random((n, 300), dtype=np.float32) * 0.01
    x[y == 1, 7] += 0.01
    direct = fit_l1(x, y, 1.0, covariates=z)
    for start in (None, np.array([7, 8, 9])):
        wide = fit_l1(x, y, 1.0, covariates=z, working=20, start=start)
        assert wide.rounds >= 1 and direct.coef[7] > 0
        assert set(np.flatnonzero(wide.coef)) == set(np.flatnonzero(direct.coef))
        assert np.allclose(wide.coef, direct.coef, atol=1e-3 * np.abs(direct.coef).max())
        assert np.allclose(wide.predict_proba(x, z), direct.predict_proba(x, z), atol=1e-4)
    with pytest.raises(HeditError, match="fitted with covariates"):
        direct.predict_proba(x)


def test_beyond_length_is_paired_and_tells_a_real_signal_from_none(tmp_path):
    folder = features(tmp_path / "f", truth=0.1)
    r = run_probe(folder, tmp_path / "o" / "n.json", ProbeConfig(**CFG, control="length"), False)
    b = r["confounds"]["beyond_length"]
    for where in ("heldout", "length_matched"):
        d = b[where]
        assert np.isclose(d["difference"]["auroc"], d["length_and_h_neurons"]["auroc"] - d["length"]["auroc"])
        for k in ("length", "length_and_h_neurons"):
            lo, hi = d[k]["auroc_ci95"]
            assert lo <= d[k]["auroc"] <= hi
    h = b["heldout"]
    assert h["rows"] == r["rows"]["heldout_answers"] == 100
    assert h["difference"]["ci95"][0] > 0  # the TRUTH neuron adds to length, and the interval says so
    # the paired interval of the difference is narrower than the two intervals side by side
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(h["difference"]["ci95"]) < width(h["length"]["auroc_ci95"]) + width(
        h["length_and_h_neurons"]["auroc_ci95"]
    )

    # no truth neuron: length is all there is; the difference's interval holds 0 and the summary
    # suggests the flag when length alone comes within a few points of the probe
    none = features(tmp_path / "g", truth=0.0, seed=1)
    r0 = run_probe(none, tmp_path / "p" / "n.json", ProbeConfig(**CFG), False)
    d0 = r0["confounds"]["beyond_length"]["heldout"]["difference"]
    assert d0["ci95"][0] <= 0 <= d0["ci95"][1]
    text = confound_lines(r0["confounds"], r0["heldout"]["auroc"])
    assert r0["confounds"]["length_only"]["auroc"] >= r0["heldout"]["auroc"] - 0.05
    assert "try --control length" in text[-1]
    assert any(line.startswith("  held-out (100 answers): length alone") for line in text)
    assert "try --control" not in confound_lines(r0["confounds"], r0["heldout"]["auroc"], "length")[-1]
