"""`hedit edit` on GGUF files: up_proj rows through their blocks' scales (every block type), down_proj
columns re-rounded under fixed scales; checked with gguf-py's dequantizers and transformers' GGUF loader."""

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T

from hedit.edit.gguf import edit_gguf
from hedit.edit.gguf_blocks import ELEMENT_TYPES, FLOATS, ROW_SCALES, ROW_TYPES
from hedit.errors import HeditError
from hedit.io.atomic import fingerprint
from hedit.model.builtin import BUILTINS, gguf_path
from hedit.neurons import ModelInfo, Neuron, NeuronSet

from builders import INTER, LAYERS, neurons, write_gguf
from conftest import leftovers, run_cli


def tensors(path):
    return {
        t.name: (t.tensor_type, np.asarray(t.data).copy(), int(t.data_offset))
        for t in gguf.GGUFReader(str(path)).tensors
    }


def deq(t):
    qtype, data, _ = t
    return gguf.quants.dequantize(data, qtype).astype(np.float32)


@pytest.mark.parametrize("type_name", ROW_TYPES)
def test_up_rows_are_scaled_through_the_block_scales_of_every_type(tmp_path, type_name):
    """Row j of ffn_up times alpha (dequantized by gguf-py); only scale bytes differ; every other row, tensor
    and header byte is identical to the source."""
    qtype = T[type_name]
    src = write_gguf(tmp_path / "m.gguf", qtype)
    before = src.read_bytes()
    rows = [(0, 3), (0, 40), (1, 63)]
    alpha = 0.0 if type_name in ("MXFP4", *FLOATS) else 0.5  # exact: 0, and powers of two for f16 scales
    r = edit_gguf(src, neurons(rows), tmp_path / "out.gguf", alpha=alpha, progress=False, target="up")
    assert src.read_bytes() == before and r.target == "up" and r.max_abs_error == 0.0
    a, b = tensors(src), tensors(tmp_path / "out.gguf")
    for name in a:
        if "ffn_up" not in name:
            assert np.array_equal(a[name][1], b[name][1]), name
            continue
        layer = int(name.split(".")[1])
        chosen = [j for la, j in rows if la == layer]
        want = deq(a[name])
        want[chosen] *= alpha
        assert np.array_equal(deq(b[name]), want), name
        other = [i for i in range(INTER) if i not in chosen]
        assert np.array_equal(a[name][1][other], b[name][1][other])
    after = (tmp_path / "out.gguf").read_bytes()
    diff = np.flatnonzero(np.frombuffer(before, np.uint8) != np.frombuffer(after, np.uint8))
    if type_name in ROW_SCALES:  # every changed byte is a scale byte of a chosen row
        _, size, offsets = ROW_SCALES[type_name]
        for name, (_, data, off) in a.items():
            if "ffn_up" in name:
                row_bytes = data.reshape(INTER, -1).shape[1] if data.dtype == np.uint8 else None
                inside = diff[(diff >= off) & (diff < off + data.nbytes)] - off
                assert all((pos % row_bytes) % size in {o + k for o in offsets for k in (0, 1)} for pos in inside)
    side = json.loads((tmp_path / "out.gguf.hedit.json").read_text())
    assert side["target"] == "up" and side["changed_bytes"] == r.changed_bytes > 0


@pytest.mark.parametrize("type_name", [t for t in ROW_TYPES if t != "MXFP4"])
def test_any_alpha_is_exact_up_to_the_rounding_of_the_new_scale(tmp_path, type_name):
    src = write_gguf(tmp_path / "m.gguf", T[type_name])
    r = edit_gguf(src, neurons([(0, 7)]), tmp_path / "out.gguf", alpha=0.3, progress=False, target="up")
    a, b = tensors(src), tensors(tmp_path / "out.gguf")
    orig = deq(a["blk.0.ffn_up.weight"])[7]
    err = np.abs(deq(b["blk.0.ffn_up.weight"])[7] - 0.3 * orig).max()
    assert err == pytest.approx(r.max_abs_error)
    rounding = 2**-7 if type_name == "BF16" else 2**-10  # one rounding of a bf16 value, else of an f16
    assert err <= np.abs(orig).max() * 0.3 * rounding


