import json
from dataclasses import replace

from hedit.edit.card import evidence, provenance
from hedit.edit.checkpoint import edited_card
from hedit.edit.plan import make_plan

from conftest import neuron_set


def test_base_model_prefers_a_hub_id(checkpoint):
    src = checkpoint("llama")
    ns = neuron_set()
    assert make_plan(src, ns, 0.0).base_model == src.name  # "tiny-llama" is no Hub id
    ns.model = replace(ns.model, name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert make_plan(src, ns, 0.0).base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_card_front_matter_and_text(checkpoint):
    plan = make_plan(checkpoint("llama"), neuron_set(per_layer=2, layers=[1]), 0.0)
    card = edited_card(plan, "my-model")
    front, body = card.split("---\n")[1], card.split("---\n")[2]
    assert front.splitlines()[:2] == ["library_name: transformers", "tags:"]  # a local folder: no base_model
    assert "- hedit" in front
    assert "2 MLP neurons in 1 of 3 layers" in body and "alpha = 0" in body and "vllm serve my-model" in body
    assert "arXiv 2512.01797" in body and "No evidence travels with this edit" in body


def test_provenance_is_json_and_holds_no_local_path(checkpoint, tmp_path):
    plan = make_plan(checkpoint("llama"), neuron_set(per_layer=1), 0.5)
    data = provenance(
        plan, "edit", {"model.safetensors": "x" * 64}, str(tmp_path / "deep" / "neurons.json"), {"lora_rank": 1}
    )
    back = json.loads(json.dumps(data))
    assert back["alpha"] == 0.5 and back["alphas_used"] == [0.5] and back["lora_rank"] == 1
    assert back["source"]["num_layers"] == 3 and back["neurons"]["count"] == 3
    assert back["neurons"]["file"] == "neurons.json" and back["target"] == "down"
    text = json.dumps(back)
    assert str(tmp_path) not in text and str(plan.source.parent) not in text


def test_the_evidence_of_the_neurons_file_goes_into_the_card(checkpoint):
    ns = neuron_set(per_layer=1)
    ns.provenance = {
        "probe": {
            "mode": "3-vs-1",
            "C": 1.0,
            "heldout": {"auroc": 0.9, "auroc_ci95": [0.8, 0.97], "accuracy": 0.85},
            "h_neurons_only": {"accuracy": 0.8},
            "random_neurons_only": {"accuracy": {"mean": 0.52, "std": 0.04}},
        },
        "tune": {"alpha": 0.5, "reason": "lowest compliance within bounds"},
        "features": "/home/someone/features",
    }
    plan = make_plan(checkpoint("llama"), ns, 0.5)
    ev = evidence(ns)
    assert set(ev) == {"probe", "tune"} and "features" not in json.dumps(ev)
    card = edited_card(plan, "m", ev, ["c_sweep.png"])
    assert "AUROC 0.900 [0.80, 0.97]" in card and "against 0.520 ± 0.040 for as many random neurons" in card
    assert "**Alpha**: 0.5: lowest compliance within bounds" in card and "](evidence/c_sweep.png)" in card


def test_the_confound_check_goes_into_the_card(checkpoint):
    ns = neuron_set(per_layer=1)
    ns.provenance = {
        "probe": {
            "heldout": {"auroc": 0.9, "auroc_ci95": [0.8, 0.97], "accuracy": 0.85},
            "confounds": {
                "length_only": {"auroc": 0.612, "auroc_ci95": [0.5, 0.7], "answers": 80},
                "length_matched": {"auroc": None, "auroc_ci95": None, "answers": 0},
                "track_length_more_than_label": 2,
            },
        }
    }
    card = edited_card(make_plan(checkpoint("llama"), ns, 0.0), "m", evidence(ns), [])
    assert (
        "- **Confound check**: a length-only classifier reaches AUROC 0.612; on a length-matched subset "
        "(0 answers) the probe's AUROC is n/a; 2 H-neurons correlate more with length than with hallucination."
    ) in card


def test_cards_name_the_hub_id_and_the_relation_and_the_hub_s_own_parser_takes_them(checkpoint, tmp_path, monkeypatch):
    """base_model is the source's Hub id (a built-in name's weights too) or absent for a local folder;
    base_model_relation says adapter or finetune; library_name is peft for PEFT adapters; and
    huggingface_hub's ModelCard parses every card hedit writes into its ModelCardData and sends it to the
    validate-yaml endpoint (here the loopback Hub server's)."""
    import inspect

    import huggingface_hub
    from huggingface_hub import ModelCard

    from hedit.edit.adapters import export_adapter
    from hedit.edit.checkpoint import edit_checkpoint

    from hub_server import serving

    remote = "constants.ENDPOINT" in inspect.getsource(ModelCard.validate)
    src = checkpoint("llama")
    local = neuron_set(per_layer=2)
    named = replace(local, model=replace(local.model, name_or_path="smollm2-135m-instruct"))
    hub = replace(local, model=replace(local.model, name_or_path="team/tiny"))
    for ns, base in ((local, None), (named, "HuggingFaceTB/SmolLM2-135M-Instruct"), (hub, "team/tiny")):
        ns.save(tmp_path / "n.json")
        out = tmp_path / f"x{len(list(tmp_path.iterdir()))}"
        out.mkdir()
        for kind, (path, library, relation) in {
            "edit": (out / "e", "transformers", "finetune"),
            "lora": (out / "l", "peft", "adapter"),
            "ia3": (out / "i", "peft", "adapter"),
            "gguf-lora": (out / "g", "gguf", "adapter"),
        }.items():
            if kind == "edit":
                edit_checkpoint(src, tmp_path / "n.json", path, alpha=0.0, progress=False)
            else:
                export_adapter(src, tmp_path / "n.json", path, kind, alpha=0.0)
            card = ModelCard.load(path / "README.md")
            if remote:  # huggingface_hub before 2.x posts to huggingface.co itself: parsed above only
                with serving(tmp_path / "hub", monkeypatch) as server:
                    server.token = None  # validate-yaml is a read: no token needed
                    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
                    card.validate(repo_type="model")
            data = card.data.to_dict()
            assert data.get("base_model") == base and data["library_name"] == library, (kind, data)
            assert data.get("base_model_relation") == (relation if base else None), (kind, data)
