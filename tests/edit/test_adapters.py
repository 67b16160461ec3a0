import json

import pytest
import torch
from safetensors.torch import load_file

from hedit.edit.adapters import export_adapter
from hedit.edit.adapters.lora import vllm_max_lora_rank
from hedit.errors import HeditError
from hedit.io.checkpoint import open_checkpoint

from conftest import INTER, leftovers, neuron_set


def test_lora_layout(checkpoint, tmp_path):
    src = checkpoint("llama")
    ns = neuron_set("llama", per_layer=3, layers=[0, 2])
    ns.neurons.pop()  # layer 2 now has 2 neurons: padded to the common rank 3
    export_adapter(src, ns, tmp_path / "lora", "lora", alpha=0.0)
    t = load_file(tmp_path / "lora" / "adapter_model.safetensors")
    cfg = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == 3 and cfg["peft_type"] == "LORA" and cfg["bias"] == "none"
    assert sorted(cfg["target_modules"]) == ["model.layers.0.mlp.down_proj", "model.layers.2.mlp.down_proj"]
    assert cfg["modules_to_save"] is None
    a2 = t["base_model.model.model.layers.2.mlp.down_proj.lora_A.weight"]
    b2 = t["base_model.model.model.layers.2.mlp.down_proj.lora_B.weight"]
    assert a2.shape == (3, INTER) and torch.equal(a2[2], torch.zeros(INTER)) and b2.abs()[:, 2].sum() == 0
    w = open_checkpoint(src)
    cols = [i for i, _ in ns.plan(0.0)[2]]
    import os

    from hedit.io.safetensors_header import read_tensor

    f, info = w.down_proj[2]
    fd = os.open(src / f, os.O_RDONLY)
    weight = read_tensor(fd, info)
    os.close(fd)
    assert torch.equal(b2[:, :2], -weight[:, cols])  # alpha 0: delta = -W[:, S]
    info = json.loads((tmp_path / "lora" / "hedit.json").read_text())
    assert info["lora_rank"] == 3 and info["vllm_max_lora_rank"] == 8 and info["kind"] == "lora"
    card = (tmp_path / "lora" / "README.md").read_text()
    assert "--max-lora-rank 8" in card and "library_name: peft" in card


def test_ia3_layout(checkpoint, tmp_path):
    src = checkpoint("phi3")
    ns = neuron_set("phi3", per_layer=2, layers=[1])
    export_adapter(src, ns, tmp_path / "ia3", "ia3", alpha=2.0)
    t = load_file(tmp_path / "ia3" / "adapter_model.safetensors")
    v = t["base_model.model.model.layers.1.mlp.down_proj.ia3_l"]
    assert v.shape == (1, INTER)
    cols = [i for i, _ in ns.plan(2.0)[1]]
    assert torch.equal(v[0, cols], torch.full((2,), 2.0)) and v.sum() == INTER + 2
    cfg = json.loads((tmp_path / "ia3" / "adapter_config.json").read_text())
    assert cfg["feedforward_modules"] == cfg["target_modules"] == ["model.layers.1.mlp.down_proj"]
    assert "vLLM does not serve IA3" in (tmp_path / "ia3" / "README.md").read_text()


def test_vllm_rank_rule():
    assert [vllm_max_lora_rank(r) for r in (1, 2, 8, 9, 300, 321, 512)] == [1, 8, 8, 16, 320, 512, 512]
    with pytest.raises(HeditError, match="rank 513 .* use `hedit edit`"):
        vllm_max_lora_rank(513)


def test_rank_above_512_is_refused_before_writing(checkpoint, tmp_path):
    from hedit.model.tiny import save_tiny_model

    src = save_tiny_model(tmp_path / "wide", "llama", intermediate_size=600, num_hidden_layers=1)
    ns = neuron_set("llama", per_layer=513, num_layers=1, inter=600)
    with pytest.raises(HeditError, match="above vLLM's limit of 512"):
        export_adapter(src, ns, tmp_path / "lora", "lora", alpha=0.0)
    assert not (tmp_path / "lora").exists() and leftovers(tmp_path) == []


def test_unknown_format(checkpoint, tmp_path):
    with pytest.raises(HeditError, match="unknown adapter format 'dora'"):
        export_adapter(checkpoint("llama"), neuron_set(), tmp_path / "x", "dora", alpha=0.0)