def test_mxfp4_takes_powers_of_two_and_refuses_other_alphas(tmp_path):
    src = write_gguf(tmp_path / "m.gguf", T.MXFP4)
    r = edit_gguf(
        src, neurons([(0, 7)]), tmp_path / "a.gguf", alpha=-4.0, allow_negative=True, progress=False, target="up"
    )
    a, b = tensors(src), tensors(tmp_path / "a.gguf")
    assert r.max_abs_error == 0.0
    assert np.array_equal(deq(b["blk.0.ffn_up.weight"])[7], -4.0 * deq(a["blk.0.ffn_up.weight"])[7])
    with pytest.raises(HeditError, match="MXFP4 scales are powers of two"):
        edit_gguf(src, neurons([(0, 7)]), tmp_path / "b.gguf", alpha=0.3, progress=False, target="up")
    assert not (tmp_path / "b.gguf").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("type_name", ELEMENT_TYPES)
def test_down_columns_are_re_rounded_under_the_blocks_own_scales(tmp_path, type_name):
    qtype = T[type_name]
    src = write_gguf(tmp_path / "m.gguf", T.F32, down_type=qtype)
    inter = INTER if type_name in FLOATS else 256  # block types: one 256-value block per ffn_down row
    cols = [5, 40] if type_name in FLOATS else [5, 40, 200]
    r = edit_gguf(
        src,
        neurons([(1, c) for c in cols], inter=inter),
        tmp_path / "out.gguf",
        alpha=0.0,
        progress=False,
        target="down",
    )
    a, b = tensors(src), tensors(tmp_path / "out.gguf")
    assert np.array_equal(a["blk.0.ffn_down.weight"][1], b["blk.0.ffn_down.weight"][1])
    old, new = deq(a["blk.1.ffn_down.weight"]), deq(b["blk.1.ffn_down.weight"])
    keep = [c for c in range(old.shape[1]) if c not in cols]
    assert np.array_equal(old[:, keep], new[:, keep])
    err = np.abs(new[:, cols]).max()
    assert err == pytest.approx(r.max_abs_error, abs=1e-7)
    if type_name in FLOATS:
        assert err == 0.0
    elif type_name not in ("Q4_1", "Q5_1", "Q4_K", "Q5_K"):  # symmetric types: zero is on the grid
        assert err == 0.0
    else:  # affine types: the nearest level to 0 under the block's offset, within one step
        assert 0 <= err <= np.abs(old).max()


def test_mxfp4_down_columns_take_the_alphas_e2m1_holds(tmp_path):
    """MXFP4 (gpt-oss's experts in its GGUFs): a down column is one FP4 code per row under a scale shared
    with 31 others, so an alpha is applied to the codes themselves: -1 always maps every code, 1.5 maps
    0.5 to 0.75, which E2M1 lacks: refused, nothing written."""
    src = write_gguf(tmp_path / "m.gguf", T.F32, down_type=T.MXFP4)
    cols = [(1, c) for c in (5, 16, 40, 200)]  # low and high nibbles
    r = edit_gguf(src, neurons(cols, inter=256), tmp_path / "neg.gguf", -1.0, allow_negative=True, target="down")
    old, new = deq(tensors(src)["blk.1.ffn_down.weight"]), deq(tensors(tmp_path / "neg.gguf")["blk.1.ffn_down.weight"])
    want = old.copy()
    want[:, [c for _, c in cols]] *= -1
    assert np.array_equal(new, want) and r.max_abs_error == 0.0 and np.abs(old[:, 5]).max() > 0
    with pytest.raises(HeditError, match=r"ffn_down is MXFP4: alpha 1.5 takes an FP4 value .* E2M1 cannot hold"):
        edit_gguf(src, neurons(cols, inter=256), tmp_path / "o.gguf", alpha=1.5, progress=False, target="down")
    assert not (tmp_path / "o.gguf").exists()


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K"])
def test_down_values_that_would_clip_are_refused_and_point_to_the_up_target(tmp_path, type_name):
    """Alpha 3 (the amplifying end of the paper's range) pushes re-rounded values past their blocks'
    fixed ranges: refused (the measured error would be steps, not half a step), nothing written, and
    the up route holds the same alpha exactly."""
    src = write_gguf(tmp_path / "m.gguf", T[type_name], down_type=T[type_name])
    cols = [(1, c) for c in range(0, 256, 3)]
    with pytest.raises(HeditError, match=r"values clip at alpha 3 .* --target up .* holds this alpha"):
        edit_gguf(src, neurons(cols, inter=256), tmp_path / "o.gguf", alpha=3.0, progress=False, target="down")
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.gguf").exists()
    r = edit_gguf(src, neurons(cols, inter=256), tmp_path / "up.gguf", alpha=2.0, progress=False, target="up")
    assert r.max_abs_error == 0.0  # a power of two through f16 scales: exact


