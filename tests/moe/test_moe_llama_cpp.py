"""A mixture of experts edited as a GGUF file and run in llama.cpp itself: a tiny random qwen3_moe is
converted by llama.cpp's own `convert_hf_to_gguf.py` (stacked `ffn_{gate,up,down}_exps`, in F32 and
Q8_0), edited by hedit, and loaded by llama-cpp-python (`make llama-env` builds both); its logits are
held against the runtime intervention in transformers on the same weights."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from hedit.edit.writers import write_artifact
from hedit.engine.intervention import scale_neurons
from hedit.model.builtin import resolve_model
from hedit.model.tiny import save_tiny_model
from hedit.neurons import ModelInfo, Neuron, NeuronSet

from conftest import LLAMA_CONVERT, LLAMA_PYTHON, llama_logits

pytestmark = [pytest.mark.slow]
IDS = [1, 200, 3000, 45, 678, 9000, 12, 345, 4567, 89, 23, 7777]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if LLAMA_PYTHON is None or not LLAMA_CONVERT.is_file():
        pytest.skip("no llama.cpp environment with its converter (`make llama-env` builds both)")
    root = tmp_path_factory.mktemp("moe-llama")
    # llama.cpp normalizes the top-k routing weights of qwen3moe, as the released Qwen3 MoE models do;
    # its converter wants a BPE tokenizer it knows, so the embedded SmolLM2's and its vocabulary size
    src = save_tiny_model(
        root / "hf",
        "qwen3_moe",
        seed=1,
        vocab_size=49152,
        hidden_size=64,
        head_dim=32,
        mlp_only_layers=[],
        norm_topk_prob=True,
    )
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(resolve_model("smollm2-135m-instruct") / f, src / f)
    env = os.environ | {"PYTHONPATH": str(LLAMA_CONVERT.parent / "gguf-py")}
    out = {}
    for t in ("f32", "q8_0"):
        out[t] = root / f"m-{t}.gguf"
        cmd = [sys.executable, str(LLAMA_CONVERT), str(src), "--outtype", t, "--outfile", str(out[t])]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
    return src, out


def neurons() -> NeuronSet:
    g = torch.Generator().manual_seed(0)
    picks = [
        (la, int(e), int(j))
        for la in range(3)
        for e in torch.randperm(8, generator=g)[:4]
        for j in torch.randperm(32, generator=g)[:16]
    ]
    return NeuronSet(ModelInfo("qwen3_moe", 3, 32, num_experts=8), [Neuron(la, j, expert=e) for la, e, j in picks])


def test_an_edited_moe_gguf_in_llama_cpp_equals_the_intervention(converted, tmp_path):
    from transformers import AutoModelForCausalLM

    src, files = converted
    ns = neurons()
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.tensor([IDS])).logits[0].double().numpy()
        with scale_neurons(model, ns, 0.0):
            want = model(torch.tensor([IDS])).logits[0].double().numpy()
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
