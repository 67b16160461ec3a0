"""A LoRA on a mixture's experts, as vLLM takes it: vLLM's own loader and its fused-MoE packing (run in
.venv-vllm on CPU) turn hedit's adapter into per-expert factors whose products are exactly the edit; the
engine is asked for that layout on a GPU; vLLM's CPU build, which cannot start a mixture with LoRA
enabled, is refused in one line before any work."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_moe import every_site, neuron_set
from transformers import AutoModelForCausalLM

from hedit.check.runtime_vllm import verify_vllm
from hedit.config import SweepConfig
from hedit.edit.writers import write_artifact
from hedit.engine.intervention import experts_shape, site_module
from hedit.engine.vllm import VllmEngine, find_vllm_python
from hedit.errors import HeditError
from hedit.measure.sweep import run_sweep
from hedit.model.tiny import save_tiny_model
from hedit.neurons import split_site
from hedit.registry import get_architecture

from conftest import add_tokenizer

WORKER = Path(__file__).parents[1] / "workers" / "vllm_moe_lora.py"
CPU_REFUSAL = "vLLM's CPU build cannot serve a LoRA on a mixture of experts"


@pytest.fixture(scope="module")
def vllm_python():
    try:
        return find_vllm_python()
    except HeditError as e:
        pytest.fail(str(e)) if os.environ.get("HEDIT_REQUIRE_VLLM") == "1" else pytest.skip(str(e))


def _down(model, site) -> torch.Tensor:
    """The site's down projection as [hidden, width] (a Linear's weight, or one expert's slab)."""
    mod, kind = site_module(model, site)
    if kind == "linear":
        return mod.weight.detach()
    w = mod.down_proj[split_site(site)[1]].detach()
    return w.T if get_architecture(model.config.model_type).moe.transposed else w