def test_row_scales_that_cannot_hold_alpha_are_refused(tmp_path):
    """An alpha whose new f16 scales underflow (1e-6 times scales of 1e-3) is refused with the bound named."""
    src = write_gguf(tmp_path / "m.gguf", T.Q4_0)
    with pytest.raises(HeditError, match="new f16 block scales cannot hold alpha 1e-06"):
        edit_gguf(src, neurons([(0, 3)]), tmp_path / "o.gguf", alpha=1e-6, progress=False, target="up")
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.gguf").exists()


def test_types_without_per_element_integers_point_to_the_up_target(tmp_path):
    src = write_gguf(tmp_path / "m.gguf", T.F32, down_type=T.IQ4_XS)
    with pytest.raises(HeditError, match="ffn_down is IQ4_XS, whose values hedit cannot re-round one by one"):
        edit_gguf(src, neurons([(0, 1)], inter=256), tmp_path / "o.gguf", 0.0, progress=False, target="down")
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.gguf").exists()


def test_auto_target_and_a_folder_output_with_a_card(tmp_path):
    src = write_gguf(tmp_path / "m.gguf", T.Q4_K, down_type=T.Q4_K)
    r = edit_gguf(src, neurons([(0, 3)], inter=256), tmp_path / "pushable", alpha=0.0, progress=False)
    assert r.target == "up"  # block-quantized: the exact route
    assert sorted(p.name for p in (tmp_path / "pushable").iterdir()) == ["README.md", "hedit.json", "m.gguf"]
    card = (tmp_path / "pushable" / "README.md").read_text()
    assert "library_name: gguf" in card and "llama-cli -m m.gguf" in card and "row *j* of each edited" in card
    info = json.loads((tmp_path / "pushable" / "hedit.json").read_text())
    assert info["kind"] == "gguf" and info["target"] == "up" and info["source"]["name"] == "m.gguf"
    f32 = write_gguf(tmp_path / "f.gguf", T.F32)
    assert edit_gguf(f32, neurons([(0, 3)]), tmp_path / "f-out.gguf", 0.0, progress=False).target == "down"


def test_phi3_fused_up_rows_follow_the_gate_rows(tmp_path):
    src = write_gguf(tmp_path / "p.gguf", T.Q8_0, arch="phi3", fused=True)
    edit_gguf(src, neurons([(0, 3)], model_type="phi3"), tmp_path / "o.gguf", 0.0, progress=False, target="up")
    a, b = tensors(src), tensors(tmp_path / "o.gguf")
    old, new = deq(a["blk.0.ffn_up.weight"]), deq(b["blk.0.ffn_up.weight"])
    assert np.array_equal(new[INTER + 3], 0 * old[INTER + 3]) and np.array_equal(new[3], old[3])


