"""A quantized mixture of experts, made by a real quantizer (llmcompressor, FP8 per channel and W4A16
pack-quantized: it quantizes each expert as its own Linear): `hedit edit` scales the chosen experts' up
channels through their own scales, exactly, and leaves every other tensor byte-identical. Needs the
quantizer's environment (`make quant-env`, which `make test` builds)."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hedit.edit.writers import write_artifact
from hedit.errors import HeditError
from hedit.neurons import ModelInfo, Neuron, NeuronSet

pytestmark = [pytest.mark.slow]
WORKER = Path(__file__).parents[1] / "workers" / "quantize.py"


@pytest.fixture(scope="module")
def quant_moe(tmp_path_factory):
    python = os.environ.get("HEDIT_QUANT_PYTHON") or ".venv-quant/bin/python"
    if not Path(python).is_file():
        msg = "no quant-env environment (HEDIT_QUANT_PYTHON or .venv-quant/bin/python); `make quant-env` builds it"
        if os.environ.get("HEDIT_REQUIRE_VLLM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    out = tmp_path_factory.mktemp("quant-moe")
    r = subprocess.run([python, str(WORKER), str(out), "moe"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def fp8_moe(quant_moe):
    return quant_moe / "FP8_DYNAMIC"


def dequant(sd, name):
    return sd[name + ".weight"].float() * sd[name + ".weight_scale"].float()


def edits_scale_channels(src_dir, ns, picks, weight: str, dq, tol, tmp_path, scale: str = "weight_scale") -> None:
    """At alphas 0, 0.5 and 1.7 the chosen (layer, expert, neuron) up channels, dequantized by ``dq``, are
    alpha times the source's within ``tol(name, alpha, want)``; the quantized ``weight`` is untouched and
    only the chosen channels' ``scale`` tensors change."""
    src = load_file(src_dir / "model.safetensors")
    for alpha in (0.0, 0.5, 1.7):
        r = write_artifact(src_dir, ns, tmp_path / f"e{alpha}", alpha=alpha, progress=False)
        assert r.format == "quantized" and r.target == "up"
        ed = load_file(tmp_path / f"e{alpha}" / "model.safetensors")
        for la, e, j in picks:
            name = f"model.layers.{la}.mlp." + (f"experts.{e}.up_proj" if e is not None else "up_proj")
            want = dq(src, name)
            assert abs(want[j]).max() > 0
            want[j] *= alpha
            assert float(abs(dq(ed, name) - want).max()) <= tol(name, alpha, want), (name, alpha)
            assert torch.equal(ed[f"{name}.{weight}"], src[f"{name}.{weight}"])
        changed = {k for k in src if not torch.equal(src[k], ed[k])}
        assert changed == {
            f"model.layers.{la}.mlp." + (f"experts.{e}." if e is not None else "") + f"up_proj.{scale}"
            for la, e, j in picks
        }


def test_fp8_experts_are_edited_through_their_own_scales(fp8_moe, tmp_path):
    src = load_file(fp8_moe / "model.safetensors")
    assert src["model.layers.1.mlp.experts.2.up_proj.weight"].dtype == torch.float8_e4m3fn  # per expert
    picks = [(1, 2, 5), (2, 7, 63), (0, None, 100)]  # layer 0 is dense (mlp_only_layers)
    ns = NeuronSet(ModelInfo("qwen3_moe", 3, 128, num_experts=8), [Neuron(la, j, expert=e) for la, e, j in picks])

    def tol(name, alpha, want):
        return 0.0 if alpha in (0.0, 0.5) else 1e-6 * float(want.abs().max())  # a new f32 scale's rounding

    edits_scale_channels(fp8_moe, ns, picks, "weight", dequant, tol, tmp_path)  # the FP8 values untouched
    from hedit.check.verify import verify_artifact
    from hedit.config import VerifyConfig

    assert verify_artifact(fp8_moe, ns, 0.0, edited=tmp_path / "e0.0", cfg=VerifyConfig(runtime="structure")).passed
    with pytest.raises(HeditError, match="shares its scales along the rows of down_proj"):
        write_artifact(fp8_moe, ns, tmp_path / "down", alpha=0.0, target="down", progress=False)
    assert not np.any([p.name == "down" for p in tmp_path.iterdir()])


