"""The probe on sparse (CSR) features of a mixture of experts: a planted expert neuron is found, named by
(layer, expert, index), compared with random neurons of its own experts, with its routing reported."""

import json

import numpy as np
import pytest

from hedit.config import ProbeConfig
from hedit.find.cett_moe import CSR, ROUTING, CsrWriter
from hedit.find.columns import Columns
from hedit.find.features import META, ROWS, open_features
from hedit.find.probe import run_probe
from hedit.neurons import NeuronSet
from hedit.registry import ExpertsShape

# 4 layers (layer 0 dense, 96 neurons), 16 experts of 256 neurons, top-2: 3 * 16 * 256 + 96 = 12,384 columns
SHAPE = ExpertsShape(4, 256, 16, frozenset({0}), 96, 0)
PLANTED = [(2, 5, 17), (3, 11, 200)]  # (layer, expert, index): higher CETT on hallucinated answers


def sparse_features(folder, n_questions=160, seed=0):
    """Every answer routes each MoE layer's tokens to 2 of 16 experts; a planted expert is routed on every
    answer and its neuron's CETT is higher on hallucinated ones; every other value is noise."""
    rng = np.random.default_rng(seed)
    cols = Columns.of(SHAPE)
    moe_layers = [1, 2, 3]
    folder.mkdir()
    feats, routing, rows = CsrWriter(folder, CSR), CsrWriter(folder, ROUTING), []
    for q in range(n_questions):
        cls = ("correct", "hallucinated")[q % 2]
        for region in ("answer", "other"):
            c, v, rc, rv = [np.arange(96)], [rng.random(96) * 0.1], [], []
            for k, layer in enumerate(moe_layers):
                planted = {e for la, e, _ in PLANTED if la == layer}
                routed = sorted(planted | set(rng.choice(16, 2 - len(planted), replace=False).tolist()))
                for e in routed:
                    x = rng.random(256) * 0.1
                    for la, pe, j in PLANTED:
                        if (la, pe) == (layer, e) and region == "answer" and cls == "hallucinated":
                            x[j] += 0.15
                    c.append(cols.offset((layer, e)) + np.arange(256))
                    v.append(x)
                    rc.append([k * 16 + e])
                    rv.append([0.5])
            order = np.argsort(np.concatenate(c))
            feats.add(np.concatenate(c)[order], np.concatenate(v)[order].astype(np.float32))
            rorder = np.argsort(np.concatenate(rc))
            routing.add(np.concatenate(rc)[rorder], np.concatenate(rv)[rorder].astype(np.float32))
            rows.append(
                {
                    "question_id": f"q{q}",
                    "sample": 0,
                    "class": cls,
                    "label": "x",
                    "region": region,
                    "split": "heldout" if q % 5 == 0 else "train",
                }
            )
    nnz, rnnz = feats.close(), routing.close()
    (folder / ROWS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = {
        "name": "synthetic",
        "model_type": "qwen3_moe",
        "num_layers": 4,
        "intermediate_size": 256,
        "rows": len(rows),
        "columns": cols.total,
        "regions": ["answer", "other"],
        "layout": "csr",
        "nonzeros": nnz,
        "num_experts": 16,
        "sites": cols.to_meta(),
        "routing": {"moe_layers": moe_layers, "nonzeros": rnnz},
    }
    (folder / META).write_text(json.dumps(meta))
    return folder, cols


def test_sparse_probe_finds_planted_expert_neurons(tmp_path):
    feats, cols = sparse_features(tmp_path / "f")
    meta, rows, mat = open_features(feats)
    assert mat.shape == (320, cols.total) and cols.total > 4096  # wide enough for the working-set path
    assert mat.nnz < 0.2 * mat.shape[0] * mat.shape[1]  # sparse: 2 of 16 experts per layer
    report = run_probe(feats, tmp_path / "out" / "neurons.json", ProbeConfig(random_draws=3), progress=False)
    ns = NeuronSet.load(tmp_path / "out" / "neurons.json")
    found = {(n.layer, n.expert, n.index) for n in ns.neurons}
    assert set(PLANTED) <= found and len(found) < 0.05 * cols.total
    assert ns.model.num_experts == 16 and ns.has_experts
    assert report["heldout"]["auroc"] > 0.95
    assert report["h_neurons_only"]["accuracy"] > report["random_neurons_only"]["accuracy"]["mean"] + 0.2
    per = {(r["layer"], r["expert"], r["index"]): r for r in report["routing"]["per_neuron"]}
    for key in PLANTED:  # the planted experts are routed on every answer, in both classes alike
        assert per[key]["routed_correct"] == pytest.approx(0.5) == per[key]["routed_hallucinated"]


def test_random_neurons_come_from_the_h_neurons_own_experts():
    cols = Columns.of(SHAPE)
    h = np.array([cols.offset((2, 5)) + 17, cols.offset((2, 5)) + 40, cols.offset((3, 11)) + 200])
    rng = np.random.default_rng(0)
    for _ in range(20):
        drawn = cols.random_like(h, rng)
        assert sorted(cols.site_of(int(c))[0] for c in drawn) == [(2, 5), (2, 5), (3, 11)]
    dense = Columns.dense(3, 40)
    assert len(set(dense.site_of(int(c))[0] for c in dense.random_like(np.arange(30), rng))) > 1