def test_overwrite_replaces_hedit_s_own_gguf_only_while_its_sidecar_fingerprints_it(tmp_path):
    """A GGUF hedit wrote is replaced by --overwrite (its sidecar records the file's fingerprint); once
    its bytes change, or the sidecar is copied beside another file, it is the user's and is kept."""
    src = write_gguf(tmp_path / "m.gguf", T.F32)
    out = tmp_path / "o.gguf"
    edit_gguf(src, neurons([(0, 1)]), out, 0.0, progress=False)
    sidecar = json.loads(Path(f"{out}.hedit.json").read_text())
    assert sidecar["output"] == fingerprint(out) and sidecar["output"]["size"] == out.stat().st_size
    edit_gguf(src, neurons([(0, 2)]), out, 0.5, overwrite=True, progress=False)  # hedit's own: replaced
    assert json.loads(Path(f"{out}.hedit.json").read_text())["output"] == fingerprint(out)
    raw = bytearray(out.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # now the user's edit of it (changed in the middle: size and ends kept)
    raw[-1] ^= 0xFF
    out.write_bytes(bytes(raw))
    with pytest.raises(HeditError, match="not a hedit output"):
        edit_gguf(src, neurons([(0, 1)]), out, 0.0, overwrite=True, progress=False)
    assert out.read_bytes() == bytes(raw)
    other = tmp_path / "other.gguf"
    other.write_bytes(src.read_bytes())
    Path(f"{other}.hedit.json").write_text(Path(f"{out}.hedit.json").read_text())  # a sidecar copied beside it
    with pytest.raises(HeditError, match="not a hedit output"):
        edit_gguf(src, neurons([(0, 1)]), other, 0.0, overwrite=True, progress=False)
    assert other.read_bytes() == src.read_bytes()


def test_bad_inputs(tmp_path):
    src = write_gguf(tmp_path / "m.gguf", T.F32)
    ns = neurons([(0, 1)])
    with pytest.raises(HeditError, match="neurons file was made for another model"):
        edit_gguf(src, neurons([(0, 1)], inter=128), tmp_path / "o.gguf", 0.0, progress=False)
    (tmp_path / "o.gguf").write_bytes(b"x")
    with pytest.raises(HeditError, match="already exists"):
        edit_gguf(src, ns, tmp_path / "o.gguf", 0.0, progress=False)
    with pytest.raises(HeditError, match="not a hedit output"):
        edit_gguf(src, ns, tmp_path / "o.gguf", 0.0, overwrite=True, progress=False)
    with pytest.raises(HeditError, match="is the source"):
        edit_gguf(src, ns, src, 0.0, overwrite=True, progress=False)
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(HeditError, match="not a readable GGUF"):
        edit_gguf(tmp_path / "bad.gguf", ns, tmp_path / "p.gguf", 0.0, progress=False)
    with pytest.raises(HeditError, match="--target must be one of"):
        edit_gguf(src, ns, tmp_path / "q.gguf", 0.0, progress=False, target="sideways")
    r = run_cli("edit", str(tmp_path / "missing.gguf"), "--neurons", str(tmp_path / "n.json"), "--out", "x.gguf")
    assert r.exit_code == 1


def test_alpha_1_leaves_the_bytes_alone(tmp_path):
    src = write_gguf(tmp_path / "m.gguf", T.Q4_1)
    ns = NeuronSet(ModelInfo("llama", LAYERS, INTER), [Neuron(0, 3, 1.0), Neuron(1, 5, 0.0)])
    r = edit_gguf(src, ns, tmp_path / "out.gguf", progress=False, target="up")
    assert [t.name for t in r.tensors] == ["blk.1.ffn_up.weight"]
    a, b = tensors(src), tensors(tmp_path / "out.gguf")
    assert np.array_equal(a["blk.0.ffn_up.weight"][1], b["blk.0.ffn_up.weight"][1])


SMOL = dict(model_type="llama", layers=30, inter=1536)


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


@pytest.fixture(scope="module")
def smol():
    """The embedded GGUF and its model as transformers' GGUF loader dequantizes it (float32), loaded once."""
    from transformers import AutoModelForCausalLM

    src = gguf_path(BUILTINS["smollm2-135m-instruct"])
    return src, AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32).eval()


@pytest.mark.parametrize("target", ["up", "down"])
def test_embedded_q4_1_model_through_transformers_gguf_loader(tmp_path, smol, target):
    """The embedded SmolLM2 Q4_1 GGUF, edited at alpha 0 and loaded through transformers' GGUF support,
    against the runtime intervention on the dequantized source: the up target is exact (logits equal),
    the down target within its re-rounding error (printed for the README)."""
    from transformers import AutoModelForCausalLM

    from hedit.engine.intervention import scale_neurons

    src, base = smol
    ns = neurons([(0, 100), (0, 1000), (7, 5), (29, 1535)], **SMOL)
    ns_file = tmp_path / "n.json"
    ns.save(ns_file)
    r = run_cli(
        "edit",
        str(src),
        "--neurons",
        str(ns_file),
        "--alpha",
        "0",
        "--out",
        str(tmp_path / "e.gguf"),
        "--target",
        target,
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "e.gguf.hedit.json").read_text())
    ids = [1, 504, 3458, 282, 4649, 314, 253, 1789, 30, 198, 504, 3458]
    with scale_neurons(base, ns.plan(0.0)):
        want = _logits(base, ids)
    effect = (want - _logits(base, ids)).abs().max().item()
    edited = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="e.gguf", dtype=torch.float32).eval()
    diff = (_logits(edited, ids) - want).abs().max().item()
    print(
        f"\n{target}: max abs logit diff {diff:.3g} vs the intervention (edit effect {effect:.3g}); "
        f"max abs weight error {report['max_abs_error']:.3g}; {report['changed_bytes']} bytes changed"
    )
    assert effect > 1e-2
    if target == "up":
        assert report["max_abs_error"] == 0.0 and diff < 1e-4
    else:
        assert 0 < report["max_abs_error"] < 0.1 and diff < effect
