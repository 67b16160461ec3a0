"""The edited checkpoint and the LoRA adapter load in vLLM (CPU, float32) and match transformers.

Needs the vLLM environment (`make vllm-env`). `make test` sets HEDIT_REQUIRE_VLLM=1, so there a
missing environment fails instead of skipping.
"""

import os

import pytest

from hedit.check.runtime_vllm import verify_vllm
from hedit.edit.adapters import export_adapter
from hedit.edit.checkpoint import edit_checkpoint
from hedit.engine.vllm import find_vllm_python
from hedit.errors import HeditError

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def vllm_python():
    try:
        return find_vllm_python()
    except HeditError as e:
        if os.environ.get("HEDIT_REQUIRE_VLLM") == "1":
            pytest.fail(str(e))
        pytest.skip(str(e))


def test_missing_vllm_environment_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("HEDIT_VLLM_PYTHON", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HeditError, match="no vLLM environment found"):
        find_vllm_python()


@pytest.fixture(scope="module")
def demo_artifacts(tmp_path_factory):
    """The demo model (embedded SmolLM2-135M-Instruct) with the H-neurons `make demo` found, silenced."""
    from pathlib import Path

    from hedit.model.builtin import resolve_model

    root = tmp_path_factory.mktemp("vllm-demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEDIT_CACHE", str(root / "cache"))
        src = resolve_model("smollm2-135m-instruct")
    ns = Path(__file__).parents[1] / "data" / "smollm2_h_neurons.json"
    edit_checkpoint(src, ns, root / "edited", alpha=0.0, progress=False)
    export_adapter(src, ns, root / "lora", "lora", alpha=0.0)
    return src, ns, root


@pytest.mark.parametrize("kind", ["edited", "adapter"])
def test_vllm_matches_transformers(vllm_python, demo_artifacts, kind):
    """The demo model with the H-neurons `make demo` found, silenced (tiny random models go through vLLM
    in tests/check/test_engines.py)."""
    src, ns, root = demo_artifacts
    min_effect = 1e-3
    artifact = {"edited": {"edited": root / "edited"}, "adapter": {"adapter": root / "lora"}}[kind]
    r = verify_vllm(src, ns, 0.0, vllm_python=vllm_python, new_tokens=8, **artifact)
    assert r.token_agreement == 1.0, r
    assert r.max_abs_logprob_diff < 1e-3, r
    assert r.effect > min_effect, r  # without the edit, vLLM's logprobs would be off by this much
    assert r.passed


@pytest.mark.parametrize("model_type", ["qwen3_moe", "gpt_oss", "llama4_text"])
def test_vllm_serves_an_edited_mixture_of_experts(vllm_python, tmp_path, model_type):
    """Expert neurons edited into a checkpoint (qwen3_moe: one tensor per expert; gpt_oss: stacked,
    transposed, with biases; llama4_text: stacked, transposed, top-1 routing on the experts' input, a shared
    expert) give vLLM's greedy tokens and logprobs of the intervention in transformers.
    The other families vLLM's CPU build runs are in the README; head_dim 64, as vLLM's CPU attention needs."""
    from transformers import AutoConfig

    from hedit.model.tiny import save_tiny_model
    from hedit.neurons import ModelInfo, Neuron, NeuronSet
    from hedit.registry import get_architecture

    from conftest import add_tokenizer

    src = add_tokenizer(
        save_tiny_model(
            tmp_path / "m", model_type, hidden_size=128, head_dim=64, num_attention_heads=2, num_key_value_heads=1
        )
    )
    shape = get_architecture(model_type).experts_shape(AutoConfig.from_pretrained(src).to_dict())
    neurons = [
        Neuron(layer, j, expert=e)
        for layer in range(shape.num_layers)
        if layer not in shape.dense
        for e in range(shape.num_experts)
        for j in (1, 7)
    ]
    ns = NeuronSet(
        ModelInfo(model_type, shape.num_layers, shape.intermediate_size, num_experts=shape.num_experts),
        neurons,
        alpha=0.0,
    )
    edit_checkpoint(src, ns, tmp_path / "edited", progress=False)
    r = verify_vllm(src, ns, vllm_python=vllm_python, new_tokens=6, edited=tmp_path / "edited")
    assert r.passed and r.token_agreement == 1.0 and r.max_abs_logprob_diff < 1e-4, r
    assert r.effect > 0.05, r  # the edit moves vLLM's logprobs: equality is not vacuous
