"""`export-adapter --format gguf-lora`: a llama.cpp LoRA adapter (GGUF) whose scale S chooses alpha at serve
time (alpha' = 1 + S (alpha - 1)). Checked here against llama.cpp's own loading rules and numerically on the
dequantized weights; against llama.cpp itself where `.venv-llama` exists."""

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from hedit.edit.adapters import export_adapter
from hedit.edit.adapters.gguf_lora import scale_to_alpha
from hedit.errors import HeditError
from hedit.model.tiny import save_tiny_model

from builders import neurons, write_gguf
from conftest import LLAMA_PYTHON, add_tokenizer, llama_logits, neuron_set, run_cli


def read(path):
    r = gguf.GGUFReader(str(path))
    meta = {f.name: f.contents() for f in r.fields.values() if not f.name.startswith("GGUF.")}
    return r, meta, {t.name: t for t in r.tensors}


def dequant(t) -> np.ndarray:
    return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(list(reversed(t.shape.tolist())))


@pytest.mark.parametrize("target", ["down", "up"])
def test_the_adapter_follows_llama_cpps_rules_and_scales_alpha(tmp_path, target):
    src = write_gguf(tmp_path / "m.gguf", T.Q4_1, T.Q8_0)
    inter = 256  # write_gguf's intermediate size with a block-quantized ffn_down
    pairs = [(0, 3), (0, 70), (1, 200)]
    ns = neurons(pairs, inter=inter)
    nf = tmp_path / "n.json"
    ns.save(nf)
    out = export_adapter(src, nf, tmp_path / "a.gguf", "gguf-lora", alpha=0.0, target=target)
    info = json.loads(Path(str(out) + ".hedit.json").read_text())
    assert info["format"] == "gguf-lora" and info["target"] == target
    assert "S=-1 -> 2" in info["scale_to_alpha"] and "S=-2 -> 3" in info["scale_to_alpha"]
    r, meta, tensors = read(out)
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert meta["general.architecture"] == "llama" and meta["adapter.lora.alpha"] == 0.0
    _, _, base = read(src)
    for layer in (0, 1):
        name = f"blk.{layer}.ffn_{target}.weight"
        a, b, w = tensors[name + ".lora_a"], tensors[name + ".lora_b"], base[name]
        # llama.cpp (llama_adapter_lora_init): base ne[0] == a ne[0], base ne[1] == b ne[1], a ne[1] == b ne[0]
        assert a.shape[0] == w.shape[0] and b.shape[1] == w.shape[1] and a.shape[1] == b.shape[0]
        assert a.tensor_type == b.tensor_type == T.F32
        rank = int(a.shape[1])
        assert rank == sum(1 for la, _ in pairs if la == layer)
        full = dequant(w)  # numpy order [out, in]
        delta = dequant(b) @ dequant(a)
        chosen = [j for la, j in pairs if la == layer]
        for s in (1.0, 0.5, -1.0, -2.0):  # what llama.cpp adds at --lora-scaled S (adapter alpha 0: scale S)
            want = full.copy()
            if target == "down":
                want[:, chosen] *= scale_to_alpha(s, 0.0)
            else:
                want[chosen, :] *= scale_to_alpha(s, 0.0)
            assert np.allclose(full + s * delta, want, rtol=0, atol=1e-6 * np.abs(full).max())
        untouched = [j for j in range(inter) if j not in chosen]
        assert not (delta[:, untouched] if target == "down" else delta[untouched, :]).any()


def test_from_a_safetensors_source_and_bad_input(tmp_path):
    src = add_tokenizer(save_tiny_model(tmp_path / "m", "llama"))
    nf = tmp_path / "n.json"
    neuron_set("llama", per_layer=3).save(nf)
    out = export_adapter(src, nf, tmp_path / "ad", "gguf-lora", alpha=0.5)
    r, meta, tensors = read(out / "adapter.gguf")
    assert meta["general.architecture"] == "llama" and (out / "README.md").is_file()
    card = (out / "README.md").read_text()
    assert "--lora-scaled adapter.gguf" in card and "ADAPTER ./adapter.gguf" in card
    from safetensors.numpy import load_file

    w = load_file(str(src / "model.safetensors"))
    ns = neuron_set("llama", per_layer=3)
    for layer, idx in ns.by_layer().items():
        b = tensors[f"blk.{layer}.ffn_down.weight.lora_b"]
        got = dequant(b)
        assert np.allclose(got, -0.5 * w[f"model.layers.{layer}.mlp.down_proj.weight"][:, idx], atol=1e-7)
    # bad input, one line each
    with pytest.raises(HeditError, match="would change nothing"):
        export_adapter(src, nf, tmp_path / "one", "gguf-lora", alpha=1.0)
    olmo = save_tiny_model(tmp_path / "olmo", "olmo2")
    neuron_set("olmo2", per_layer=2).save(tmp_path / "o.json")
    with pytest.raises(HeditError, match="llama.cpp has no LoRA tensor names hedit knows for olmo2"):
        export_adapter(olmo, tmp_path / "o.json", tmp_path / "o", "gguf-lora", alpha=0.0)
    r = run_cli(
        "export-adapter", src, "--neurons", nf, "--format", "gguf-lora", "--alpha", "0", "--out", tmp_path / "c.gguf"
    )
    assert r.exit_code == 0, r.output and (tmp_path / "c.gguf").is_file()


