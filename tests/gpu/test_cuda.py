"""The CUDA path, run where a GPU is (skipped elsewhere, so CI on CPU skips it): collect, features, probe,
sweep and verify with --device cuda give what the CPU gives, and a device map over GPU and CPU works."""

from __future__ import annotations

import pytest
import torch

from hedit.check.verify import verify
from hedit.config import IdentifyConfig, SweepConfig
from hedit.edit.checkpoint import edit_checkpoint
from hedit.find.features import CettHooks, Item, batch_features
from hedit.find.identify import identify
from hedit.measure.sweep import run_sweep
from hedit.model.load import load_model
from hedit.model.tiny import save_tiny_model

from conftest import add_tokenizer, neuron_set, yes_no_questions

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return add_tokenizer(save_tiny_model(tmp_path_factory.mktemp("gpu") / "m", "llama"))


def test_features_on_cuda_equal_cpu(model):
    items = [
        Item([5, 9, 22, 40, 77, 3, 8], {"answer": [5, 6], "other": [0, 1, 2, 3, 4]}, {}),
        Item([1, 2, 3, 4], {"answer": [3], "other": [0, 1, 2]}, {}),
    ]
    out = []
    for device in ("cpu", "cuda"):
        m = load_model(model, device=device)
        hooks = CettHooks(m)
        out.append(batch_features(m, hooks, items, ("answer", "other"), 0).cpu())
        hooks.remove()
    assert torch.allclose(out[0], out[1], atol=1e-4, rtol=1e-4)


def test_device_map_over_gpu_and_cpu(model, tmp_path):
    ns = neuron_set("llama", per_layer=6)
    edit_checkpoint(model, ns, tmp_path / "e", alpha=0.0, progress=False)
    place = {"device_map": "auto", "max_memory": {0: "200KB", "cpu": "10GiB"}}
    split = load_model(model, **place)
    assert {str(v) for v in split.hf_device_map.values()} >= {"0", "cpu"}
    r = verify(model, ns, 0.0, edited=tmp_path / "e", new_tokens=3, placement=place)
    assert r.passed and r.effect > 1e-2


def test_identify_sweep_and_verify_on_cuda(model, tmp_path, yes_judge):
    cfg = IdentifyConfig(samples=2, max_new_tokens=4, batch_size=8, random_draws=2, c_grid=(0.1, 1.0, 10.0))
    report = identify(
        str(model), yes_no_questions(), tmp_path / "id", cfg, progress=False, log=lambda *a: None, device="cuda"
    )
    assert report["h_neurons"] > 0
    ns = neuron_set("llama", per_layer=4)
    sw = SweepConfig(
        alphas=(0.0, 1.0),
        controls=1,
        limit=4,
        max_new_tokens=6,
        batch_size=4,
        suites=("false-premise",),
        capability=True,
    )
    gpu = run_sweep(str(model), ns, tmp_path / "gpu", sw, progress=False, log=lambda *a: None, device="cuda")
    cpu = run_sweep(str(model), ns, tmp_path / "cpu", sw, progress=False, log=lambda *a: None, device="cpu")
    assert gpu["results"]["false-premise"] == cpu["results"]["false-premise"]
    edit_checkpoint(model, ns, tmp_path / "e", alpha=0.0, progress=False)
    r = verify(model, ns, 0.0, edited=tmp_path / "e", new_tokens=4, placement={"device": "cuda"})
    assert r.passed


def test_vllm_serves_an_expert_lora_on_cuda(tmp_path, monkeypatch):
    """What vLLM's CPU build cannot do (tests/moe/test_moe_vllm_lora.py): an exact LoRA on a mixture's
    experts, served by vLLM's fused-MoE LoRA layer, gives the intervention's greedy tokens and logprobs."""
    from transformers import AutoConfig

    from hedit.check.runtime_vllm import verify_vllm
    from hedit.edit.adapters import export_adapter
    from hedit.engine.vllm import find_vllm_python
    from hedit.errors import HeditError
    from hedit.neurons import ModelInfo, Neuron, NeuronSet
    from hedit.registry import get_architecture

    try:
        python = find_vllm_python()
    except HeditError as e:
        pytest.skip(str(e))
    monkeypatch.setenv("VLLM_TARGET_DEVICE", "cuda")
    src = add_tokenizer(
        save_tiny_model(
            tmp_path / "m", "qwen3_moe", hidden_size=128, head_dim=64, num_attention_heads=2, num_key_value_heads=1
        )
    )
    shape = get_architecture("qwen3_moe").experts_shape(AutoConfig.from_pretrained(src).to_dict())
    moe = [layer for layer in range(shape.num_layers) if layer not in shape.dense]
    neurons = [Neuron(layer, j, expert=e) for layer in moe for e in range(shape.num_experts) for j in (1, 7)]
    info = ModelInfo("qwen3_moe", shape.num_layers, shape.intermediate_size, num_experts=shape.num_experts)
    ns = NeuronSet(info, neurons, alpha=0.0)
    export_adapter(src, ns, tmp_path / "lora", "lora")
    r = verify_vllm(src, ns, vllm_python=python, new_tokens=6, adapter=tmp_path / "lora")
    assert r.passed and r.token_agreement == 1.0 and r.effect > 0.05, r
