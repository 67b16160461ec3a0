"""Mixtures of experts edited as GGUF files and run in llama.cpp itself: tiny random qwen3_moe and gpt_oss
models are converted by llama.cpp's own `convert_hf_to_gguf.py` (stacked `ffn_{gate,up,down}_exps`; F32
and Q8_0, and gpt-oss's MXFP4 experts from an MXFP4 checkpoint, as its released GGUFs hold them), edited
by hedit, and loaded by llama-cpp-python (`make llama-env` builds both); their logits are held against
the runtime intervention in transformers on the same weights."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from hedit.edit.writers import write_artifact
from hedit.engine.intervention import scale_neurons
from hedit.errors import HeditError
from hedit.model.builtin import resolve_model
from hedit.model.tiny import save_tiny_model
from hedit.neurons import ModelInfo, Neuron, NeuronSet

from conftest import LLAMA_CONVERT, LLAMA_PYTHON, llama_logits

pytestmark = [pytest.mark.slow]
IDS = [1, 200, 3000, 45, 678, 9000, 12, 345, 4567, 89, 23, 7777]


def convert(src, out, outtype: str):
    env = os.environ | {"PYTHONPATH": str(LLAMA_CONVERT.parent / "gguf-py")}
    cmd = [sys.executable, str(LLAMA_CONVERT), str(src), "--outtype", outtype, "--outfile", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def tiny(root, model_type: str, **kw):
    """A tiny model with the embedded SmolLM2's tokenizer (llama.cpp's converter wants a BPE tokenizer it
    knows) and vocabulary size; head_dim 32."""
    if LLAMA_PYTHON is None or not LLAMA_CONVERT.is_file():
        pytest.skip("no llama.cpp environment with its converter (`make llama-env` builds both)")
    src = save_tiny_model(root / model_type, model_type, seed=1, vocab_size=49152, hidden_size=64, head_dim=32, **kw)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(resolve_model("smollm2-135m-instruct") / f, src / f)
    return src


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe-llama")
    # llama.cpp normalizes the top-k routing weights of qwen3moe, as the released Qwen3 MoE models do
    src = tiny(root, "qwen3_moe", mlp_only_layers=[], norm_topk_prob=True)
    return src, {t: convert(src, root / f"m-{t}.gguf", t) for t in ("f32", "q8_0")}


def neurons(model_type: str = "qwen3_moe") -> NeuronSet:
    g = torch.Generator().manual_seed(0)
    picks = [
        (la, int(e), int(j))
        for la in range(3)
        for e in torch.randperm(8, generator=g)[:4]
        for j in torch.randperm(32, generator=g)[:16]
    ]
    return NeuronSet(ModelInfo(model_type, 3, 32, num_experts=8), [Neuron(la, j, expert=e) for la, e, j in picks])


def intervention(src, ns, alphas) -> tuple:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.tensor([IDS])).logits[0].double().numpy()
        out = []
        for a in alphas:
            with scale_neurons(model, ns, a):
                out.append(model(torch.tensor([IDS])).logits[0].double().numpy())
    return ref, out


def test_an_edited_moe_gguf_in_llama_cpp_equals_the_intervention(converted, tmp_path):
    src, files = converted
    ns = neurons()
    ref, (want,) = intervention(src, ns, (0.0,))
    effect = float(np.abs(want - ref).max())
    runs = [("f32", "up"), ("f32", "down"), ("q8_0", "up")]
    edited = []
    for t, target in runs:
        r = write_artifact(files[t], ns, tmp_path / f"{t}-{target}.gguf", alpha=0.0, target=target, progress=False)
        assert (r.format, r.target) == ("gguf", target)
        edited.append(r.file)
    plain32, plain8, *got = llama_logits([files["f32"], files["q8_0"], *edited], IDS, tmp_path)
    floors = {"f32": float(np.abs(plain32 - ref).max()), "q8_0": float(np.abs(plain8 - ref).max())}
    assert floors["f32"] < 1e-2 and effect > 50 * floors["f32"], (floors, effect)
    for (t, target), logits in zip(runs, got):
        diff = float(np.abs(logits - want).max())
        assert diff <= 2 * floors[t] + 1e-3, (t, target, diff, floors[t])
        assert float(np.abs(logits - ref).max()) > 2 * diff, (t, target)  # nearer the edit than the source


def test_gpt_oss_gguf_f32_and_mxfp4_in_llama_cpp(tmp_path):
    """gpt-oss (llama.cpp's `gpt-oss`: clamped SwiGLU with biases, so down columns only): F32 experts at
    alphas 0 and 2, and MXFP4 experts (converted from an MXFP4 checkpoint) at alpha 0 through the chosen
    columns' FP4 codes; alpha 2 there is refused, nothing written."""
    from builders import mxfp4_gpt_oss

    src = tiny(tmp_path, "gpt_oss")
    mx = mxfp4_gpt_oss(src, tmp_path / "gpt_oss-mxfp4")
    files = {"F32": convert(src, tmp_path / "f32.gguf", "f32"), "MXFP4": convert(mx, tmp_path / "mx.gguf", "f32")}
    ns = neurons("gpt_oss")
    runs = [("F32", 0.0), ("F32", 2.0), ("MXFP4", 0.0)]
    edited = []
    for t, a in runs:
        r = write_artifact(files[t], ns, tmp_path / f"{t}-{a}.gguf", alpha=a, progress=False)
        assert (r.target, r.types, r.max_abs_error) == ("down", [t], 0.0)
        edited.append(r.file)
    with pytest.raises(HeditError, match="ffn_down is MXFP4: alpha 2 takes an FP4 value .* which E2M1 cannot hold"):
        write_artifact(files["MXFP4"], ns, tmp_path / "refused.gguf", alpha=2.0, progress=False)
    assert not (tmp_path / "refused.gguf").exists()
    ref32, want32 = intervention(src, ns, (0.0, 2.0))
    refmx, (wantmx,) = intervention(mx, ns, (0.0,))
    plain32, plainmx, *got = llama_logits([files["F32"], files["MXFP4"], *edited], IDS, tmp_path)
    floors = {"F32": float(np.abs(plain32 - ref32).max()), "MXFP4": float(np.abs(plainmx - refmx).max())}
    wants = [want32[0], want32[1], wantmx]
    refs = [ref32, ref32, refmx]
    for (t, a), logits, want, ref in zip(runs, got, wants, refs):
        diff, effect = float(np.abs(logits - want).max()), float(np.abs(want - ref).max())
        assert diff <= 2 * floors[t] + 1e-3 and effect > 10 * diff, (t, a, diff, floors[t], effect)


def test_llama4_gguf_in_llama_cpp_equals_the_intervention(tmp_path):
    """Llama 4's text model (llama.cpp's `llama4`: the converter splits the stacked transposed gate_up into
    `ffn_gate_exps` / `ffn_up_exps`; top-1 routing that weights the experts' input; a shared expert; dense
    layers 0 and 2): expert up rows and down columns, F32, against the intervention in transformers."""
    src = tiny(tmp_path, "llama4_text")
    gguf = convert(src, tmp_path / "m.gguf", "f32")
    g = torch.Generator().manual_seed(0)
    picks = [
        (la, int(e), int(j))
        for la in (1, 3)
        for e in torch.randperm(8, generator=g)[:4]
        for j in torch.randperm(32, generator=g)[:16]
    ]
    ns = NeuronSet(ModelInfo("llama4_text", 4, 32, num_experts=8), [Neuron(la, j, expert=e) for la, e, j in picks])
    ref, (want,) = intervention(src, ns, (0.0,))
    edited = [
        write_artifact(gguf, ns, tmp_path / f"{t}.gguf", alpha=0.0, target=t, progress=False).file
        for t in ("up", "down")
    ]
    plain, *got = llama_logits([gguf, *edited], IDS, tmp_path)
    floor, effect = float(np.abs(plain - ref).max()), float(np.abs(want - ref).max())
    assert floor < 1e-2 and effect > 50 * floor, (floor, effect)
    for target, logits in zip(("up", "down"), got):
        diff = float(np.abs(logits - want).max())
        assert diff <= 2 * floor + 1e-3 and float(np.abs(logits - ref).max()) > 2 * diff, (target, diff, floor)
