"""Stability selection in `probe`: half-sample refits by question, each neuron's selection frequency, the
stable set beside the single fit (report, neurons file, plot, card), and `--select stable`."""

import json

import numpy as np
import pytest

from hedit.config import ProbeConfig
from hedit.edit.card import evidence
from hedit.errors import HeditError
from hedit.find.features import FEATURES, META, ROWS
from hedit.find.labels import dataset
from hedit.find.probe import run_probe
from hedit.find.stability import half_samples
from hedit.neurons import NeuronSet

from conftest import run_cli

LAYERS, INTER = 3, 40
PLANTED = [(0, 3), (1, 7), (2, 30)]


def features(folder, n=200, seed=0, width=INTER, signal=0.06):
    """Three planted neurons rise on hallucinated answers; every other neuron is noise."""
    rng = np.random.default_rng(seed)
    rows, mats = [], []
    for q in range(n):
        hall = q % 2 == 1
        for region in ("answer", "other"):
            x = rng.random(LAYERS * width).astype(np.float32) * 0.1
            if region == "answer" and hall:
                for layer, j in PLANTED:
                    x[layer * width + j] += signal
            mats.append(x)
            rows.append(
                {
                    "question_id": f"q{q}",
                    "sample": 0,
                    "class": "hallucinated" if hall else "correct",
                    "label": "x",
                    "region": region,
                    "split": "heldout" if q % 5 == 0 else "train",
                    "answer_tokens": 3,
                    "response_tokens": 5,
                }
            )
    folder.mkdir()
    np.asarray(mats, dtype=np.float32).tofile(folder / FEATURES)
    (folder / ROWS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = {"name": "synthetic", "model_type": "llama", "num_layers": LAYERS, "intermediate_size": width}
    (folder / META).write_text(json.dumps(meta | {"rows": len(rows), "columns": LAYERS * width}))
    return folder, rows


def column(layer, j, width=INTER):
    return layer * width + j


def test_half_samples_draw_half_of_each_class_by_question():
    questions = [f"q{i // 3}" for i in range(60)]  # three rows per question
    classes = {f"q{i}": ("correct", "hallucinated")[i % 2] for i in range(20)}
    draws = half_samples(questions, classes, 5, seed=0)
    assert len(draws) == 5 and len({tuple(d) for d in draws}) == 5  # different halves
    for keep in draws:
        drawn = {questions[i] for i in keep}
        assert len(keep) == 3 * len(drawn)  # whole questions: all their rows or none
        assert sum(classes[q] == "hallucinated" for q in drawn) == sum(classes[q] == "correct" for q in drawn) == 5
    assert [list(d) for d in draws] == [list(d) for d in half_samples(questions, classes, 5, seed=0)]


def test_planted_neurons_are_stable_and_noise_is_not(tmp_path):
    folder, rows = features(tmp_path / "f")
    cfg = ProbeConfig(c_grid=(0.3, 1.0, 3.0), random_draws=2, stability=20)
    r = run_probe(folder, tmp_path / "o" / "neurons.json", cfg, False)
    st = r["stability"]
    freq = {(p["layer"], p["index"]): p["frequency"] for p in st["per_neuron"]}
    for p in PLANTED:
        assert freq[p] >= 0.95
    noise = [freq.get((layer, j), 0.0) for layer in range(LAYERS) for j in range(INTER) if (layer, j) not in PLANTED]
    assert np.mean(noise) < 0.15
    assert st["resamples"] == 20 and st["threshold"] == 0.6 and st["C_per_refit"] == 2 * r["C"]
    stable = {(p["layer"], p["index"]) for p in st["per_neuron"] if p["frequency"] >= 0.6}
    assert set(PLANTED) <= stable and st["stable"] == len(stable)
    single = {(p["layer"], p["index"]) for p in st["per_neuron"] if p["in_single_fit"]}
    assert st["overlap"] == len(single & stable) and st["single_fit"] == r["h_neurons"]
    assert np.isclose(st["jaccard"], len(single & stable) / len(single | stable))
    # the stable set beats as many random neurons on held-out answers
    assert st["stable_only"]["auroc"] > st["random_like_stable"]["auroc"]["mean"] + 0.2
    # frequencies are recomputed by hand for one noise neuron and one planted neuron
    ds = dataset(rows, np.fromfile(folder / FEATURES, np.float32).reshape(len(rows), -1), cfg.mode, seed=0)
    questions = [rows[int(i)]["question_id"] for i in ds.train_rows]
    classes = {r["question_id"]: r["class"] for r in rows}
    from hedit.find.l1 import fit_l1

    hits = np.zeros(LAYERS * INTER)
    for keep in half_samples(questions, classes, 20, 0):
        hits += fit_l1(ds.x_train[keep], ds.y_train[keep], 2 * r["C"], 0).coef > 0
    for (layer, j), f in freq.items():
        assert np.isclose(f, hits[column(layer, j)] / 20)
    # the neurons file gives each neuron its frequency; the card and the plot show the stability
    ns = NeuronSet.load(tmp_path / "o" / "neurons.json")
    assert all(n.frequency == freq[(n.layer, n.index)] for n in ns.neurons)
    assert evidence(ns)["probe"]["stability"]["stable"] == st["stable"]
    assert "per_neuron" not in ns.provenance["probe"]["stability"]
    assert (tmp_path / "o" / "stability.png").stat().st_size > 10_000


def test_select_stable_writes_the_stable_set(tmp_path):
    folder, _ = features(tmp_path / "f", seed=2)
    cfg = dict(c_grid=(0.3, 1.0, 3.0), random_draws=1, stability=10)
    fit = run_probe(folder, tmp_path / "a" / "n.json", ProbeConfig(**cfg), False)
    stab = run_probe(folder, tmp_path / "b" / "n.json", ProbeConfig(**cfg, select="stable"), False)
    a, b = NeuronSet.load(tmp_path / "a" / "n.json"), NeuronSet.load(tmp_path / "b" / "n.json")
    assert len(a.neurons) == fit["h_neurons"] and len(b.neurons) == stab["stability"]["stable"] == stab["h_neurons"]
    assert all(n.frequency >= 0.6 and n.weight > 0 for n in b.neurons)
    assert {(n.layer, n.index) for n in b.neurons} >= set(PLANTED)
    assert b.provenance["probe"]["select"] == "stable"
    noise, _ = features(tmp_path / "noise", seed=3, signal=0.0)  # no signal: no neuron in every refit
    with pytest.raises(HeditError, match="no neuron is stable"):
        run_probe(noise, tmp_path / "c" / "n.json", ProbeConfig(**cfg, select="stable", stability_threshold=1.0), False)
    assert not (tmp_path / "c").exists()
    with pytest.raises(HeditError, match="needs stability selection"):
        run_probe(folder, tmp_path / "d" / "n.json", ProbeConfig(**cfg | {"stability": 0}, select="stable"), False)


def test_the_working_set_path_and_the_cli(tmp_path):
    """A probe wider than the working set: the refits warm-start from the single fit's nonzeros and find
    the same planted neurons; the command line prints the stability line."""
    folder, _ = features(tmp_path / "f", n=160, width=2000)
    args = ("--c", "0.3,1,3", "--random-draws", "1", "--stability", "8", "--quiet")
    r = run_cli("probe", folder, "--out", tmp_path / "o" / "n.json", *args)
    assert r.exit_code == 0, r.output
    st = json.loads((tmp_path / "o" / "report.json").read_text())["stability"]
    freq = {(p["layer"], p["index"]): p["frequency"] for p in st["per_neuron"]}
    assert all(freq[p] >= 0.75 for p in PLANTED)
    line = next(x for x in r.output.splitlines() if x.startswith("stability:"))
    assert f"{st['stable']} neurons in >= 0.6 of 8 half-sample refits" in line
    assert "stability.png" in r.output.splitlines()[-1]
