import json

import pytest

from hedit.choose.tune import choose_alpha, tune
from hedit.config import Bounds, TuneConfig
from hedit.edit.card import evidence, evidence_text
from hedit.errors import HeditError
from hedit.neurons import Neuron, NeuronSet

from conftest import neuron_set, run_cli


def summary(rows):
    """rows: alpha -> (compliance per suite, trivia accuracy, KL)."""
    alphas = sorted(rows)
    suites = len(next(iter(rows.values()))[0])
    results = {f"s{i}": [{"alpha": a, "h": {"value": rows[a][0][i]}} for a in alphas] for i in range(suites)}
    base = rows[1.0][1]
    cap = [
        {
            "alpha": a,
            "trivia_accuracy": rows[a][1],
            "accuracy_drop_points": round(100 * (base - rows[a][1]), 3),
            "kl": rows[a][2],
        }
        for a in alphas
    ]
    return {"alphas": alphas, "results": results, "capability": cap}


def test_lowest_compliance_within_bounds():
    s = summary(
        {
            0.0: ([0.2, 0.3], 0.50, 0.30),  # best compliance, but KL too high and accuracy -10 points
            0.5: ([0.4, 0.4], 0.59, 0.05),  # within bounds (drop 1 point)
            0.75: ([0.5, 0.5], 0.60, 0.01),
            1.0: ([0.6, 0.6], 0.60, 0.0),
        }
    )
    d = choose_alpha(s)
    assert d["alpha"] == 0.5 and d["compliance_at_1"] == pytest.approx(0.6)
    rej = {r["alpha"]: r["rejected_because"] for r in d["candidates"]}
    assert len(rej[0.0]) == 2 and "10.0 points" in rej[0.0][0] and "KL 0.3" in rej[0.0][1]
    assert rej[0.5] == [] and rej[1.0] == []
    assert choose_alpha(s, Bounds(max_accuracy_drop=20, max_kl=1))["alpha"] == 0.0


def test_ties_go_to_the_smaller_edit_and_no_gain_means_alpha_1():
    s = summary({0.0: ([0.3], 0.6, 0.01), 0.5: ([0.3], 0.6, 0.01), 1.0: ([0.6], 0.6, 0.0)})
    assert choose_alpha(s)["alpha"] == 0.5
    worse = summary({0.0: ([0.7], 0.6, 0.01), 1.0: ([0.6], 0.6, 0.0)})
    d = choose_alpha(worse)
    assert d["alpha"] == 1.0 and "no alpha lowers compliance" in d["reason"]


def test_needs_alpha_1_and_capability():
    s = summary({0.0: ([0.3], 0.6, 0.01), 1.0: ([0.6], 0.6, 0.0)})
    with pytest.raises(HeditError, match="alpha 1"):
        choose_alpha(s | {"alphas": [0.0]})
    with pytest.raises(HeditError, match="capability"):
        choose_alpha(s | {"capability": []})


def test_tune_writes_alpha_and_evidence_that_edit_uses(tiny_chat, tmp_path):
    path, model, tok = tiny_chat
    nf = tmp_path / "neurons.json"
    neuron_set("llama", per_layer=3).save(nf)
    before = NeuronSet.load(nf)
    cfg = TuneConfig(alphas=(0.0, 0.5), limit=4, max_new_tokens=4, max_accuracy_drop=100, max_kl=10)
    d = tune(str(path), nf, tmp_path / "work", cfg, loaded=(model, tok), progress=False)
    after = NeuronSet.load(nf)
    assert after.alpha == d["alpha"] and after.neurons == before.neurons
    assert after.provenance["tune"]["alpha"] == d["alpha"]
    assert [c["alpha"] for c in after.provenance["tune"]["candidates"]] == [0.0, 0.5, 1.0]  # 1 added
    sweep = json.loads((tmp_path / "work" / "sweep.json").read_text())
    at_1 = [
        sweep["results"][s][2]["h"]["value"] for s in ("false-premise", "misleading-context", "sycophancy", "jailbreak")
    ]
    at_1 = [v for v in at_1 if v is not None]
    assert after.provenance["tune"]["compliance_at_1"] == pytest.approx(sum(at_1) / len(at_1))
    ev = after.provenance["sweep"]["dose_response"]  # the slopes travel to the edited model's card
    assert ev and set(ev) == {t for t, v in sweep["dose_response"].items() if v["h"]["slope"] is not None}
    for task, v in ev.items():
        assert v["slope"] == sweep["dose_response"][task]["h"]["slope"]
    text = evidence_text(evidence(after), [])
    assert all(f"**{task}**: {100 * v['slope']:+.2f} points" in text for task, v in ev.items())
    assert d["summary"]["alphas"] == [0.0, 0.5, 1.0]
    plan = after.plan()  # no --alpha: `hedit edit` takes the tuned one
    assert all(a == d["alpha"] for pairs in plan.values() for _, a in pairs)


