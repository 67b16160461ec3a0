"""Quantized safetensors checkpoints (GPTQ, AWQ, compressed-tensors pack-quantized, FP8): hedit scales the
chosen up_proj channels through their own scales; dequantized, channel j is alpha times the source's and
every other value and byte is unchanged. The checkpoints are packed here from known integer weights, so
the dequantizers are checked against the values that went in."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hedit.edit.checkpoint import edit_checkpoint
from hedit.errors import HeditError
from hedit.io.quant import dequant_awq, dequant_fp8, dequant_gptq, dequant_packed
from hedit.neurons import ModelInfo, Neuron, NeuronSet

from builders import Q_HIDDEN as HIDDEN
from builders import Q_INTER as INTER
from builders import Q_LAYERS as LAYERS
from builders import quantized


def dequant(folder, fmt, base):
    t = {k: v for k, v in load_file(folder / "model.safetensors").items() if k.startswith(base + ".")}
    n = {k[len(base) + 1 :]: v.numpy() if v.dtype != torch.float8_e4m3fn else v for k, v in t.items()}
    if fmt == "gptq":
        return dequant_gptq(n["qweight"], n["qzeros"], n["scales"], n["g_idx"])
    if fmt == "awq":
        return dequant_awq(n["qweight"], n["qzeros"], n["scales"])
    if fmt == "packed":
        return dequant_packed(n["weight_packed"], n["weight_scale"])
    return dequant_fp8(n["weight"].float().numpy(), n["weight_scale"])


FORMATS = ["gptq", "awq", "packed", "fp8"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_reference_dequantizers_read_what_was_packed(tmp_path, fmt):
    folder, want = quantized(tmp_path, fmt)
    for base, w in want.items():
        assert np.array_equal(dequant(folder, fmt, base), w), base


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.3])
@pytest.mark.parametrize("fmt", FORMATS)
def test_up_channels_are_scaled_through_their_scales(tmp_path, fmt, alpha):
    folder, _ = quantized(tmp_path, fmt)
    chosen = {0: [3, 100], 1: [255]}
    ns = NeuronSet(ModelInfo("llama", LAYERS, INTER), [Neuron(la, j) for la, idx in chosen.items() for j in idx])
    edit_checkpoint(folder, ns, tmp_path / "out", alpha=alpha, progress=False)  # auto: up, the exact route
    info = json.loads((tmp_path / "out" / "hedit.json").read_text())
    assert (
        info["target"] == "up"
        and info["format"] == json.loads((folder / "config.json").read_text())["quantization_config"]["quant_method"]
    )
    before, after = load_file(folder / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    changed = {
        k
        for k in before
        if not torch.equal(
            before[k].view(torch.uint8) if before[k].dtype == torch.float8_e4m3fn else before[k],
            after[k].view(torch.uint8) if after[k].dtype == torch.float8_e4m3fn else after[k],
        )
    }
    assert changed == {
        f"model.layers.{la}.mlp.up_proj.{'scales' if fmt in ('gptq', 'awq') else 'weight_scale'}" for la in chosen
    }
    for layer, idx in chosen.items():
        base = f"model.layers.{layer}.mlp.up_proj"
        old, new = dequant(folder, fmt, base), dequant(tmp_path / "out", fmt, base)
        others = [r for r in range(INTER) if r not in idx]
        assert np.array_equal(old[others], new[others])
        err = np.abs(new[idx] - alpha * old[idx]).max()
        if alpha in (0.0, 0.5):
            assert err == 0.0  # alpha 0 and powers of two are exact
        else:  # the recorded bound holds (float32 scales: exact up to float32 arithmetic)
            assert err <= info["max_abs_error"] + 1e-6 * np.abs(old[idx]).max()
    if alpha in (0.0, 0.5):
        assert info["max_abs_error"] == 0.0
    elif fmt in ("gptq", "awq"):  # float16 scales: the new scale's rounding shows
        assert info["max_abs_error"] > 0.0


def test_shared_fp8_scales_take_only_alpha_0(tmp_path):
    folder, _ = quantized(tmp_path, "fp8")
    sd = load_file(folder / "model.safetensors")
    for k in [k for k in sd if k.endswith("weight_scale")]:
        sd[k] = sd[k].max().reshape(1)  # one scale per tensor
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
    ns = NeuronSet(ModelInfo("llama", LAYERS, INTER), [Neuron(0, 3)])
    with pytest.raises(HeditError, match="one scale shared by many output channels"):
        edit_checkpoint(folder, ns, tmp_path / "a", alpha=0.5, progress=False)
    edit_checkpoint(folder, ns, tmp_path / "b", alpha=0.0, progress=False)
    old, new = (
        dequant(folder, "fp8", "model.layers.0.mlp.up_proj"),
        dequant(tmp_path / "b", "fp8", "model.layers.0.mlp.up_proj"),
    )
    assert np.array_equal(new[3], np.zeros(HIDDEN)) and np.array_equal(np.delete(new, 3, 0), np.delete(old, 3, 0))


def test_quantized_checkpoints_refuse_the_down_target_and_adapters(tmp_path):
    from hedit.edit.adapters import export_adapter

    folder, _ = quantized(tmp_path, "gptq")
    ns = NeuronSet(ModelInfo("llama", LAYERS, INTER), [Neuron(0, 3)])
    with pytest.raises(HeditError, match="shares its scales along the rows of down_proj"):
        edit_checkpoint(folder, ns, tmp_path / "a", alpha=0.0, progress=False, target="down")
    with pytest.raises(HeditError, match="is quantized \\(gptq\\); hedit builds adapters from unquantized"):
        export_adapter(folder, ns, tmp_path / "b", alpha=0.0)
