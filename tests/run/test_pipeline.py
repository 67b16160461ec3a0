"""`hedit run` on a tiny model: every stage, then a rerun where every stage is cached."""

import json

import pytest

import hedit.edit.adapters
import hedit.edit.checkpoint
import hedit.find.collect
import hedit.find.identify
import hedit.find.probe
import hedit.measure.sweep
import hedit.run.pipeline
import hedit.score.compliance
from hedit.model.tiny import save_tiny_model
from hedit.neurons import NeuronSet

from conftest import add_tokenizer, run_cli, write_questions, yes_no_questions

RECIPE = """
model: {model}
work: {work}
identify:
  questions: {questions}
  samples: 2
  max_new_tokens: 4
  batch_size: 8
  c_grid: [0.1, 1.0, 10.0]
tune:
  alphas: [0.0, 0.5]
  limit: 3
  max_new_tokens: 3
  max_accuracy_drop: 100
  max_kl: 100
export:
  edited: true
  lora: true
  ia3: true
"""


@pytest.fixture
def setup(tmp_path, monkeypatch, yes_judge):
    model = add_tokenizer(save_tiny_model(tmp_path / "m", "llama"))
    qfile = write_questions(tmp_path / "q.jsonl", yes_no_questions())
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(model=model, work="work", questions=qfile))
    monkeypatch.chdir(tmp_path)  # the recipe's work folder is relative to where hedit runs
    return recipe, tmp_path / "work"


def test_run_all_stages_then_everything_is_cached(setup, monkeypatch):
    recipe, work = setup
    r = run_cli("run", str(recipe), "--quiet")
    assert r.exit_code == 0, r.output
    for name in (
        "identify/neurons.json",
        "tune/sweep.json",
        "neurons.json",
        "edited/model.safetensors",
        "lora/adapter_model.safetensors",
        "ia3/adapter_model.safetensors",
        "verify.json",
        "reproduce.json",
    ):
        assert (work / name).exists(), name
    tuned = NeuronSet.load(work / "neurons.json")
    assert tuned.alpha in (0.0, 0.5, 1.0) and "tune" in tuned.provenance
    assert NeuronSet.load(work / "identify" / "neurons.json").alpha is None  # identify's file is left alone
    verify = json.loads((work / "verify.json").read_text())
    assert set(verify) == {"edited", "lora", "ia3"} and all(v["passed"] for v in verify.values())
    rep = json.loads((work / "reproduce.json").read_text())
    assert rep["recipe"]["identify"]["samples"] == 2 and len(rep["neurons_sha256"]) == 64
    assert set(rep["artifacts_sha256"]) == {"edited", "lora", "ia3"}
    assert len(rep["artifacts_sha256"]["edited"]["model.safetensors"]) == 64

    def no(*a, **k):
        raise AssertionError("a cached stage ran again")

    for mod, name in [
        (hedit.find.collect, "sample_batch"),
        (hedit.find.identify, "extract"),
        (hedit.find.identify, "run_probe"),
        (hedit.measure.sweep, "run_suite"),
        (hedit.measure.sweep, "_trivia"),
        (hedit.run.pipeline, "_verify"),
        (hedit.edit.checkpoint, "edit_checkpoint"),
        (hedit.edit.adapters, "export_adapter"),
    ]:
        monkeypatch.setattr(mod, name, no)
    r = run_cli("run", str(recipe), "--quiet")
    assert r.exit_code == 0, r.output
    assert "edited: cached" in r.output and "probe: cached" in r.output


