"""Quantized checkpoints made by a real quantizer (llmcompressor, `make quant-env`), edited by hedit, checked
against the quantization library's own decompression and served by vLLM's CPU build (`make vllm-env`).

vLLM's CPU build here runs compressed-tensors FP8 (per-channel weights, dynamic per-token FP8
activations) and W4A16. Its int4 kernel has no float32 path ("cpu_gemm_wna16" not implemented for
'Float'): it takes 16-bit activations, so the W4A16 edit is served in bfloat16 and held, against the
float32 intervention on the library's decompressed weights, to a floor measured in the same run (the
unedited checkpoint served the same way). The FP8 reference is the
dequantized source in transformers (float32) with the same per-token FP8 rounding of every projection's
input and hedit's runtime intervention: vLLM's greedy tokens and logprobs must equal it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hedit.check.runtime_vllm import greedy_logprobs
from hedit.edit.checkpoint import edit_checkpoint
from hedit.engine.intervention import scale_neurons
from hedit.engine.vllm import find_vllm_python
from hedit.errors import HeditError
from hedit.io.quant import dequant_fp8, dequant_packed
from hedit.neurons import ModelInfo, Neuron, NeuronSet

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
WORKER = Path(__file__).parents[1] / "workers" / "quantize.py"


def _env(var: str, default: str, make: str) -> str:
    path = os.environ.get(var) or default
    if not Path(path).is_file():
        msg = f"no {make} environment ({var} or {default}); `make {make}` builds it"
        if os.environ.get("HEDIT_REQUIRE_VLLM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return os.path.abspath(path)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    python = _env("HEDIT_QUANT_PYTHON", ".venv-quant/bin/python", "quant-env")
    out = tmp_path_factory.mktemp("quant")
    r = subprocess.run([python, str(WORKER), str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _dense(folder: Path, scheme: str) -> dict[str, np.ndarray]:
    sd = load_file(folder / "model.safetensors")
    out = {}
    for k in sd:
        if k.endswith("weight_packed"):
            base = k[: -len(".weight_packed")]
            out[base + ".weight"] = dequant_packed(sd[k].numpy(), sd[base + ".weight_scale"].float().numpy())
        elif sd[k].dtype == torch.float8_e4m3fn:
            out[k] = dequant_fp8(sd[k].float().numpy(), sd[k + "_scale"].float().numpy())
    return out


@pytest.mark.parametrize("scheme", ["W4A16", "FP8_DYNAMIC"])
def test_hedit_dequantizes_like_the_library_and_edits_exactly(quantized, tmp_path, scheme):
    folder = quantized / scheme
    lib = {k: v.numpy() for k, v in load_file(quantized / f"{scheme}-dense.safetensors").items()}
    mine = _dense(folder, scheme)
    # equal up to float32 rounding (the library multiplies in another order)
    assert set(mine) == set(lib) and all(np.abs(mine[k] - lib[k]).max() <= 1e-6 * np.abs(lib[k]).max() for k in lib)
    ns = NeuronSet(ModelInfo("llama", 2, 256), [Neuron(0, 5), Neuron(1, 200)])
    for alpha in (0.0, 0.3):
        out = edit_checkpoint(folder, ns, tmp_path / f"e{alpha}", alpha=alpha, progress=False)
        edited = _dense(out, scheme)
        for layer, j in ((0, 5), (1, 200)):
            name = f"model.layers.{layer}.mlp.up_proj.weight"
            want = mine[name].copy()
            want[j] *= alpha
            tol = 0.0 if alpha == 0 else 1e-6 * np.abs(mine[name]).max()
            assert np.abs(edited[name] - want).max() <= tol
            assert np.array_equal(np.delete(edited[name], j, 0), np.delete(mine[name], j, 0))
        untouched = [k for k in mine if "up_proj" not in k]
        assert all(np.array_equal(edited[k], mine[k]) for k in untouched)


def _fp8_reference(folder: Path, dense: dict[str, np.ndarray], ns: NeuronSet, prompts, new_tokens: int):
    """Greedy tokens and logprobs of the dequantized model with per-token FP8 inputs to every projection
    (what vLLM's dynamic FP8 kernels compute) and the runtime intervention; and the edit's effect."""
    model = _float_model(folder, {k: torch.from_numpy(v) for k, v in dense.items()})

    def fp8_input(mod, args):
        x = args[0]
        s = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 448.0
        return ((x / s).to(torch.float8_e4m3fn).to(torch.float32) * s,)

    @contextlib.contextmanager
    def fp8_inputs():  # registered after the intervention's hooks: a neuron is scaled, then rounded
        hooks = [
            mod.register_forward_pre_hook(fp8_input)
            for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and "lm_head" not in name
        ]
        yield
        for h in hooks:
            h.remove()

    tokens, logprobs, effect = [], [], 0.0
    with torch.no_grad():
        for ids in prompts:
            seq = list(ids)
            with scale_neurons(model, ns.plan(0.0)), fp8_inputs():
                for _ in range(new_tokens):
                    seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
                lp = torch.log_softmax(model(torch.tensor([seq])).logits[0], -1)
            with fp8_inputs():
                plain = torch.log_softmax(model(torch.tensor([seq])).logits[0], -1)
            pos = torch.arange(len(ids) - 1, len(seq) - 1)
            chosen = torch.tensor(seq[len(ids) :])
            tokens.append(seq[len(ids) :])
            logprobs.append(lp[pos, chosen].tolist())
            effect = max(effect, (lp[pos, chosen] - plain[pos, chosen]).abs().max().item())
    return tokens, logprobs, effect


# a third of each layer's neurons, and the prompts both vLLM checks serve
THIRD = NeuronSet(
    ModelInfo("llama", 2, 256), [Neuron(0, j) for j in range(0, 256, 3)] + [Neuron(1, j) for j in range(1, 256, 3)]
)
PROMPTS = [[1, 5, 9, 22, 40, 77], [3, 4, 5, 6, 7], [200, 17, 90]]


@pytest.fixture
def vllm_python():
    try:
        return find_vllm_python()
    except HeditError as e:
        pytest.fail(str(e)) if os.environ.get("HEDIT_REQUIRE_VLLM") == "1" else pytest.skip(str(e))


def test_fp8_edit_served_by_vllm_equals_the_intervention(quantized, tmp_path, vllm_python):
    python, folder, ns, prompts = vllm_python, quantized / "FP8_DYNAMIC", THIRD, PROMPTS
    out = edit_checkpoint(folder, ns, tmp_path / "edited", alpha=0.0, progress=False)
    tokens, logprobs, effect = _fp8_reference(folder, _dense(folder, "FP8_DYNAMIC"), ns, prompts, 6)
    got_tokens, got_logprobs = greedy_logprobs(python, out, prompts, 6)
    diff = max(abs(a - b) for r, g in zip(logprobs, got_logprobs) for a, b in zip(r, g))
    print(
        f"\nvLLM FP8 edit: tokens equal {got_tokens == tokens}, max abs logprob diff {diff:.2e}, "
        f"edit effect {effect:.2e}",
        file=sys.stderr,
    )
    assert got_tokens == tokens and diff < 1e-4 and effect > 1e-3


def test_w4a16_edit_served_by_vllm_in_bfloat16_equals_the_intervention(quantized, tmp_path, vllm_python):
    """vLLM's CPU int4 kernel (``cpu_gemm_wna16``) runs 16-bit activations only, so the edited W4A16
    checkpoint is served in bfloat16 against the float32 intervention on the library's dequantized
    weights, teacher-forced on the reference's own greedy sequences. The bound is this machine's own
    bfloat16 noise, measured in the same run as the llama.cpp tests measure theirs: the *unedited*
    checkpoint served the same way against the unedited float32 model (the floor). The edit may add at
    most as much again (2x the floor); the edit's effect and another alpha (0.5) must sit far above it."""
    from hedit.check.runtime_vllm import sequence_logprobs

    folder, ns = quantized / "W4A16", THIRD
    out = edit_checkpoint(folder, ns, tmp_path / "edited", alpha=0.0, progress=False)
    model = _float_model(folder, load_file(quantized / "W4A16-dense.safetensors"))
    seqs, ref, wrong, plain = [], [], [], []
    with torch.no_grad():
        for ids in PROMPTS:
            seq = list(ids)
            with scale_neurons(model, ns.plan(0.0)):
                for _ in range(6):
                    seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
            seqs.append(seq)
            for alpha, into in ((0.0, ref), (0.5, wrong), (1.0, plain)):
                with scale_neurons(model, ns.plan(alpha)):
                    logits = model(torch.tensor([seq])).logits[0]
                lp = torch.log_softmax(logits, -1)[torch.arange(len(seq) - 1), torch.tensor(seq[1:])]
                into.append(lp.numpy())
    got = [np.array(g) for g in sequence_logprobs(vllm_python, out, seqs, dtype="bfloat16")]
    unedited = [np.array(g) for g in sequence_logprobs(vllm_python, folder, seqs, dtype="bfloat16")]

    def worst(a, b):
        return max(float(np.abs(x - y).max()) for x, y in zip(a, b))

    floor = worst(unedited, plain)
    diff, effect, other = worst(got, ref), worst(plain, ref), worst(got, wrong)
    print(
        f"\nvLLM W4A16 edit in bfloat16: max abs logprob diff {diff:.2e} against the unedited floor {floor:.2e} "
        f"(bound {2 * floor:.2e}), edit effect {effect:.2e}, against alpha 0.5 {other:.2e}",
        file=sys.stderr,
    )
    assert 0 < floor and diff <= 2 * floor
    assert effect > 8 * floor and other > 8 * floor  # the edit and a wrong alpha are far outside the noise


def _float_model(folder: Path, dense: dict[str, torch.Tensor]):
    """The checkpoint's model in float32 with its quantized projections replaced by ``dense`` weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    config.quantization_config = None
    model = AutoModelForCausalLM.from_config(config).eval()
    src = load_file(folder / "model.safetensors")
    state = {k: dense[k] if k in dense else v.float() for k, v in src.items() if k in model.state_dict()}
    state |= {k: v.float() for k, v in dense.items() if k in model.state_dict()}
    missing = [k for k in model.state_dict() if k not in state and not k.endswith("rotary_emb.inv_freq")]
    assert not missing, missing[:3]
    model.load_state_dict(state, strict=False)
    return model
