"""A mixture of experts in GGUF (llama.cpp's stacked ffn_*_exps and ffn_*_shexp tensors, quantized with
gguf-py): --target up scales the chosen experts' rows through their block scales; every other byte stays."""

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from hedit.edit.writers import write_artifact
from hedit.errors import HeditError
from hedit.neurons import ModelInfo, Neuron, NeuronSet

from builders import HIDDEN, INTER, LAYERS, MOE_EXPERTS, write_moe_gguf


def tensor(path, name):
    t = next(t for t in gguf.GGUFReader(str(path)).tensors if t.name == name)
    return t.tensor_type, np.asarray(t.data).copy()


def rows_of(path, name):
    qtype, data = tensor(path, name)
    return gguf.quants.dequantize(data, qtype).astype(np.float32).reshape(-1, HIDDEN)


@pytest.mark.parametrize("up_type", [T.Q8_0, T.Q4_K, T.F16])
def test_expert_up_rows_are_scaled_and_nothing_else_changes(tmp_path, up_type):
    src = write_moe_gguf(tmp_path / "m.gguf", up_type)
    picks = [(0, 1, 5, 0.0), (0, 3, INTER - 1, 2.0), (1, 2, 7, 0.5), (1, "shared", 9, 0.0)]
    ns = NeuronSet(
        ModelInfo("qwen2_moe", LAYERS, INTER, num_experts=MOE_EXPERTS),
        [Neuron(layer, j, alpha=a, expert=e) for layer, e, j, a in picks],
    )
    r = write_artifact(src, ns, tmp_path / "out.gguf", progress=False)
    assert r.target == "up" and {t.name for t in r.tensors} == {
        "blk.0.ffn_up_exps.weight",
        "blk.1.ffn_up_exps.weight",
        "blk.1.ffn_up_shexp.weight",
    }
    out = tmp_path / "out.gguf"
    for layer in range(LAYERS):
        for name in (f"blk.{layer}.ffn_up_exps.weight", f"blk.{layer}.ffn_up_shexp.weight"):
            old, new = rows_of(src, name), rows_of(out, name)
            want = old.copy()
            for la, e, j, a in picks:
                if la != layer or ("shexp" in name) != (e == "shared"):
                    continue
                row = j if e == "shared" else e * INTER + j  # expert e's rows follow expert e-1's
                want[row] *= a
            assert np.allclose(new, want, rtol=2**-9, atol=1e-6), name
            assert (np.abs(new - old).max() > 0) == (np.abs(want - old).max() > 0)  # moved where chosen
    src_bytes, out_bytes = src.read_bytes(), out.read_bytes()
    changed = np.flatnonzero(np.frombuffer(src_bytes, np.uint8) != np.frombuffer(out_bytes, np.uint8))
    assert len(src_bytes) == len(out_bytes) and 0 < len(changed) <= sum(t.changed_bytes for t in r.tensors)
    # the structure check recomputes every patch and finds the rest of the file identical
    from hedit.check.verify import verify_artifact
    from hedit.config import VerifyConfig

    assert verify_artifact(src, ns, edited=out, cfg=VerifyConfig(runtime="structure")).passed


def test_deepseek2_dense_layers_and_bad_input(tmp_path):
    src = write_moe_gguf(tmp_path / "d.gguf", T.Q8_0, arch="deepseek2", dense_first=1)
    info = ModelInfo("deepseek_v3", LAYERS + 1, INTER, num_experts=MOE_EXPERTS)
    ns = NeuronSet(info, [Neuron(0, 3), Neuron(1, 4, expert=2)], alpha=0.0)
    r = write_artifact(src, ns, tmp_path / "ok.gguf", progress=False)
    assert {t.name for t in r.tensors} == {"blk.0.ffn_up.weight", "blk.1.ffn_up_exps.weight"}
    assert np.all(rows_of(tmp_path / "ok.gguf", "blk.1.ffn_up_exps.weight")[2 * INTER + 4] == 0)
    for neurons, msg in [
        ([Neuron(1, 4, expert=MOE_EXPERTS)], f"expert {MOE_EXPERTS} in layer 1 out of range"),
        ([Neuron(1, 4, expert="shared")], "layer 1 has no shared expert"),
        ([Neuron(0, 4, expert=1)], "layer 0 is a dense layer"),
    ]:
        with pytest.raises(HeditError, match=msg):
            write_artifact(src, NeuronSet(info, neurons, alpha=0.0), tmp_path / "bad.gguf", progress=False)
        assert not (tmp_path / "bad.gguf").exists()
    # --target down: column j of expert e's own rows of ffn_down_exps (F32 here: exact), nothing else
    r = write_artifact(src, ns, tmp_path / "down.gguf", target="down", progress=False)
    assert r.target == "down" and {t.name for t in r.tensors} == {"blk.0.ffn_down.weight", "blk.1.ffn_down_exps.weight"}
    old, new = (tensor(p, "blk.1.ffn_down_exps.weight")[1] for p in (src, tmp_path / "down.gguf"))  # [E, hidden, I]
    want = old.copy()
    want[2, :, 4] = 0
    assert np.array_equal(new, want) and old[2, :, 4].any()
    from hedit.check.verify import verify_artifact
    from hedit.config import VerifyConfig

    assert verify_artifact(src, ns, edited=tmp_path / "down.gguf", cfg=VerifyConfig(runtime="structure")).passed


def test_mixtral_as_llama_cpp_writes_it(tmp_path):
    """llama.cpp writes Mixtral as general.architecture "llama" with an expert count: the mixtral entry."""
    src = write_moe_gguf(tmp_path / "x.gguf", T.Q4_0, arch="llama")
    ns = NeuronSet(ModelInfo("mixtral", LAYERS, INTER, num_experts=MOE_EXPERTS), [Neuron(1, 6, expert=3)], alpha=0.0)
    r = write_artifact(src, ns, tmp_path / "out.gguf", progress=False)
    assert [t.name for t in r.tensors] == ["blk.1.ffn_up_exps.weight"]
    rows = rows_of(tmp_path / "out.gguf", "blk.1.ffn_up_exps.weight")
    assert np.all(rows[3 * INTER + 6] == 0) and np.array_equal(
        np.delete(rows, 3 * INTER + 6, axis=0),
        np.delete(rows_of(src, "blk.1.ffn_up_exps.weight"), 3 * INTER + 6, axis=0),
    )
    dense = NeuronSet(ModelInfo("llama", LAYERS, INTER), [Neuron(1, 6)], alpha=0.0)
    with pytest.raises(HeditError, match="made for another model: llama"):
        write_artifact(src, dense, tmp_path / "bad.gguf", progress=False)
