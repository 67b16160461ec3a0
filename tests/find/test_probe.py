import json

import numpy as np
import pytest

from hedit.config import ProbeConfig
from hedit.errors import HeditError
from hedit.find.features import FEATURES, META, ROWS
from hedit.find.probe import run_probe
from hedit.neurons import NeuronSet

LAYERS, INTER = 3, 40
PLANTED = [(1, 7), (2, 30)]  # neurons whose CETT is higher on hallucinated answers


def synthetic(
    folder, n_questions=120, seed=0, classes=("correct", "hallucinated"), split=True, planted=PLANTED, layers=LAYERS
):
    """A features folder with a planted signal in two neurons and noise everywhere else."""
    rng = np.random.default_rng(seed)
    rows, mats = [], []
    for q in range(n_questions):
        cls = classes[q % len(classes)]
        for region in ("answer", "other"):
            x = rng.random(layers * INTER).astype(np.float32) * 0.1
            if region == "answer" and cls == "hallucinated":
                for layer, j in planted:
                    x[layer * INTER + j] += 0.15
            mats.append(x)
            rows.append(
                {
                    "question_id": f"q{q}",
                    "sample": 0,
                    "class": cls,
                    "label": "x",
                    "region": region,
                    "split": ("heldout" if q % 5 == 0 else "train") if split else None,
                }
            )
    folder.mkdir()
    np.asarray(mats, dtype=np.float32).tofile(folder / FEATURES)
    (folder / ROWS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / META).write_text(
        json.dumps(
            {
                "name": "synthetic",
                "model_type": "llama",
                "num_layers": layers,
                "intermediate_size": INTER,
                "rows": len(rows),
                "columns": layers * INTER,
                "regions": ["answer", "other"],
            }
        )
    )
    return folder


@pytest.mark.parametrize("mode", ["3-vs-1", "1-vs-1"])
def test_probe_finds_the_planted_neurons(tmp_path, mode):
    feats = synthetic(tmp_path / "f")
    report = run_probe(feats, tmp_path / "out" / "neurons.json", ProbeConfig(mode=mode, random_draws=3), progress=False)
    ns = NeuronSet.load(tmp_path / "out" / "neurons.json")
    found = {(n.layer, n.index) for n in ns.neurons}
    assert set(PLANTED) <= found and len(found) < 0.2 * LAYERS * INTER
    top = sorted(ns.neurons, key=lambda n: -n.weight)[:2]
    assert {(n.layer, n.index) for n in top} == set(PLANTED)
    assert report["heldout"]["accuracy"] > 0.9 and report["heldout"]["auroc"] > 0.95
    assert report["h_neurons_only"]["accuracy"] > report["random_neurons_only"]["accuracy"]["mean"] + 0.2
    assert report["split"] == "the question file's split" and report["rows"]["heldout_answers"] == 24
    assert ns.model.num_layers == LAYERS and ns.provenance["probe"]["mode"] == mode
    for png in ("neurons_per_layer.png", "c_sweep.png"):
        assert (tmp_path / "out" / png).stat().st_size > 5000
    assert json.loads((tmp_path / "out" / "report.json").read_text())["per_layer"] == report["per_layer"]


def test_seeded_split_when_the_file_has_none(tmp_path):
    report = run_probe(
        synthetic(tmp_path / "f", split=False),
        tmp_path / "n.json",
        ProbeConfig(random_draws=2),
        progress=False,
        plots=False,
    )
    assert report["split"].startswith("seeded draw of 20% of questions per class")
    assert report["rows"]["heldout_answers"] == 24  # 12 questions of each class


