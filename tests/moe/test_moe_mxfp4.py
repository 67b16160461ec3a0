"""gpt-oss's MXFP4 experts (the layout its released checkpoints use): `hedit edit` writes the edit into
the FP4 codes of the chosen ``down_proj`` columns, which transformers loads (it dequantizes MXFP4 on CPU)
exactly as the runtime intervention on the source; alphas E2M1 cannot hold are refused with nothing
written, and ``up`` is refused with gpt-oss's reason."""

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from hedit.check.verify import verify_artifact
from hedit.config import VerifyConfig
from hedit.edit.writers import write_artifact
from hedit.errors import HeditError
from hedit.io.quant import dequant_mxfp4, fp4_scaled_codes, fp4_values
from hedit.model.tiny import save_tiny_model
from hedit.neurons import ModelInfo, Neuron, NeuronSet

from builders import mxfp4_gpt_oss

DOWN = "model.layers.{}.mlp.experts.down_proj"
PICKS = [(0, 2, 5), (1, 7, 31), (2, 0, 0), (2, 0, 12)]  # (layer, expert, neuron): low and high nibbles


@pytest.fixture(scope="module")
def mxfp4(tmp_path_factory):
    root = tmp_path_factory.mktemp("mxfp4")
    src = save_tiny_model(root / "float", "gpt_oss", stacked=True, seed=3)
    return mxfp4_gpt_oss(src, root / "mxfp4")


def neurons():
    return NeuronSet(ModelInfo("gpt_oss", 3, 32, num_experts=8), [Neuron(la, j, expert=e) for la, e, j in PICKS])


def test_the_dequantizer_is_what_transformers_loads(mxfp4):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(mxfp4), dtype=torch.float32)
    sd = load_file(mxfp4 / "model.safetensors")
    for layer in range(3):
        for proj in ("down_proj", "gate_up_proj"):
            name = f"model.layers.{layer}.mlp.experts.{proj}"
            ours = np.swapaxes(dequant_mxfp4(sd[name + "_blocks"], sd[name + "_scales"]), 1, 2)
            theirs = getattr(model.model.layers[layer].mlp.experts, proj).detach().numpy()
            assert np.array_equal(ours, theirs), name


def test_fp4_code_maps():
    vals = fp4_values()
    held = {float(v) for v in vals}
    for alpha in (0.0, 0.5, 2.0, -1.0, 1.5, 3.0):
        to = fp4_scaled_codes(alpha)
        for c, v in enumerate(vals):
            assert (to[c] >= 0) == (float(v) * alpha in held), (alpha, c)
            if to[c] >= 0:
                assert float(vals[to[c]]) == float(v) * alpha
    assert fp4_scaled_codes(2.0)[6] == -1 and fp4_scaled_codes(0.5)[1] == -1  # 4 -> 8 and 0.5 -> 0.25


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_down_columns_carry_the_edit_in_their_codes(mxfp4, tmp_path, alpha):
    out = tmp_path / "edited"
    r = write_artifact(mxfp4, neurons(), out, alpha=alpha, allow_negative=alpha < 0, progress=False)
    assert (r.format, r.target, r.max_abs_error) == ("quantized", "down", 0.0)
    src, ed = load_file(mxfp4 / "model.safetensors"), load_file(out / "model.safetensors")
    for layer in range(3):
        name = DOWN.format(layer)
        want = dequant_mxfp4(src[name + "_blocks"], src[name + "_scales"])
        for la, e, j in PICKS:
            if la == layer:
                assert np.abs(want[e, :, j]).max() > 0
                want[e, :, j] *= alpha
        assert np.array_equal(dequant_mxfp4(ed[name + "_blocks"], ed[name + "_scales"]), want), name
    changed = {k for k in src if not np.array_equal(src[k], ed[k])}
    assert changed == {DOWN.format(la) + "_blocks" for la in range(3)}  # the E8M0 scales untouched
    structure = verify_artifact(
        mxfp4, neurons(), alpha, edited=out, allow_negative=alpha < 0, cfg=VerifyConfig(runtime="structure")
    )
    assert structure.passed, structure.summary()
    res = verify_artifact(mxfp4, neurons(), alpha, edited=out, allow_negative=alpha < 0)
    assert res.passed and res.effect > 0.05, res.summary()


def test_what_mxfp4_cannot_hold_is_refused_before_writing(mxfp4, tmp_path):
    with pytest.raises(HeditError, match=r"alpha 2 takes an FP4 value -?[46] to -?(8|12), which E2M1 cannot hold"):
        write_artifact(mxfp4, neurons(), tmp_path / "a2", alpha=2.0, progress=False)
    with pytest.raises(HeditError, match="SwiGLU clamps the up projection and adds 1"):
        write_artifact(mxfp4, neurons(), tmp_path / "up", alpha=0.0, target="up", progress=False)
    with pytest.raises(HeditError, match=r"is quantized \(mxfp4\); it is edited with the quantized writer"):
        write_artifact(mxfp4, neurons(), tmp_path / "ck", "checkpoint", alpha=0.0, progress=False)
    with pytest.raises(HeditError, match=r"is quantized \(mxfp4\); hedit builds adapters from unquantized"):
        write_artifact(mxfp4, neurons(), tmp_path / "lo", "lora", alpha=0.0, progress=False)
    assert list(tmp_path.iterdir()) == []
