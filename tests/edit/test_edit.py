import json
import os
import re
import shutil

import pytest
import torch

from hedit.edit.checkpoint import edit_checkpoint
from hedit.errors import HeditError
from hedit.io.checkpoint import open_checkpoint
from hedit.io.safetensors_header import read_header, read_tensor

from conftest import ARCHS, INTER, leftovers, neuron_set, tree_digest


def tensors(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return {name: read_tensor(fd, info) for name, info in read_header(path).tensors.items()}
    finally:
        os.close(fd)


def check_edit(src, out, plan_layers):
    """Edited columns == original * alpha (float32, cast back); every other byte identical."""
    ck = open_checkpoint(src)
    edited_tensors = {ck.down_proj[layer][1].name: pairs for layer, pairs in plan_layers.items()}
    assert sorted(os.listdir(out)) == sorted(os.listdir(src) + ["README.md", "hedit.json"])
    for f in ck.weight_files:
        h = read_header(src / f)
        a, b = (src / f).read_bytes(), (out / f).read_bytes()
        assert len(a) == len(b) and a[: h.data_start] == b[: h.data_start]  # header byte-identical
        before, after = tensors(src / f), tensors(out / f)
        for name, info in h.tensors.items():
            if name not in edited_tensors:
                assert a[info.start : info.end] == b[info.start : info.end], name
                continue
            cols, alphas = zip(*edited_tensors[name])
            want = before[name].clone()
            for c, al in zip(cols, alphas):
                want[:, c] = (before[name][:, c].to(torch.float32) * al).to(want.dtype)
            assert torch.equal(after[name], want), name
            assert not torch.equal(after[name], before[name])
    for name in os.listdir(src):
        if not name.endswith(".safetensors"):
            assert (src / name).read_bytes() == (out / name).read_bytes(), name


@pytest.mark.parametrize("model_type", ARCHS)
def test_every_architecture(checkpoint, tmp_path, model_type):
    src = checkpoint(model_type)
    before = tree_digest(src)
    ns = neuron_set(model_type, per_layer=5, layers=[0, 2])
    edit_checkpoint(src, ns, tmp_path / "out", alpha=0.5, progress=False, target="down")
    check_edit(src, tmp_path / "out", ns.plan(0.5))
    assert tree_digest(src) == before


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shards", [False, True])
def test_dtypes_and_shards(checkpoint, tmp_path, dtype, shards):
    src = checkpoint("llama", dtype, shards)
    ns = neuron_set("llama", per_layer=7)
    edit_checkpoint(src, ns, tmp_path / "out", alpha=0.3, progress=False, target="down")
    check_edit(src, tmp_path / "out", ns.plan(0.3))
    if shards:
        assert (tmp_path / "out" / "model.safetensors.index.json").read_bytes() == (
            src / "model.safetensors.index.json"
        ).read_bytes()


def test_sharded_multimodal(checkpoint, tmp_path):
    src = checkpoint("gemma3", shards=True)
    ns = neuron_set("gemma3", per_layer=3)
    edit_checkpoint(src, ns, tmp_path / "out", alpha=2.0, progress=False, target="down")
    check_edit(src, tmp_path / "out", ns.plan(2.0))


@pytest.mark.parametrize("model_type, tie", [("llama", True), ("gemma2", None)])
def test_tied_embeddings_stay_tied_and_untouched(checkpoint, tmp_path, model_type, tie):
    src = checkpoint(model_type, tie=tie)
    assert json.loads((src / "config.json").read_text())["tie_word_embeddings"] is True
    names = read_header(src / "model.safetensors").tensors
    assert "lm_head.weight" not in names  # tied: only the embedding is stored
    ns = neuron_set(model_type)
    edit_checkpoint(src, ns, tmp_path / "out", alpha=0.0, progress=False, target="down")
    check_edit(src, tmp_path / "out", ns.plan(0.0))
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert m.lm_head.weight.data_ptr() == m.get_input_embeddings().weight.data_ptr()


def test_per_neuron_alpha_overrides_cli(checkpoint, tmp_path):
    from dataclasses import replace

    src = checkpoint("qwen2")
    ns = neuron_set("qwen2", per_layer=2, layers=[1])
    ns.neurons[0] = replace(ns.neurons[0], alpha=3.0)
    edit_checkpoint(src, ns, tmp_path / "out", alpha=0.0, progress=False, target="down")
    plan = ns.plan(0.0)
    assert sorted(a for _, a in plan[1]) == [0.0, 3.0]
    check_edit(src, tmp_path / "out", plan)
    info = json.loads((tmp_path / "out" / "hedit.json").read_text())
    assert info["alphas_used"] == [0.0, 3.0] and info["alpha"] == 0.0


def test_provenance_and_card(checkpoint, tmp_path, neurons_file):
    import hashlib

    src = checkpoint("llama", shards=True)
    nf = neurons_file("llama", per_layer=2, layers=[0, 1])
    edit_checkpoint(src, nf, tmp_path / "out", alpha=0.0, progress=False, target="down")
    info = json.loads((tmp_path / "out" / "hedit.json").read_text())
    ck = open_checkpoint(src)
    assert info["source"]["weight_sha256"] == {
        f: hashlib.sha256((src / f).read_bytes()).hexdigest() for f in ck.weight_files
    }
    assert info["neurons"]["per_layer"] == {"0": 2, "1": 2} and info["neurons"]["count"] == 4
    assert info["neurons"]["file"] == "neurons.json" and info["kind"] == "edit"
    assert str(tmp_path) not in (tmp_path / "out" / "hedit.json").read_text()  # no local path is ever pushed
    card = (tmp_path / "out" / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: transformers" in front and "- hedit" in front and "base_model:" not in front  # a local source
    assert "4 MLP neurons in 2 of 3 layers" in card and "vllm serve out" in card


def test_the_evidence_plots_beside_the_neurons_file_travel_with_the_model(checkpoint, tmp_path):
    ns = neuron_set("llama", per_layer=2)
    ns.provenance = {"probe": {"heldout": {"auroc": 0.9, "auroc_ci95": [0.8, 1.0], "accuracy": 0.8}}}
    (tmp_path / "id").mkdir()
    ns.save(tmp_path / "id" / "neurons.json")
    for name in ("neurons_per_layer.png", "c_sweep.png"):
        (tmp_path / "id" / name).write_bytes(b"\x89PNG" + name.encode())
    edit_checkpoint(
        checkpoint("llama"),
        tmp_path / "id" / "neurons.json",
        tmp_path / "out",
        alpha=0.0,
        progress=False,
        target="down",
    )
    assert sorted(p.name for p in (tmp_path / "out" / "evidence").iterdir()) == ["c_sweep.png", "neurons_per_layer.png"]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "](evidence/neurons_per_layer.png)" in card and "AUROC 0.900 [0.80, 1.00]" in card
    assert json.loads((tmp_path / "out" / "hedit.json").read_text())["evidence"]["probe"]["heldout"]["auroc"] == 0.9


def test_output_inside_source_is_refused(checkpoint, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(checkpoint("llama"), src)
    for out in (src, src / "sub"):
        with pytest.raises(HeditError, match="is the source|is inside the source"):
            edit_checkpoint(src, neuron_set(), out, alpha=0.0, overwrite=True, progress=False, target="down")
    assert leftovers(src) == [] and leftovers(tmp_path) == []


def test_tokenizer_and_chat_template_are_copied(tmp_path):
    from hedit.check.verify import verify
    from hedit.model.tiny import save_tiny_model

    from conftest import add_tokenizer

    src = add_tokenizer(save_tiny_model(tmp_path / "src", "llama"))
    tok_files = {p.name for p in src.iterdir()} - {"model.safetensors", "config.json", "generation_config.json"}
    assert "tokenizer.json" in tok_files and any(
        "chat_template" in f or f == "tokenizer_config.json" for f in tok_files
    )
    ns = neuron_set("llama")
    edit_checkpoint(src, ns, tmp_path / "out", alpha=0.0, progress=False, target="down")
    for name in tok_files:
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes(), name
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    chat = tok.apply_chat_template([{"role": "user", "content": "Water boils"}], tokenize=False)
    assert chat == "user: Water boils\n"
    r = verify(src, ns, 0.0, edited=tmp_path / "out", new_tokens=3)  # prompts go through the tokenizer
    assert r.passed and r.effect > 1e-2


def test_a_shard_path_outside_the_folder_is_refused_and_nothing_escapes(checkpoint, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(checkpoint("llama", shards=True), src)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    victim = tmp_path / "victim.safetensors"
    victim.write_text("precious")
    first = next(iter(index["weight_map"]))
    shard = index["weight_map"][first]
    shutil.copyfile(src / shard, victim)
    victim_bytes = victim.read_bytes()
    for bad in ("../victim.safetensors", str(victim), "sub/../../victim.safetensors"):
        index["weight_map"][first] = bad
        (src / "model.safetensors.index.json").write_text(json.dumps(index))
        with pytest.raises(HeditError, match="points outside"):
            edit_checkpoint(src, neuron_set(), tmp_path / "out" / "ed", alpha=0.0, progress=False, target="down")
    assert victim.read_bytes() == victim_bytes and leftovers(tmp_path) == []


@pytest.mark.parametrize("dtype, big", [(torch.float32, 1e37), (torch.float16, 3e3), (torch.bfloat16, 1e37)])
def test_a_finite_alpha_that_overflows_the_dtype_is_refused(checkpoint, tmp_path, dtype, big):
    """Weights near the top of their dtype times an alpha in range (50) overflow: refused, nothing left."""
    from safetensors.torch import load_file, save_file

    src = tmp_path / "src"
    shutil.copytree(checkpoint("llama", dtype), src)
    for p in src.iterdir():
        p.chmod(0o644)
    tensors = load_file(src / "model.safetensors")
    for name in tensors:
        if name.endswith("down_proj.weight"):
            tensors[name] = torch.full_like(tensors[name], big)
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(HeditError, match=re.escape("alpha 50 makes values that overflow")):
        edit_checkpoint(src, neuron_set(), work / "out", alpha=50.0, progress=False, target="down")
    assert os.listdir(work) == []


@pytest.mark.parametrize("model_type", ["llama", "phi3"])
def test_up_target_scales_up_proj_rows_and_nothing_else(checkpoint, tmp_path, model_type):
    """Row j of up_proj (phi3: row inter + j of the fused gate_up_proj) times alpha; every other byte kept."""
    src = checkpoint(model_type)
    ns = neuron_set(model_type, per_layer=3, layers=[0, 2])
    edit_checkpoint(src, ns, tmp_path / "out", alpha=0.25, progress=False, target="up")
    before, after = tensors(src / "model.safetensors"), tensors(tmp_path / "out" / "model.safetensors")
    offset = INTER if model_type == "phi3" else 0
    up = "gate_up_proj" if model_type == "phi3" else "up_proj"
    changed = set()
    for layer, idx in ns.by_layer().items():
        name = f"model.layers.{layer}.mlp.{up}.weight"
        want = before[name].clone()
        want[[offset + j for j in idx]] *= 0.25
        assert torch.equal(after[name], want)
        changed.add(name)
    assert all(torch.equal(after[n], before[n]) for n in before if n not in changed)
    info = json.loads((tmp_path / "out" / "hedit.json").read_text())
    assert info["target"] == "up" and info["format"] == "float" and info["max_abs_error"] == 0.0


def test_up_target_needs_a_gated_mlp_and_quantized_sources_refuse_down(checkpoint, tmp_path, monkeypatch):
    from hedit.edit.plan import resolve_target
    from hedit.registry import get_architecture

    arch = get_architecture("llama")
    assert resolve_target("auto", arch, quantized=False) == "down"
    assert resolve_target("auto", arch, quantized=True) == "up"
    with pytest.raises(HeditError, match="shares its scales along the rows of down_proj"):
        resolve_target("down", arch, quantized=True)
    ungated = arch.__class__(**{**arch.__dict__, "up_proj": None})
    with pytest.raises(HeditError, match="has no gated MLP"):
        resolve_target("up", ungated, quantized=False)
    with pytest.raises(HeditError, match="--target must be one of"):
        resolve_target("sideways", arch, quantized=False)


def test_auto_takes_up_proj_rows_in_float_checkpoints_of_gated_mlps(checkpoint, tmp_path):
    """Rows are contiguous bytes: auto edits up_proj rows of a float gated MLP (down_proj stays
    byte-identical), down_proj columns of an ungated one, and adapters keep down."""
    from hedit.edit.writers import write_artifact
    from hedit.io.safetensors_header import read_header, read_tensor

    src = checkpoint("llama")
    r = write_artifact(src, neuron_set(), tmp_path / "e", alpha=0.0)
    assert r.target == "up" and all(t.name.endswith("up_proj.weight") for t in r.tensors)
    h, e = read_header(src / "model.safetensors"), read_header(tmp_path / "e" / "model.safetensors")
    with open(src / "model.safetensors", "rb") as a, open(tmp_path / "e" / "model.safetensors", "rb") as b:
        for name in h.tensors:
            same = torch.equal(read_tensor(a.fileno(), h.tensors[name]), read_tensor(b.fileno(), e.tensors[name]))
            assert same == ("up_proj" not in name), name
    assert write_artifact(src, neuron_set(), tmp_path / "l", "lora", alpha=0.0).target == "down"