def test_one_class_held_out_by_the_file_falls_back_to_a_stratified_split(tmp_path):
    feats = synthetic(tmp_path / "f")
    rows = [json.loads(line) for line in (feats / ROWS).read_text().splitlines()]
    for r in rows:  # the file holds out only correct questions
        r["split"] = "heldout" if r["class"] == "correct" and int(r["question_id"][1:]) % 4 == 0 else "train"
    (feats / ROWS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = run_probe(feats, tmp_path / "n.json", ProbeConfig(random_draws=2), progress=False, plots=False)
    assert report["split"].startswith("seeded draw") and report["heldout"]["accuracy"] > 0.9


def test_one_class_is_an_error_before_fitting(tmp_path):
    feats = synthetic(tmp_path / "f", classes=("correct",))
    with pytest.raises(HeditError, match=r"one class \(120 correct, 0 hallucinated\)"):
        run_probe(feats, tmp_path / "n.json", progress=False)
    assert not (tmp_path / "n.json").exists()


def test_not_a_features_folder(tmp_path):
    with pytest.raises(HeditError, match="not a hedit features folder"):
        run_probe(tmp_path, tmp_path / "n.json", progress=False)


def test_qa_criterion_passes_over_c_values_that_cost_qa_accuracy(tmp_path):
    """With the QA check, each C's positive neurons are silenced (alpha 0); a C costing more than the
    allowed drop is passed over, and the report says what was measured."""
    feats = synthetic(tmp_path / "f")
    calls = []

    def qa(layers):  # fake QA accuracy: silencing a layer-1 neuron costs 5 points, layer 2 costs nothing
        calls.append(layers)
        assert all(a == 0.0 for pairs in layers.values() for _, a in pairs)
        return 0.8 - 0.05 * len(layers.get(1, []))

    grid = (0.15, 1.0, 3.0)  # 0.15 finds (2, 30) only; 1 and 3 find both planted neurons
    free = run_probe(
        feats, tmp_path / "a" / "neurons.json", ProbeConfig(c_grid=grid, random_draws=2, grow_c=0), progress=False
    )
    assert free["C"] == 1.0
    report = run_probe(
        feats,
        tmp_path / "b" / "neurons.json",
        ProbeConfig(c_grid=grid, random_draws=2, max_qa_drop=3.0, grow_c=0),
        progress=False,
        qa=qa,
    )
    assert calls[0] == {} and report["qa_check"]["qa_accuracy"] == 0.8
    by_c = {s["C"]: s for s in report["c_sweep"]}
    assert [by_c[c]["qa_drop_points"] for c in grid] == [0.0, 5.0, 5.0]
    assert report["qa_check"]["kept_C"] == [0.15] and report["C"] == 0.15
    assert calls[1] == {2: [(30, 0.0)]}
    ns = NeuronSet.load(tmp_path / "b" / "neurons.json")
    assert [(n.layer, n.index) for n in ns.neurons] == [(2, 30)]
    assert ns.provenance["probe"]["qa_check"]["max_drop_points"] == 3.0
    strict = run_probe(
        feats,
        tmp_path / "c" / "neurons.json",
        ProbeConfig(c_grid=(1.0, 3.0), random_draws=2, max_qa_drop=3.0, grow_c=0),
        progress=False,
        qa=qa,
    )
    assert "warning" in strict["qa_check"] and strict["qa_check"]["kept_C"] == [] and strict["C"] == 1.0


def test_transfer_to_other_questions(tmp_path):
    """Features of the same model on another question set: the signal carries over where it is the same
    neurons, and not where the other set's hallucinations live in other neurons."""
    same = synthetic(tmp_path / "same", n_questions=60, seed=1, split=False)
    other = synthetic(tmp_path / "other", n_questions=60, seed=2, split=False, planted=[(0, 3), (1, 20)])
    r = run_probe(
        synthetic(tmp_path / "f"),
        tmp_path / "out" / "neurons.json",
        ProbeConfig(random_draws=4),
        progress=False,
        test_features=(same, other),
    )
    t, u = r["transfer"][same.name], r["transfer"][other.name]
    assert t["answers"] == 60 and t["hallucinated"] == 30
    assert t["probe"]["auroc"] > 0.95 and t["h_neurons_only"]["auroc"] > 0.95
    assert t["random_neurons_only"]["auroc"]["mean"] < 0.75 and t["random_neurons_only"]["draws"] == 4
    assert u["probe"]["auroc"] < 0.8 and u["h_neurons_only"]["auroc"] < 0.8
    for m in (t["probe"], t["h_neurons_only"], u["probe"], u["h_neurons_only"], r["heldout"], r["h_neurons_only"]):
        lo, hi = m["auroc_ci95"]
        assert lo <= m["auroc"] <= hi
    assert NeuronSet.load(tmp_path / "out" / "neurons.json").provenance["probe"]["transfer"] == r["transfer"]


def test_transfer_refuses_other_models_and_one_class(tmp_path):
    feats = synthetic(tmp_path / "f")
    wide = synthetic(tmp_path / "wide", n_questions=20, layers=LAYERS + 1)
    with pytest.raises(HeditError, match=r"test features .*wide come from another model: llama 4x40, not llama 3x40"):
        run_probe(feats, tmp_path / "o" / "n.json", progress=False, test_features=(wide,))
    one = synthetic(tmp_path / "one", n_questions=20, classes=("correct",))
    with pytest.raises(HeditError, match=r"need both correct and hallucinated answers \(0 hallucinated of 20\)"):
        run_probe(feats, tmp_path / "o" / "n.json", progress=False, test_features=(one,))
    assert not (tmp_path / "o").exists()  # refused before fitting or writing


def test_cli_prints_the_transfer_scores(tmp_path):
    from conftest import run_cli

    same = synthetic(tmp_path / "same", n_questions=40, seed=1, split=False)
    r = run_cli(
        "probe",
        synthetic(tmp_path / "f"),
        "--out",
        tmp_path / "o" / "n.json",
        "--test-features",
        same,
        "--random-draws",
        "2",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith(f"on {same.name} "))
    report = json.loads((tmp_path / "o" / "report.json").read_text())["transfer"][same.name]
    lo, hi = report["probe"]["auroc_ci95"]
    assert f"(40 answers, 20 hallucinated): probe AUROC {report['probe']['auroc']:.3f} [{lo:.2f}, {hi:.2f}]" in line


def test_auroc_interval_matches_scikit_learn_and_brackets_the_estimate():
    from sklearn.metrics import roc_auc_score

    from hedit.find.probe import auroc_interval

    rng = np.random.default_rng(0)
    y = np.array([1] * 30 + [0] * 50)
    score = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounded: ties between the classes
    # one resample, redrawn the same way, equals scikit-learn's AUROC of those rows (ties included)
    g = np.random.default_rng(5)
    rows = np.concatenate([g.choice(np.arange(30), (1, 30)), g.choice(np.arange(30, 80), (1, 50))], axis=1)[0]
    lo, hi = auroc_interval(y, score, resamples=1, seed=5)
    assert lo == hi == pytest.approx(roc_auc_score(y[rows], score[rows]), abs=1e-12)
    point = roc_auc_score(y, score)
    lo, hi = auroc_interval(y, score)
    assert lo < point < hi and 0.1 < hi - lo < 0.35
    big = np.tile(np.arange(80), 16)
    lo2, hi2 = auroc_interval(y[big], score[big])
    assert hi2 - lo2 < (hi - lo) / 2  # 16x the rows: about a quarter of the width
    assert auroc_interval(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.2, 0.1])) == [1.0, 1.0]


