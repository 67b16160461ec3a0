"""GGUF edits in llama.cpp (llama-cpp-python, built from source into .venv-llama by `make llama-env`, about
10 minutes on 2 cores, so `make test` runs this file only where that environment exists).

llama.cpp multiplies quantized weights with quantized activations, so its logits differ from a float32
model's even before any edit. The check: llama.cpp on the edited GGUF sits as close to the runtime
intervention (transformers, float32, on the dequantized source) as llama.cpp on the source sits to the
unedited dequantized model, while the edit itself moves the logits far more than that.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from hedit.edit.gguf import edit_gguf
from hedit.engine.intervention import scale_neurons
from hedit.model.builtin import BUILTINS, gguf_path
from hedit.neurons import ModelInfo, Neuron, NeuronSet

from conftest import LLAMA_PYTHON
from conftest import llama_logits as llama

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def llama_python():
    if LLAMA_PYTHON is None:
        pytest.skip(
            "no llama.cpp environment (HEDIT_LLAMA_PYTHON or .venv-llama); `make llama-env` builds it (~10 min)"
        )
    return os.path.abspath(LLAMA_PYTHON)


def llama_logits(python, models, ids, tmp_path):
    return [x.astype(np.float32) for x in llama(models, ids, tmp_path, python)]


CASES = {  # model: (model_type, layers, intermediate size, token ids of a short prompt)
    "smollm2-135m-instruct": ("llama", 30, 1536, [1, 504, 3458, 282, 4649, 314, 253, 1789, 30, 198]),
    "gemma3-270m": ("gemma3_text", 18, 2048, [2, 818, 5279, 529, 7001, 563, 236743, 110, 3921, 563]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_edited_ggufs_in_llama_cpp_follow_the_intervention(llama_python, tmp_path, name):
    from transformers import AutoModelForCausalLM

    model_type, layers, inter, ids = CASES[name]
    src = gguf_path(BUILTINS[name])
    rng = np.random.default_rng(0)
    ns = NeuronSet(
        ModelInfo(model_type, layers, inter),
        [Neuron(la, int(j)) for la in range(layers) for j in rng.choice(inter, 24, replace=False)],
    )
    up = edit_gguf(src, ns, tmp_path / "up.gguf", 0.0, progress=False, target="up")
    down = edit_gguf(src, ns, tmp_path / "down.gguf", 0.0, progress=False, target="down")
    base = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32).eval()
    with torch.no_grad():
        plain = base(torch.tensor([ids])).logits[0].numpy()
        with scale_neurons(base, ns.plan(0.0)):
            edited = base(torch.tensor([ids])).logits[0].numpy()
    l_src, l_up, l_down = llama_logits(llama_python, [src, tmp_path / "up.gguf", tmp_path / "down.gguf"], ids, tmp_path)
    noise = np.abs(l_src - plain).max()
    effect = np.abs(edited - plain).max()
    d_up, d_down = np.abs(l_up - edited).max(), np.abs(l_down - edited).max()
    print(
        f"\n{name}: llama.cpp vs float32 unedited {noise:.3f}; edit effect {effect:.3f}; llama.cpp up edit vs "
        f"intervention {d_up:.3f} ({up.changed_bytes} bytes changed, weight error {up.max_abs_error:.2g}); "
        f"down edit {d_down:.3f} (weight error {down.max_abs_error:.2g})",
        file=sys.stderr,
    )
    assert effect > 3 * noise
    assert d_up < 2 * noise + 1e-3
    assert (l_up.argmax(-1) == edited.argmax(-1)).mean() >= (l_src.argmax(-1) == plain.argmax(-1)).mean() - 0.1
