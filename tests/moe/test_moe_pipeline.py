"""A mixture of experts end to end, through the CLI: identify (collect, sparse CETT features, the probe),
sweep with random controls drawn per (layer, expert), edit, verify (transformers and structure)."""

import json

from hedit.model.tiny import save_tiny_model
from hedit.neurons import NeuronSet, split_site

from conftest import add_tokenizer, run_cli, write_questions, yes_no_questions


def test_identify_sweep_edit_verify_on_a_tiny_moe(tmp_path, yes_judge):
    model = add_tokenizer(save_tiny_model(tmp_path / "m", "qwen2_moe"))  # routed experts and a shared expert
    qs = write_questions(tmp_path / "q.jsonl", yes_no_questions(40))
    work = tmp_path / "work"
    r = run_cli(
        "identify",
        model,
        "--questions",
        qs,
        "--work",
        work,
        "--samples",
        "2",
        "--max-new-tokens",
        "4",
        "--c",
        "0.1,1,10",
        "--random-draws",
        "2",
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    meta = json.loads((work / "features" / "meta.json").read_text())
    assert meta["layout"] == "csr" and meta["num_experts"] == 8
    assert meta["nonzeros"] < 0.6 * meta["rows"] * meta["columns"]  # top-2 of 8: most expert neurons are 0
    ns = NeuronSet.load(work / "neurons.json")
    assert ns.neurons and ns.model.num_experts == 8
    assert all(n.expert is not None for n in ns.neurons)  # every layer is an MoE layer here
    report = json.loads((work / "report.json").read_text())
    routed = [n for n in ns.neurons if isinstance(n.expert, int)]
    assert len(report["routing"]["per_neuron"]) == len(routed)
    for r_ in report["routing"]["per_neuron"]:
        assert 0 < r_["routed_correct"] + r_["routed_hallucinated"] <= 2  # shares of answer tokens

    sweep = tmp_path / "sweep"
    r = run_cli(
        "sweep",
        model,
        "--neurons",
        work / "neurons.json",
        "--out",
        sweep,
        "--alphas",
        "0,1",
        "--controls",
        "2",
        "--limit",
        "3",
        "--max-new-tokens",
        "3",
        "--suites",
        "false-premise",
        "--no-capability",
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    cells = [json.loads(line) for line in (sweep / "cells.jsonl").read_text().splitlines()[1:]]
    assert {c["set"] for c in cells} >= {"h", "control-0", "control-1"}

    from hedit.measure.controls import control_sets
    from hedit.registry import get_architecture

    config = json.loads((model / "config.json").read_text())
    shape = get_architecture("qwen2_moe").experts_shape(config)
    for draw in control_sets(ns, 2, 0, shape):  # the same sites, as many neurons, none of the H-neurons
        assert {s: len(v) for s, v in draw.items()} == ns.per_layer_counts()
        for site, idx in draw.items():
            assert max(idx) < shape.width(*split_site(site)) and not set(idx) & set(ns.by_layer()[site])

    tuned = tmp_path / "tuned.json"  # tune: the sweep under capability bounds, alpha into a copy of the file
    r = run_cli(
        "tune",
        model,
        "--neurons",
        work / "neurons.json",
        "--work",
        tmp_path / "tune",
        "--out",
        tuned,
        "--limit",
        "3",
        "--max-new-tokens",
        "3",
        "--suites",
        "false-premise",
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    t = NeuronSet.load(tuned)
    assert t.alpha is not None and t.neurons == ns.neurons  # the same expert neurons, with the alpha chosen

    edited = tmp_path / "edited"
    r = run_cli("edit", model, "--neurons", work / "neurons.json", "--alpha", "0", "--out", edited, "--quiet")
    assert r.exit_code == 0, r.stderr
    for runtime in ("transformers", "structure"):
        r = run_cli(
            "verify",
            model,
            "--neurons",
            work / "neurons.json",
            "--alpha",
            "0",
            "--edited",
            edited,
            "--runtime",
            runtime,
        )
        assert r.exit_code == 0 and "PASS" in r.stdout, (runtime, r.stdout, r.stderr)
    r = run_cli("verify", model, "--neurons", work / "neurons.json", "--alpha", "0.5", "--edited", edited)
    assert r.exit_code != 0 and "FAIL" in r.stdout  # a wrong alpha is caught
    info = json.loads((edited / "hedit.json").read_text())
    assert {t.get("expert") for t in info["tensors"]} - {None}  # the edited tensors name their experts