def test_an_override_reruns_only_what_depends_on_it(setup, monkeypatch):
    recipe, work = setup
    assert (
        run_cli(
            "run",
            str(recipe),
            "--quiet",
            "--set",
            "export.lora=false",
            "--set",
            "export.ia3=false",
            "--set",
            "tune.enabled=false",
            "--set",
            "tune.alpha=0",
        ).exit_code
        == 0
    )
    before = (work / "edited" / "model.safetensors").read_bytes()
    calls = []
    real = hedit.edit.checkpoint.edit_checkpoint
    monkeypatch.setattr(hedit.edit.checkpoint, "edit_checkpoint", lambda *a, **k: calls.append(k) or real(*a, **k))
    r = run_cli(
        "run",
        str(recipe),
        "--quiet",
        "--set",
        "export.lora=false",
        "--set",
        "export.ia3=false",
        "--set",
        "tune.enabled=false",
        "--set",
        "tune.alpha=2",
    )
    assert r.exit_code == 0, r.output
    assert len(calls) == 1 and NeuronSet.load(work / "neurons.json").alpha == 2.0
    assert (work / "edited" / "model.safetensors").read_bytes() != before
    assert "alpha 2" in r.output


def test_unknown_key_from_the_command_line(setup):
    recipe, _ = setup
    r = run_cli("run", str(recipe), "--set", "tune.alfa=0")
    assert r.exit_code == 1 and "unknown key 'tune.alfa'" in r.output


def test_a_device_this_machine_lacks_stops_before_any_work(setup, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    recipe, work = setup
    r = run_cli("run", str(recipe), "--set", "device=cuda")
    assert r.exit_code == 1
    assert r.output.strip() == "hedit: error: device 'cuda': torch sees no CUDA GPU on this machine"
    assert not work.exists()


def test_the_recipe_s_verify_runtime_tolerance_and_dtype_are_the_ones_that_run(setup, monkeypatch):
    """`verify: {runtime, tolerance, dtype}` reach hedit verify's own dispatch (each runtime's function is
    recorded when called); IA3 in vLLM, which cannot run there, is recorded as skipped, never as passed."""
    import hedit.check.verify as verify

    recipe, work = setup
    base = ["run", str(recipe), "--quiet", "--set", "tune.enabled=false", "--set", "tune.alpha=0"]
    assert run_cli(*base, "--set", "verify.enabled=false").exit_code == 0  # identify and export, once
    ran = []
    for name, fn in list(verify.RUNTIMES.items()):
        monkeypatch.setitem(
            verify.RUNTIMES, name, lambda *a, _n=name, _f=fn, **k: ran.append((_n, a[6])) or _f(*a, **k)
        )

    def fake_vllm(*a, **k):  # vLLM's own run is tested in tests/check; here only the dispatch matters
        ran.append(("vllm", a[6]))
        return type("R", (), {"to_dict": lambda self: {"passed": True}})()

    monkeypatch.setitem(verify.RUNTIMES, "vllm", fake_vllm)
    for runtime in ("structure", "transformers", "vllm"):
        ran.clear()
        r = run_cli(*base, "--set", f"verify.runtime={runtime}", "--set", "verify.tolerance=0.5")
        assert r.exit_code == 0, r.output
        done = json.loads((work / "verify.json").read_text())
        expected = {"edited", "lora"} | ({"ia3"} if runtime != "vllm" else set())
        assert {n for n, _ in ran} == {runtime} and len(ran) == len(expected), (runtime, ran)
        assert all(cfg.runtime == runtime and cfg.tolerance == 0.5 for _, cfg in ran)
        assert all(done[k]["passed"] is True and done[k]["runtime"] == runtime for k in expected)
        if runtime == "vllm":
            assert done["ia3"]["passed"] is None and "LoRA" in done["ia3"]["skipped"]
    ran.clear()
    r = run_cli(*base, "--set", "verify.dtype=bfloat16", "--set", "export.lora=false", "--set", "export.ia3=false")
    assert r.exit_code == 0 and ran and all(cfg.dtype == "bfloat16" for _, cfg in ran), r.output


def test_a_recipe_that_fails_before_any_stage_leaves_no_work_folder(setup):
    recipe, work = setup
    r = run_cli("run", str(recipe), "--set", "identify.questions=nope.jsonl")
    assert r.exit_code == 1 and "nope.jsonl" in r.output
    assert not work.exists()
