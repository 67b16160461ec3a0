"""`hedit edit` on GGUF files: exact for F32/F16/BF16, block-local requantization otherwise."""

import json

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T

from hedit.edit.checkpoint import edit_checkpoint
from hedit.errors import HeditError
from hedit.edit.gguf import edit_gguf
from hedit.model.builtin import BUILTINS, gguf_path, resolve_model
from hedit.edit.neurons import ModelInfo, Neuron, NeuronSet

from conftest import leftovers, run_cli

HIDDEN, INTER, LAYERS = 8, 64, 2


def write_gguf(path, qtype, seed=0):
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(INTER)
    w.add_embedding_length(HIDDEN)
    w.add_string("general.name", "tiny")
    w.add_tensor("token_embd.weight", rng.standard_normal((16, HIDDEN)).astype(np.float32))
    originals = {}
    for layer in range(LAYERS):
        x = rng.standard_normal((HIDDEN, INTER)).astype(np.float32)
        data = gguf.quants.quantize(x, qtype)
        originals[layer] = data
        if qtype in (T.F32, T.F16):
            w.add_tensor(f"blk.{layer}.ffn_down.weight", data)
        else:
            w.add_tensor(f"blk.{layer}.ffn_down.weight", data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def neurons(pairs, alpha=None, model_type="llama", layers=LAYERS, inter=INTER):
    return NeuronSet(ModelInfo(model_type, layers, inter), [Neuron(l, j, alpha) for l, j in pairs])


def tensors(path):
    return {t.name: (t.tensor_type, np.asarray(t.data).copy(), int(t.data_offset))
            for t in gguf.GGUFReader(str(path)).tensors}


@pytest.mark.parametrize("qtype", [T.F32, T.F16, T.BF16])
def test_float_types_are_scaled_exactly(tmp_path, qtype):
    src = write_gguf(tmp_path / "m.gguf", qtype)
    before = src.read_bytes()
    r = edit_gguf(src, neurons([(0, 3), (0, 40), (1, 63)]), tmp_path / "out.gguf", alpha=0.5, progress=False)
    assert src.read_bytes() == before and r.max_abs_error == 0.0 and r.requantized == []
    a, b = tensors(src), tensors(tmp_path / "out.gguf")
    assert a["token_embd.weight"][1].tobytes() == b["token_embd.weight"][1].tobytes()
    for layer, cols in ((0, [3, 40]), (1, [63])):
        orig = gguf.quants.dequantize(a[f"blk.{layer}.ffn_down.weight"][1], qtype)
        new = gguf.quants.dequantize(b[f"blk.{layer}.ffn_down.weight"][1], qtype)
        want = orig.copy()
        want[:, cols] = gguf.quants.dequantize(gguf.quants.quantize(orig[:, cols] * 0.5, qtype), qtype)
        assert np.array_equal(new, want)
    # the header (metadata, tensor infos) is byte-identical: every tensor keeps its offset
    first = min(off for _, _, off in a.values())
    assert (tmp_path / "out.gguf").read_bytes()[:first] == before[:first]


@pytest.mark.parametrize("qtype", [T.Q4_1, T.Q8_0, T.Q5_0])
def test_quantized_types_requantize_only_the_touched_blocks(tmp_path, qtype):
    src = write_gguf(tmp_path / "m.gguf", qtype)
    cols = [5, 40]  # blocks 0 and 1 of 32
    r = edit_gguf(src, neurons([(1, c) for c in cols]), tmp_path / "out.gguf", alpha=0.0, progress=False)
    assert r.requantized == [qtype.name] and r.tensors[0].requantized_blocks == 2
    a, b = tensors(src), tensors(tmp_path / "out.gguf")
    assert np.array_equal(a["blk.0.ffn_down.weight"][1], b["blk.0.ffn_down.weight"][1])
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw_a, raw_b = a["blk.1.ffn_down.weight"][1], b["blk.1.ffn_down.weight"][1]
    changed = {i for i in range(INTER // block) if not np.array_equal(raw_a[:, i * size:(i + 1) * size],
                                                                        raw_b[:, i * size:(i + 1) * size])}
    assert changed == {0, 1}
    ideal = gguf.quants.dequantize(raw_a, qtype)
    ideal[:, cols] = 0.0
    got = gguf.quants.dequantize(raw_b, qtype)
    assert np.abs(got - ideal).max() == pytest.approx(r.max_abs_error) and 0 <= r.max_abs_error < 0.5
    side = json.loads((tmp_path / "out.gguf.hedit.json").read_text())
    assert side["max_abs_requantization_error"] == r.max_abs_error and side["tensors"][0]["type"] == qtype.name


def write_raw_gguf(path, qtype, raw):
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_feed_forward_length(512)
    w.add_tensor("blk.0.ffn_down.weight", raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("qtype", [T.Q4_K, T.Q5_K, T.Q6_K])
def test_k_quants_requantize_the_touched_super_blocks(tmp_path, qtype):
    """hedit's K-quant quantizers write blocks gguf-py reads back; only the 256-value super-block
    holding the neuron changes, and the error is about one quantization step."""
    from hedit.edit.gguf_quants import quantize_k

    x = np.random.default_rng(1).standard_normal((HIDDEN, 512)).astype(np.float32) * 0.05
    raw = quantize_k(x, qtype.name)
    assert np.abs(gguf.quants.dequantize(raw, qtype) - x).max() < 0.2 * np.abs(x).max()
    src = write_raw_gguf(tmp_path / "k.gguf", qtype, raw)
    r = edit_gguf(src, neurons([(0, 300)], layers=1, inter=512), tmp_path / "out.gguf", 0.0, progress=False)
    new = tensors(tmp_path / "out.gguf")["blk.0.ffn_down.weight"][1]
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    assert np.array_equal(new[:, :size], raw[:, :size]) and not np.array_equal(new[:, size:], raw[:, size:])
    ideal = gguf.quants.dequantize(raw, qtype)
    ideal[:, 300] = 0.0
    assert np.abs(gguf.quants.dequantize(new, qtype) - ideal).max() == pytest.approx(r.max_abs_error)
    assert r.max_abs_error < 0.2 * np.abs(x).max() and r.requantized == [qtype.name]


def test_other_quant_types_are_refused_and_nothing_is_left(tmp_path):
    src = write_raw_gguf(tmp_path / "k.gguf", T.Q3_K, np.zeros((HIDDEN, 2 * 110), dtype=np.uint8))
    with pytest.raises(HeditError, match="ffn_down is Q3_K, which hedit cannot quantize again"):
        edit_gguf(src, neurons([(0, 1)], layers=1, inter=512), tmp_path / "out.gguf", 0.0, progress=False)
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.gguf").exists()


def test_bad_inputs(tmp_path):
    src = write_gguf(tmp_path / "m.gguf", T.F32)
    ns = neurons([(0, 1)])
    with pytest.raises(HeditError, match="needs a .gguf output"):
        edit_gguf(src, ns, tmp_path / "out", 0.0, progress=False)
    with pytest.raises(HeditError, match="expects|does not match|intermediate|layers"):
        edit_gguf(src, neurons([(0, 1)], inter=128), tmp_path / "o.gguf", 0.0, progress=False)
    (tmp_path / "o.gguf").write_bytes(b"x")
    with pytest.raises(HeditError, match="already exists"):
        edit_gguf(src, ns, tmp_path / "o.gguf", 0.0, progress=False)
    with pytest.raises(HeditError, match="is the source"):
        edit_gguf(src, ns, src, 0.0, overwrite=True, progress=False)
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(HeditError, match="not a readable GGUF"):
        edit_gguf(tmp_path / "bad.gguf", ns, tmp_path / "p.gguf", 0.0, progress=False)
    r = run_cli("edit", str(tmp_path / "missing.gguf"), "--neurons", str(tmp_path / "n.json"), "--out", "x.gguf")
    assert r.exit_code == 1


def test_embedded_q4_1_model_edit_loads_in_transformers_like_the_safetensors_edit(tmp_path):
    """The embedded SmolLM2 Q4_1 GGUF, edited at alpha 0, loaded through transformers' GGUF support,
    equals the safetensors edit of the same (dequantized) model up to the reported requantization
    error, in the edited blocks only; every other weight is identical."""
    from transformers import AutoModelForCausalLM

    src = gguf_path(BUILTINS["smollm2-135m-instruct"])
    ns = neurons([(0, 100), (0, 1000), (7, 5), (29, 1535)], model_type="llama", layers=30, inter=1536)
    ns_file = tmp_path / "n.json"
    ns.save(ns_file)
    r = run_cli("edit", str(src), "--neurons", str(ns_file), "--alpha", "0", "--out", str(tmp_path / "e.gguf"),
                "--quiet")
    assert r.exit_code == 0, r.output
    assert "requantized the edited blocks of 3 ffn_down tensors to Q4_1" in r.output
    report = json.loads((tmp_path / "e.gguf.hedit.json").read_text())
    err = report["max_abs_requantization_error"]
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="e.gguf", dtype=torch.float32)
    ref_dir = edit_checkpoint(resolve_model("smollm2-135m-instruct"), ns_file, tmp_path / "st", alpha=0.0,
                              progress=False)
    ref = AutoModelForCausalLM.from_pretrained(str(ref_dir), dtype=torch.float32)
    got, want = dict(loaded.named_parameters()), dict(ref.named_parameters())
    touched = {0: {100 // 32, 1000 // 32}, 7: {0}, 29: {1535 // 32}}
    for name, p in want.items():
        q = got[name]
        if "mlp.down_proj" not in name or int(name.split(".")[2]) not in touched:
            assert torch.equal(p, q), name
            continue
        layer = int(name.split(".")[2])
        diff = (p - q).abs()
        assert diff.max().item() <= err + 1e-6
        for b in range(1536 // 32):
            if b not in touched[layer]:
                assert diff[:, b * 32:(b + 1) * 32].max().item() == 0.0
    assert 0 < err < 0.2


def test_alpha_1_leaves_the_bytes_alone(tmp_path):
    src = write_gguf(tmp_path / "m.gguf", T.Q4_1)
    ns = NeuronSet(ModelInfo("llama", LAYERS, INTER), [Neuron(0, 3, 1.0), Neuron(1, 5, 0.0)])
    r = edit_gguf(src, ns, tmp_path / "out.gguf", progress=False)
    assert [t.name for t in r.tensors] == ["blk.1.ffn_down.weight"]
    a, b = tensors(src), tensors(tmp_path / "out.gguf")
    assert np.array_equal(a["blk.0.ffn_down.weight"][1], b["blk.0.ffn_down.weight"][1])
