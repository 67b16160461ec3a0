import json
from dataclasses import replace

from hedit.edit.card import base_model_name, edited_card, provenance
from hedit.edit.plan import make_plan

from conftest import neuron_set


def test_base_model_prefers_a_hub_id(checkpoint):
    src = checkpoint("llama")
    ns = neuron_set()
    assert base_model_name(make_plan(src, ns, 0.0)) == src.name  # "tiny-llama" is no Hub id
    ns.model = replace(ns.model, name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert base_model_name(make_plan(src, ns, 0.0)) == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_card_front_matter_and_text(checkpoint):
    plan = make_plan(checkpoint("llama"), neuron_set(per_layer=2, layers=[1]), 0.0)
    card = edited_card(plan, "my-model")
    front, body = card.split("---\n")[1], card.split("---\n")[2]
    assert front.splitlines()[:3] == [f"base_model: {plan.checkpoint.path.name}", "library_name: transformers",
                                      "tags:"]
    assert "- hedit" in front
    assert "2 MLP neurons in 1 of 3 layers" in body and "alpha = 0" in body and "vllm serve my-model" in body
    assert "arXiv 2512.01797" in body


def test_provenance_is_json_serialisable(checkpoint):
    plan = make_plan(checkpoint("llama"), neuron_set(per_layer=1), 0.5)
    data = provenance(plan, "edit", {"model.safetensors": "x" * 64}, None, {"lora_rank": 1})
    back = json.loads(json.dumps(data))
    assert back["alpha"] == 0.5 and back["alphas_used"] == [0.5] and back["lora_rank"] == 1
    assert back["source"]["num_layers"] == 3 and back["neurons"]["count"] == 3