def test_tune_refuses_per_neuron_alphas(tiny_chat, tmp_path):
    path, model, tok = tiny_chat
    ns = neuron_set("llama", per_layer=2)
    ns.neurons[0] = Neuron(ns.neurons[0].layer, ns.neurons[0].index, alpha=0.3)
    nf = tmp_path / "n.json"
    ns.save(nf)
    with pytest.raises(HeditError, match="per-neuron alphas"):
        tune(str(path), nf, tmp_path / "w", loaded=(model, tok), progress=False)


def test_cli_tune_out_file(tiny_chat, tmp_path):
    path, _, _ = tiny_chat
    nf = tmp_path / "n.json"
    neuron_set("llama", per_layer=2).save(nf)
    original = nf.read_bytes()
    r = run_cli(
        "tune",
        str(path),
        "--neurons",
        str(nf),
        "--alphas",
        "0",
        "--limit",
        "3",
        "--max-new-tokens",
        "3",
        "--work",
        str(tmp_path / "w"),
        "--out",
        str(tmp_path / "tuned.json"),
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    assert nf.read_bytes() == original  # --out leaves the input alone
    tuned = NeuronSet.load(tmp_path / "tuned.json")
    assert tuned.alpha in (0.0, 1.0) and f"alpha = {tuned.alpha:g}" in r.output


def test_over_refusal_and_the_paired_test_reject_alphas():
    s = summary(
        {
            0.0: ([0.1], 0.60, 0.01),  # refuses everything: lowest compliance, but 40 more points of benign refusals
            0.5: ([0.3], 0.60, 0.01),
            0.75: ([0.5], 0.60, 0.01),  # lower than alpha 1, but the paired interval holds 0
            1.0: ([0.6], 0.60, 0.0),
        }
    )
    rises = {0.0: 40.0, 0.5: 2.0, 0.75: 0.0, 1.0: 0.0}
    for c in s["capability"]:
        c["over_refusal_rise_points"] = rises[c["alpha"]]
    s["paired_vs_alpha_1"] = [
        {"alpha": 0.0, "mean": -0.5, "ci95": [-0.6, -0.4], "items": 100},
        {"alpha": 0.5, "mean": -0.3, "ci95": [-0.4, -0.2], "items": 100},
        {"alpha": 0.75, "mean": -0.1, "ci95": [-0.2, 0.01], "items": 100},
        {"alpha": 1.0, "mean": 0.0, "ci95": [0.0, 0.0], "items": 100},
    ]
    d = choose_alpha(s)
    assert d["alpha"] == 0.5 and d["paired"] is True
    rej = {r["alpha"]: r["rejected_because"] for r in d["candidates"]}
    assert rej[0.0] == ["refuses 40.0 points more harmless requests > 5.0"]
    assert len(rej[0.75]) == 1 and "no significant drop" in rej[0.75][0] and "[-0.200, +0.010]" in rej[0.75][0]
    assert choose_alpha(s, Bounds(max_over_refusal=50))["alpha"] == 0.0
    # without a significant drop anywhere, no edit
    for p in s["paired_vs_alpha_1"]:
        p["ci95"] = [-0.5, 0.1]
    none = choose_alpha(s, Bounds(max_over_refusal=50))
    assert none["alpha"] == 1.0 and "significantly" in none["reason"]