@pytest.mark.vllm
@pytest.mark.parametrize("model_type", ["qwen3_moe", "qwen2_moe", "gpt_oss"])
def test_vllm_packs_the_expert_lora_into_the_edit(vllm_python, tmp_path, model_type):
    """Dense layers (qwen3_moe), a shared expert (qwen2_moe), stacked transposed experts with interleaved
    gate/up (gpt_oss): what each of vLLM's packed factor pairs adds is alpha - 1 times the chosen columns
    of that expert's down weight, and nothing to gate or up."""
    path = save_tiny_model(tmp_path / "m", model_type)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    shape = experts_shape(model)
    write_artifact(path, neuron_set(model_type, shape), tmp_path / "lora", "lora", progress=False)
    cls = json.loads((path / "config.json").read_text())["architectures"][0]
    out = tmp_path / "deltas.safetensors"
    run = subprocess.run(
        [vllm_python, str(WORKER), str(tmp_path / "lora"), cls, str(shape.num_experts), str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = load_file(out)
    want: dict[str, torch.Tensor] = {}
    arch = get_architecture(model_type)
    for site, pairs in every_site(shape).items():
        layer, expert = split_site(site)
        w = _down(model, site)
        delta = torch.zeros_like(w)
        for j, a in pairs:
            delta[:, j] = w[:, j] * (a - 1)
        name, _ = arch.site_module(layer, expert)  # vLLM's module names are transformers' here
        if not isinstance(expert, int):
            want[name] = delta
            continue
        want.setdefault(f"{name}.w2", torch.zeros(shape.num_experts, *w.shape))[expert] = delta
        for k in ("w1", "w3"):  # gate and up: nothing
            want.setdefault(f"{name}.{k}", torch.zeros(shape.num_experts, w.shape[1], w.shape[0]))
    assert set(got) == set(want)
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-6), (k, (got[k] - want[k]).abs().max())
    assert any(got[k].abs().max() > 0.1 for k in got if k.endswith(".w2"))  # not vacuous


FAKE_SERVER = """#!{python}
import json, sys
cfg = json.load(open(sys.argv[-1]))
print(json.dumps({{"ready": True}}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "shutdown":
        print(json.dumps({{"ok": True}}), flush=True)
        break
    print(json.dumps({{"outputs": [[[]]], "engine": cfg, "lora": req.get("lora")}}), flush=True)
"""


@pytest.fixture
def fake_vllm(tmp_path):
    """A "vLLM environment" whose server echoes its engine config and each request's adapter."""
    python = tmp_path / "fake-python"
    python.write_text(FAKE_SERVER.format(python=sys.executable))
    python.chmod(0o755)
    return str(python)


def _expert_lora(tmp_path, model_type: str):
    """A tiny ``model_type`` with a tokenizer, two neurons at every site, and their LoRA in tmp_path/lora:
    (model folder, neuron set, the LoRA's card)."""
    path = add_tokenizer(save_tiny_model(tmp_path / "m", model_type))
    ns = neuron_set(model_type, experts_shape(AutoModelForCausalLM.from_pretrained(path)))
    write_artifact(path, ns, tmp_path / "lora", "lora", progress=False)
    return path, ns, (tmp_path / "lora" / "README.md").read_text()


def _sweep_on_vllm(path, ns, out, python: str, device: str):
    from hedit.config import EngineConfig

    cfg = SweepConfig(alphas=(0.0, 1.0), limit=2, capability=False)
    engine = EngineConfig(engine="vllm", vllm_python=python)
    return run_sweep(str(path), ns, out, cfg, engine=engine, progress=False, device=device)


def test_a_gpu_engine_is_asked_for_vllms_3d_expert_layout(fake_vllm, tmp_path):
    """On a GPU the engine starts with --enable-mixed-moe-lora-format and each adapter goes as
    is_3d_lora_weight (what vLLM needs to load PEFT's 3-D expert factors into a 2-D model such as qwen3_moe);
    dense adapters keep vLLM's defaults."""
    model = save_tiny_model(tmp_path / "m", "qwen3_moe")
    with VllmEngine(fake_vllm, model, max_lora_rank=8, device="cuda", expert_loras=True) as engine:
        got = engine.request([[1, 2]], 1, lora=tmp_path / "cell")
    assert got["engine"]["enable_lora"] and got["engine"]["enable_mixed_moe_lora_format"] is True
    assert got["lora"] == {"name": "cell1", "id": 1, "path": str(tmp_path / "cell"), "is_3d": True}
    with VllmEngine(fake_vllm, model, max_lora_rank=8, device="cuda") as engine:
        got = engine.request([[1, 2]], 1, lora=tmp_path / "cell")
    assert got["engine"]["enable_mixed_moe_lora_format"] is False and got["lora"]["is_3d"] is False


def test_expert_loras_on_vllms_cpu_build_are_refused_in_one_line(fake_vllm, tmp_path, monkeypatch):
    """verify --runtime vllm with an expert adapter, a sweep on vLLM with expert neurons, and an engine
    asked for expert LoRAs on CPU: one line naming vLLM's reason and what to use, before any engine starts
    (the fake server would answer) and nothing written."""
    monkeypatch.delenv("VLLM_TARGET_DEVICE", raising=False)
    path, ns, card = _expert_lora(tmp_path, "qwen3_moe")  # the card: how to serve it, vLLM on a GPU, 3-D flags
    assert "--enable-mixed-moe-lora-format --max-lora-rank 8" in card and '"is_3d_lora_weight": true' in card
    refusal = f"{CPU_REFUSAL}.*Triton.*--runtime transformers or structure.*hedit edit"
    with pytest.raises(HeditError, match=refusal) as e:
        verify_vllm(path, ns, adapter=tmp_path / "lora", vllm_python=fake_vllm)
    assert "\n" not in str(e.value)
    with pytest.raises(HeditError, match=f"{CPU_REFUSAL}.*sweep with --engine hf"):
        _sweep_on_vllm(path, ns, tmp_path / "sweep", fake_vllm, "cpu")
    assert not (tmp_path / "sweep").exists()
    with pytest.raises(HeditError, match=f"{CPU_REFUSAL}.*--engine hf"):
        VllmEngine(fake_vllm, path, max_lora_rank=8, device="cpu", expert_loras=True)


def test_a_lora_vllm_would_misread_is_for_peft_only(fake_vllm, tmp_path):
    """llama4_text: PEFT reads its stacked experts in their own [E, I, H] order, vLLM reads 3-D factors in
    Linear order, so the card serves it with PEFT only, and verify and sweep on vLLM refuse in one line
    (on a GPU too)."""
    path, ns, card = _expert_lora(tmp_path, "llama4_text")
    assert "PEFT stores llama4_text's in its weights' own order" in card and "vllm serve" not in card
    why = "vLLM reads a mixture's 3-D LoRA factors in Linear order.*use the checkpoint `hedit edit` writes"
    with pytest.raises(HeditError, match=why):
        verify_vllm(path, ns, adapter=tmp_path / "lora", vllm_python=fake_vllm)
    with pytest.raises(HeditError, match=f"sweep on vLLM runs each cell as a LoRA: {why}"):
        _sweep_on_vllm(path, ns, tmp_path / "sweep", fake_vllm, "cuda")
    assert not (tmp_path / "sweep").exists()
