"""identify end to end on a tiny random model; the judge is replaced so that both classes occur."""

import json

import pytest

import hedit.find.collect
import hedit.find.identify
import hedit.score.compliance
from hedit.errors import HeditError
from hedit.find.identify import IdentifyConfig, identify
from hedit.model.tiny import save_tiny_model
from hedit.neurons import NeuronSet

from conftest import INTER, LAYERS, add_tokenizer, run_cli, yes_no_questions

QS = yes_no_questions()
CFG = IdentifyConfig(samples=2, max_new_tokens=4, batch_size=8, random_draws=2, c_grid=(0.1, 1.0, 10.0))


@pytest.fixture
def model_dir(tmp_path, yes_judge):
    return add_tokenizer(save_tiny_model(tmp_path / "m", "llama"))


def test_identify_runs_every_stage_and_caches(model_dir, tmp_path, monkeypatch):
    work = tmp_path / "work"
    report = identify(str(model_dir), QS, work, CFG, progress=False, log=lambda *a: None)
    for name in (
        "responses.jsonl",
        "filtered.jsonl",
        "features/meta.json",
        "neurons.json",
        "report.json",
        "neurons_per_layer.png",
        "c_sweep.png",
    ):
        assert (work / name).exists(), name
    ns = NeuronSet.load(work / "neurons.json")
    assert (ns.model.num_layers, ns.model.intermediate_size) == (LAYERS, INTER)
    assert len(ns.neurons) == report["h_neurons"] > 0 and all(n.weight > 0 for n in ns.neurons)
    rows = [json.loads(line) for line in (work / "features" / "rows.jsonl").read_text().splitlines()]
    held = [r for r in rows if r["region"] == "answer" and r["split"] == "heldout"]
    assert report["split"] == "the question file's split" and report["rows"]["heldout_answers"] == len(held) > 0

    def no(*a, **k):
        raise AssertionError("cached stage was recomputed")

    monkeypatch.setattr(hedit.find.identify, "extract", no)
    monkeypatch.setattr(hedit.find.collect, "sample_batch", no)
    again = identify(str(model_dir), QS, work, CFG, progress=False, log=lambda *a: None)
    assert again["h_neurons"] == report["h_neurons"]

    # a report written by an older hedit (another report format) is rebuilt, the features are not
    monkeypatch.setattr(hedit.find.identify, "REPORT_FORMAT", hedit.find.identify.REPORT_FORMAT + 1)
    refit = []
    monkeypatch.setattr(hedit.find.identify, "run_probe", lambda *a, **k: refit.append(a) or report)
    identify(str(model_dir), QS, work, CFG, progress=False, log=lambda *a: None)
    assert len(refit) == 1

    r = run_cli(
        "probe",
        work / "features",
        "--out",
        tmp_path / "p" / "n.json",
        "--model",
        model_dir,
        "--quiet",
        "--random-draws",
        "2",
    )
    assert r.exit_code == 0 and "H-neurons only" in r.stdout
    other = save_tiny_model(tmp_path / "other", "qwen2", num_hidden_layers=2)
    r = run_cli("probe", work / "features", "--out", tmp_path / "p" / "n.json", "--model", other)
    assert r.exit_code == 1 and "come from another model" in r.stderr
    r = run_cli("probe", work / "features", "--out", tmp_path / "p" / "n.json", "--c", "0,x")
    assert r.exit_code == 1 and "--c takes comma-separated numbers" in r.stderr
    # the QA check: held-out QA accuracy with each C's neurons silenced (the fake judge: alias "yes" is right)
    r = run_cli(
        "probe",
        work / "features",
        "--out",
        tmp_path / "q" / "n.json",
        "--qa-model",
        model_dir,
        "--qa-questions",
        tmp_path / "qa.jsonl",
        "--random-draws",
        "2",
        "--quiet",
    )
    assert r.exit_code == 1 and "qa.jsonl" in r.stderr
    (tmp_path / "qa.jsonl").write_text(
        "".join(json.dumps({"question": q.question, "answers": list(q.aliases)}) + "\n" for q in QS[:6])
    )
    r = run_cli(
        "probe",
        work / "features",
        "--out",
        tmp_path / "q" / "n.json",
        "--qa-model",
        model_dir,
        "--qa-questions",
        tmp_path / "qa.jsonl",
        "--random-draws",
        "2",
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    qa = json.loads((tmp_path / "q" / "report.json").read_text())
    assert qa["qa_check"]["qa_accuracy"] == 0.5  # 3 of the 6 questions have alias "yes"
    assert all(s["qa_accuracy_silenced"] == 0.5 for s in qa["c_sweep"] if s["positive"])
    assert "QA accuracy 0.500 unedited" in r.stdout


def test_too_few_consistent_questions(model_dir, tmp_path):
    with pytest.raises(HeditError, match="too few consistent questions"):
        identify(str(model_dir), QS[:4], tmp_path / "w", CFG, progress=False, log=lambda *a: None)


def test_features_cli_bad_region(model_dir, tmp_path):
    identify_responses = tmp_path / "r.jsonl"
    hedit.find.collect.collect(*_load(model_dir), QS[:2], identify_responses, CFG.sampling, progress=False)
    r = run_cli("features", model_dir, identify_responses, "--out", tmp_path / "f", "--regions", "answer,bogus")
    assert r.exit_code == 1 and "regions: unknown value 'bogus'" in r.stderr
    r = run_cli("features", model_dir, identify_responses, "--out", tmp_path / "f", "--regions", "output", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "f" / "meta.json").read_text())["regions"] == ["output"]


def _load(path):
    from hedit.model.load import load_model, load_tokenizer

    return load_model(path), load_tokenizer(path)
