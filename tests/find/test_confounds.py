"""The confound check: per-neuron correlations with label and length, the length-only baseline and the
probe on a length-matched subset, on features where one planted neuron tracks truth and one length."""

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from hedit.config import ProbeConfig
from hedit.find.confounds import confound_lines, length_matched
from hedit.find.features import FEATURES, META, ROWS
from hedit.find.probe import run_probe
from hedit.neurons import NeuronSet

from conftest import run_cli

LAYERS, INTER = 2, 30
TRUTH, LENGTH = (0, 4), (1, 11)  # (layer, index)


def features(folder, n=160, seed=0, lengths=True):
    """Hallucinated answers are longer on average (3..8 tokens against 1..6); neuron TRUTH rises with
    hallucination whatever the length, neuron LENGTH rises with the answer's length only."""
    rng = np.random.default_rng(seed)
    rows, mats = [], []
    for q in range(n):
        hall = q % 2 == 1
        ans = int(rng.integers(3, 9) if hall else rng.integers(1, 7))
        resp = ans + int(rng.integers(0, 4))
        for region in ("answer", "other"):
            x = rng.random(LAYERS * INTER).astype(np.float32) * 0.1
            if region == "answer":
                x[TRUTH[0] * INTER + TRUTH[1]] += 0.12 * hall
                x[LENGTH[0] * INTER + LENGTH[1]] += 0.04 * ans
            mats.append(x)
            row = {
                "question_id": f"q{q}",
                "sample": 0,
                "class": "hallucinated" if hall else "correct",
                "label": "x",
                "region": region,
                "split": "heldout" if q % 4 in (0, 1) else "train",
            }
            if lengths:
                row |= {"answer_tokens": ans, "response_tokens": resp}
            rows.append(row)
    folder.mkdir()
    np.asarray(mats, dtype=np.float32).tofile(folder / FEATURES)
    (folder / ROWS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = {"name": "synthetic", "model_type": "llama", "num_layers": LAYERS, "intermediate_size": INTER}
    (folder / META).write_text(json.dumps(meta | {"rows": len(rows), "columns": LAYERS * INTER}))
    return folder, rows, np.asarray(mats, dtype=np.float32)


def test_correlations_baseline_and_matched_subset(tmp_path):
    folder, rows, mat = features(tmp_path / "f")
    r = run_probe(folder, tmp_path / "o" / "neurons.json", ProbeConfig(c_grid=(0.3, 1.0, 3.0), random_draws=2), False)
    conf = r["confounds"]
    answers = [i for i, row in enumerate(rows) if row["region"] == "answer"]
    y = np.array([rows[i]["class"] == "hallucinated" for i in answers], dtype=float)
    n_ans = np.array([rows[i]["answer_tokens"] for i in answers], dtype=float)
    n_resp = np.array([rows[i]["response_tokens"] for i in answers], dtype=float)
    assert conf["answers"] == len(answers) == 160
    by = {(p["layer"], p["index"]): p for p in conf["per_neuron"]}
    assert TRUTH in by and LENGTH in by  # both carry signal about the label, so the probe keeps both
    for (layer, j), p in by.items():
        v = mat[answers, layer * INTER + j].astype(float)
        assert np.isclose(p["label"], np.corrcoef(v, y)[0, 1])
        assert np.isclose(p["answer_tokens"], np.corrcoef(v, n_ans)[0, 1])
        assert np.isclose(p["response_tokens"], np.corrcoef(v, n_resp)[0, 1])
    assert abs(by[LENGTH]["answer_tokens"]) > 0.9 > abs(by[LENGTH]["label"])
    assert abs(by[TRUTH]["label"]) > abs(by[TRUTH]["answer_tokens"])
    more = sum(max(abs(p["answer_tokens"]), abs(p["response_tokens"])) > abs(p["label"]) for p in by.values())
    assert conf["track_length_more_than_label"] == more >= 1
    assert np.isclose(conf["length_label_correlation"]["answer_tokens"], np.corrcoef(n_ans, y)[0, 1])

    # length alone separates the classes here, but not as well as the probe
    lo = conf["length_only"]
    assert 0.6 < lo["auroc"] < r["heldout"]["auroc"] and lo["answers"] == r["rows"]["heldout_answers"] == 80
    assert lo["auroc_ci95"][0] <= lo["auroc"] <= lo["auroc_ci95"][1]
    # on answers matched for length the probe still detects: the TRUTH neuron does not need length
    lm = conf["length_matched"]
    assert lm["matched_on"] == "answer_tokens" and 0 < lm["answers"] < 80 and lm["hallucinated"] * 2 == lm["answers"]
    assert lm["auroc"] > 0.9 and lm["h_neurons_only"] > 0.9
    # what travels with the neurons: everything but the per-neuron table
    prov = NeuronSet.load(tmp_path / "o" / "neurons.json").provenance["probe"]["confounds"]
    assert prov["length_only"] == lo and "per_neuron" not in prov
    assert (tmp_path / "o" / "confounds.png").stat().st_size > 10_000
    text = confound_lines(conf, r["heldout"]["auroc"])
    assert text[0] == (
        f"confounds: {more} of {len(by)} H-neurons correlate more with answer or response length than with the label"
    )
    assert f"length-only classifier AUROC {lo['auroc']:.3f}" in text[1]
    assert f"length-matched subset ({lm['answers']} answers): AUROC {lm['auroc']:.3f}" in text[2]


def test_a_length_only_signal_is_exposed(tmp_path):
    """When hallucinated answers differ from faithful ones only in length, and the neurons only track
    length, the check says so: length alone does as well as the probe, and matching length kills it."""
    folder, rows, _ = features(tmp_path / "f", seed=1)
    mat = np.fromfile(folder / FEATURES, dtype=np.float32).reshape(len(rows), -1)
    mat[:, TRUTH[0] * INTER + TRUTH[1]] = np.random.default_rng(5).random(len(rows)) * 0.1  # no truth neuron
    mat.tofile(folder / FEATURES)
    r = run_probe(folder, tmp_path / "o" / "n.json", ProbeConfig(c_grid=(0.3, 1.0, 3.0), random_draws=2), False)
    conf = r["confounds"]
    assert conf["track_length_more_than_label"] >= 1
    assert conf["length_only"]["auroc"] > r["heldout"]["auroc"] - 0.1
    assert conf["length_matched"]["auroc"] < 0.75


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.integers(0, 1)), min_size=1, max_size=60), st.integers(0, 3))
def test_length_matched_subsets_have_equal_length_distributions(pairs, seed):
    lengths, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    keep = length_matched(lengths, y, seed)
    assert len(set(keep.tolist())) == len(keep)
    for n in np.unique(lengths):
        pos, neg = ((lengths == n) & (y == 1)).sum(), ((lengths == n) & (y == 0)).sum()
        kept = lengths[keep] == n
        assert (y[keep][kept] == 1).sum() == (y[keep][kept] == 0).sum() == min(pos, neg)