def test_the_c_grid_grows_past_a_winning_edge_and_says_so(tmp_path):
    feats = synthetic(tmp_path / "f")
    r = run_probe(
        feats, tmp_path / "a.json", ProbeConfig(c_grid=(0.02, 0.05), random_draws=2), progress=False, plots=False
    )
    # 0.02 and 0.05 give no positive weight; the grid grows by its own ratio (2.5x) until a C finds the
    # planted neurons and stops growing once the best C is inside the grid
    assert r["c_grid"]["grown"] == [0.125, 0.3125, 0.78125] and r["c_grid"]["best_on_edge"] is False
    assert r["C"] == 0.3125 and [s["C"] for s in r["c_sweep"]] == [0.02, 0.05, 0.125, 0.3125, 0.78125]
    assert sorted(NeuronSet.load(tmp_path / "a.json").by_layer().items()) == [(1, [7]), (2, [30])]
    with pytest.raises(HeditError, match="no C in the grid gives any positive weight"):
        run_probe(feats, tmp_path / "b.json", ProbeConfig(c_grid=(0.02, 0.05), grow_c=0), progress=False)
    edge = run_probe(
        feats,
        tmp_path / "c.json",
        ProbeConfig(c_grid=(0.1, 0.3), grow_c=1, c_bounds=(1e-3, 0.5), random_draws=2),
        progress=False,
        plots=False,
    )
    assert edge["c_grid"]["grown"] == [] and "outside the bounds" in edge["c_grid"]["warning"]