def test_w4a16_experts_are_edited_through_their_own_scales(quant_moe, tmp_path):
    """compressed-tensors pack-quantized experts (int4 packed along the input, a scale per group of 128):
    the chosen experts' up channels through their scales, the packed integers untouched; held to the
    dequantizer that tests/io/test_quant.py holds to compressed-tensors itself."""
    from hedit.io.quant import dequant_packed

    w4 = quant_moe / "W4A16"
    src = load_file(w4 / "model.safetensors")
    assert src["model.layers.1.mlp.experts.2.up_proj.weight_packed"].dtype == torch.int32  # per expert
    picks = [(1, 2, 5), (2, 7, 127), (0, None, 100)]
    ns = NeuronSet(ModelInfo("qwen3_moe", 3, 128, num_experts=8), [Neuron(la, j, expert=e) for la, e, j in picks])

    def dq(sd, name):
        return dequant_packed(sd[name + ".weight_packed"].numpy(), sd[name + ".weight_scale"].float().numpy())

    def tol(name, alpha, want):
        scale = src[name + ".weight_scale"]
        step = 2.0**-8 if scale.dtype == torch.bfloat16 else 2.0**-11  # a new scale's rounding, relative
        return 0.0 if alpha in (0.0, 0.5) else step * 8 * float(scale.float().abs().max()) * alpha  # |q| <= 8

    edits_scale_channels(w4, ns, picks, "weight_packed", dq, tol, tmp_path)
    from hedit.check.verify import verify_artifact
    from hedit.config import VerifyConfig

    assert verify_artifact(w4, ns, 0.0, edited=tmp_path / "e0.0", cfg=VerifyConfig(runtime="structure")).passed


@pytest.mark.parametrize("fmt", ["gptq", "awq"])
def test_gptq_and_awq_experts_are_edited_through_their_own_scales(tmp_path, fmt):
    """GPTQ and AWQ (AutoGPTQ's and AutoAWQ's int4 layouts, a float16 scale per group of 64) on a qwen3_moe
    whose experts are stored one by one, packed by tests/builders.py (no quantizer here writes them): the
    chosen experts' up channels through their scales, qweight and qzeros untouched; held to the
    dequantizers tests/io/test_quant.py checks against what was packed."""
    from hedit.io.quant import dequant_awq, dequant_gptq

    from builders import quantized

    folder, _ = quantized(tmp_path / "q", fmt, model_type="qwen3_moe", moe_intermediate_size=128, num_hidden_layers=3)
    picks = [(1, 2, 5), (2, 7, 127), (0, None, 100)]  # layer 0 is dense (mlp_only_layers)
    ns = NeuronSet(ModelInfo("qwen3_moe", 3, 128, num_experts=8), [Neuron(la, j, expert=e) for la, e, j in picks])

    def dq(sd, name):
        n = {k: sd[f"{name}.{k}"].numpy() for k in ("qweight", "qzeros", "scales", "g_idx") if f"{name}.{k}" in sd}
        w = dequant_gptq(**n) if fmt == "gptq" else dequant_awq(n["qweight"], n["qzeros"], n["scales"])
        return torch.from_numpy(np.asarray(w, dtype=np.float32))

    def tol(name, alpha, want):  # a new float16 scale's rounding, relative, times the largest |q - z| (15)
        return 0.0 if alpha in (0.0, 0.5) else 2.0**-11 * 15 * float(want.abs().max()) * alpha

    edits_scale_channels(folder, ns, picks, "qweight", dq, tol, tmp_path, scale="scales")