@pytest.mark.skipif(LLAMA_PYTHON is None, reason="no llama.cpp environment (make llama-env)")
def test_llama_cpp_applies_alpha_from_the_scale(tmp_path):
    """The adapter at alpha 0 on the embedded SmolLM2's Q4_1 GGUF (24 neurons a layer), loaded by llama.cpp at
    S = 1, 0.5, -1: its logits against the intervention at alpha' = 0, 0.5, 2 on the dequantized model sit
    as close as llama.cpp's unedited logits sit to the unedited model (its quantized products differ from
    float32 before any edit; `tests/check/test_llama_cpp.py` holds the rewritten GGUFs to the same rule),
    while the edit moves them far more; the opposite scale (another alpha) fails."""
    import torch

    from hedit.engine.intervention import scale_neurons
    from hedit.model.builtin import BUILTINS, DEFAULT_MODEL, gguf_path, resolve_model
    from hedit.model.load import load_model, load_tokenizer

    gg = gguf_path(BUILTINS[DEFAULT_MODEL])
    ns = neuron_set("llama", per_layer=24, num_layers=30, inter=1536)
    ns.model = __import__("dataclasses").replace(ns.model, name_or_path=DEFAULT_MODEL)
    nf = tmp_path / "n.json"
    ns.save(nf)
    ad = export_adapter(gg, nf, tmp_path / "ad.gguf", "gguf-lora", alpha=0.0, target="down")
    path = resolve_model(DEFAULT_MODEL)
    tok, model = load_tokenizer(path), load_model(path)
    ids = tok("The capital of France is")["input_ids"]

    def llama(lora, s):
        return llama_logits([{"path": gg, "lora": lora, "scale": s} if lora else gg], ids, tmp_path)[0]

    with torch.no_grad():
        plain = model(torch.tensor([ids])).logits[0].double().numpy()
    unedited = llama("", 1.0)
    floor = np.abs(unedited - plain).max()  # llama.cpp's quantized products against float32 transformers
    for s in (1.0, 0.5, -1.0):
        plan = {la: [(j, scale_to_alpha(s, 0.0)) for j in idx] for la, idx in ns.by_layer().items()}
        with torch.no_grad(), scale_neurons(model, plan):
            ref = model(torch.tensor([ids])).logits[0].double().numpy()
        got = llama(str(ad), s)
        err, effect = np.abs(got - ref).max(), np.abs(ref - plain).max()
        print(f"S={s:g}: max abs logit diff {err:.2e}, unedited floor {floor:.2e}, edit effect {effect:.3f}")
        assert err < 2 * floor + 1e-3
        assert effect > 3 * floor or s == 0.5  # half the edit moves the logits less
        wrong = llama(str(ad), -s)  # the opposite scale: another alpha
        assert np.abs(wrong - ref).max() > err + 2 * floor


@pytest.mark.parametrize("source", ["gguf", "safetensors"])
def test_verify_structure_checks_every_factor_and_the_scale_metadata(tmp_path, source):
    """`verify --runtime structure` on a gguf-lora adapter passes on the adapter as written and catches a
    wrong alpha, one changed factor value, a changed `adapter.lora.alpha` (llama.cpp would rescale every
    pair by S * alpha / rank), a stray tensor pair and a stray file; other runtimes refuse it in one line."""
    from hedit.check.structure import verify_structure

    if source == "gguf":
        src = write_gguf(tmp_path / "m.gguf", T.Q4_1, T.Q8_0)
        ns = neurons([(0, 3), (0, 70), (1, 200)], inter=256)
    else:
        src = add_tokenizer(save_tiny_model(tmp_path / "m", "llama"))
        ns = neuron_set("llama", per_layer=3)
    nf = tmp_path / "n.json"
    ns.save(nf)
    out = export_adapter(src, nf, tmp_path / "ad", "gguf-lora", alpha=0.0, target="up")
    res = verify_structure(src, nf, 0.0, adapter=out)
    assert res.passed and res.edited_tensors == 2 * len(ns.by_layer()) and res.kind == "gguf-lora adapter", (
        res.summary()
    )
    assert not verify_structure(src, nf, 0.5, adapter=out).passed  # another alpha: other factors

    def rewrite(name, meta=None, extra=False, bump=None):
        """A copy of the adapter with one thing changed, through gguf-py's writer."""
        r, m, tensors = read(out / "adapter.gguf")
        w = gguf.GGUFWriter(str(tmp_path / name / "adapter.gguf"), m["general.architecture"])
        (tmp_path / name).mkdir()
        w.add_type("adapter")
        w.add_string("adapter.type", "lora")
        w.add_float32("adapter.lora.alpha", (meta or {}).get("adapter.lora.alpha", 0.0))
        for tname, t in tensors.items():
            data = np.array(t.data, dtype=np.float32).reshape(list(reversed(t.shape.tolist())))
            if tname == bump:
                data.flat[int(np.abs(data).argmax())] += 1e-3
            w.add_tensor(tname, data)
        if extra:
            w.add_tensor("blk.1.ffn_gate.weight.lora_a", np.zeros((1, 64), np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        (tmp_path / name / "hedit.json").write_text((out / "hedit.json").read_text())
        return verify_structure(src, nf, 0.0, adapter=tmp_path / name)

    assert rewrite("same").passed  # the rewrite itself changes nothing
    first = sorted(read(out / "adapter.gguf")[2])[0]
    bad = rewrite("value", bump=first)
    assert not bad.passed and f"{first}: not the factor" in bad.mismatches[0]
    bad = rewrite("alpha", meta={"adapter.lora.alpha": 8.0})
    assert not bad.passed and "adapter.lora.alpha" in bad.mismatches[0]
    bad = rewrite("extra", extra=True)
    assert bad.mismatches == ["blk.1.ffn_gate.weight.lora_a: not in the plan"]
    (out / "notes.txt").write_text("x")
    assert "notes.txt" in verify_structure(src, nf, 0.0, adapter=out).mismatches[0]
    r = run_cli("verify", src, "--neurons", nf, "--alpha", "0", "--adapter", out / "adapter.gguf")
    assert r.exit_code != 0 and "--runtime structure" in r.output