def test_old_features_without_lengths_and_the_cli(tmp_path):
    old, _, _ = features(tmp_path / "old", lengths=False)
    r = run_cli("probe", old, "--out", tmp_path / "a" / "n.json", "--c", "0.3,1,3", "--random-draws", "1", "--quiet")
    assert r.exit_code == 0, r.output
    assert "confounds: not checked (these features record no answer lengths; recompute them)" in r.output
    assert json.loads((tmp_path / "a" / "report.json").read_text())["confounds"] is None
    assert not (tmp_path / "a" / "confounds.png").exists()
    new, _, _ = features(tmp_path / "new")
    r = run_cli("probe", new, "--out", tmp_path / "b" / "n.json", "--c", "0.3,1,3", "--random-draws", "1", "--quiet")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    for line in confound_lines(report["confounds"], report["heldout"]["auroc"]):
        assert line in r.output
    assert "confounds.png" in r.output.splitlines()[-1]


def test_auroc_of_the_matched_subset_is_scikit_learns(tmp_path):
    folder, rows, mat = features(tmp_path / "f", seed=2)
    r = run_probe(folder, tmp_path / "o" / "n.json", ProbeConfig(c_grid=(1.0,), grow_c=0, random_draws=1), False)
    ns = NeuronSet.load(tmp_path / "o" / "n.json")
    held = [i for i, row in enumerate(rows) if row["region"] == "answer" and row["split"] == "heldout"]
    y = np.array([rows[i]["class"] == "hallucinated" for i in held], dtype=int)
    keep = length_matched(np.array([rows[i]["answer_tokens"] for i in held]), y, 0)
    assert r["confounds"]["length_matched"]["answers"] == len(keep)
    assert len(ns.neurons) == len(r["confounds"]["per_neuron"])
    assert roc_auc_score(y[keep], mat[held][keep][:, TRUTH[0] * INTER + TRUTH[1]]) > 0.9
