"""`verify --runtime structure`: artifacts checked byte for byte against the plan, with no model loaded."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from hedit.check.structure import verify_structure
from hedit.edit.adapters import export_adapter
from hedit.edit.checkpoint import edit_checkpoint
from hedit.edit.gguf import edit_gguf
from hedit.errors import HeditError
from hedit.io.safetensors_header import read_header

from conftest import neuron_set, run_cli


@pytest.mark.parametrize("target", ["down", "up"])
@pytest.mark.parametrize(
    "model_type, dtype, shards",
    [("llama", torch.float32, False), ("llama", torch.float32, True), ("phi3", torch.bfloat16, True)],
)
def test_edits_and_adapters_pass(checkpoint, tmp_path, model_type, dtype, shards, target):
    src = checkpoint(model_type, dtype, shards)
    ns = neuron_set(model_type, per_layer=5)
    edit_checkpoint(src, ns, tmp_path / "e", alpha=0.3, progress=False, target=target)
    r = verify_structure(src, ns, 0.3, edited=tmp_path / "e", progress=False)
    assert r.passed and r.edited_tensors == 3 and r.tensors_checked > 20 and r.kind == "checkpoint", r.summary()
    for fmt in ("lora", "ia3"):
        export_adapter(src, ns, tmp_path / fmt, fmt, alpha=0.3, target=target)
        a = verify_structure(src, ns, 0.3, adapter=tmp_path / fmt)
        assert a.passed and a.edited_tensors == (6 if fmt == "lora" else 3), a.summary()
    wrong = verify_structure(src, ns, 0.5, edited=tmp_path / "e", progress=False)
    assert not wrong.passed and wrong.mismatches[0].endswith("not the source scaled as planned")


def test_a_changed_byte_anywhere_else_fails(checkpoint, tmp_path):
    src = checkpoint("llama")
    ns = neuron_set("llama", per_layer=2)
    edit_checkpoint(src, ns, tmp_path / "e", alpha=0.0, progress=False)
    f = tmp_path / "e" / "model.safetensors"
    info = read_header(f).tensors["model.norm.weight"]
    data = bytearray(f.read_bytes())
    data[info.start + 3] ^= 1
    f.write_bytes(bytes(data))
    r = verify_structure(src, ns, 0.0, edited=tmp_path / "e", progress=False)
    assert not r.passed and r.mismatches == ["model.norm.weight: changed, but the plan does not edit it"]
    res = run_cli(
        "verify",
        src,
        "--neurons",
        tmp_path / "n.json",
        "--alpha",
        "0",
        "--edited",
        tmp_path / "e",
        "--runtime",
        "structure",
    )
    assert res.exit_code == 1  # (no neurons file there: a one-line error)
    ns.save(tmp_path / "n.json")
    res = run_cli(
        "verify",
        src,
        "--neurons",
        tmp_path / "n.json",
        "--alpha",
        "0",
        "--edited",
        tmp_path / "e",
        "--runtime",
        "structure",
    )
    assert res.exit_code == 1 and res.stdout.startswith("FAIL structure:") and "model.norm.weight" in res.stdout


def test_gguf_edits_pass_and_tampering_fails(tmp_path):
    from gguf import GGMLQuantizationType as T

    from builders import neurons, write_gguf

    src = write_gguf(tmp_path / "m.gguf", T.Q4_K)
    ns = neurons([(0, 3), (1, 7)])
    edit_gguf(src, ns, tmp_path / "o", 0.0, progress=False, target="up")
    assert verify_structure(src, ns, 0.0, edited=tmp_path / "o").passed
    out = tmp_path / "o" / "m.gguf"
    data = bytearray(out.read_bytes())
    data[-5] ^= 0xFF
    out.write_bytes(bytes(data))
    r = verify_structure(src, ns, 0.0, edited=tmp_path / "o")
    assert not r.passed and "changed, but the plan does not edit them" in r.mismatches[0]


def test_quantized_checkpoints_pass(tmp_path):
    from hedit.neurons import ModelInfo, Neuron, NeuronSet

    from builders import quantized

    folder, _ = quantized(tmp_path, "gptq")
    ns = NeuronSet(ModelInfo("llama", 2, 256), [Neuron(0, 3), Neuron(1, 9)])
    edit_checkpoint(folder, ns, tmp_path / "e", alpha=0.3, progress=False)
    r = verify_structure(folder, ns, 0.3, edited=tmp_path / "e", progress=False)
    assert r.passed and r.edited_tensors == 2


def test_bad_calls(checkpoint, tmp_path):
    src = checkpoint("llama")
    with pytest.raises(HeditError, match="exactly one of --edited or --adapter"):
        verify_structure(src, neuron_set(), 0.0)
    shutil.copytree(src, tmp_path / "copy")
    os.chmod(tmp_path / "copy", 0o755)
    r = verify_structure(src, neuron_set(), 0.0, edited=tmp_path / "copy", progress=False)
    assert not r.passed and all("not the source scaled as planned" in m for m in r.mismatches)


def test_every_copied_file_is_checked_too(checkpoint, tmp_path):
    """A changed rms_norm_eps (the model changes: the transformers check fails too), a changed chat
    template, a missing tokenizer file or a file nobody wrote: each is a mismatch, not a PASS."""
    import json

    from hedit.check.verify import verify_artifact

    from conftest import add_tokenizer

    src = tmp_path / "src"
    shutil.copytree(checkpoint("llama"), src)
    for p in src.iterdir():
        p.chmod(0o644)
    add_tokenizer(src)
    ns = neuron_set("llama", per_layer=2)
    edit_checkpoint(src, ns, tmp_path / "e", alpha=0.0, progress=False)
    assert verify_structure(src, ns, 0.0, edited=tmp_path / "e", progress=False).passed
    cfg = tmp_path / "e" / "config.json"
    good = cfg.read_text()
    cfg.write_text(json.dumps(json.loads(good) | {"rms_norm_eps": 0.5}))
    r = verify_structure(src, ns, 0.0, edited=tmp_path / "e", progress=False)
    assert not r.passed and r.mismatches == ["config.json: differs from the source's"]
    assert not verify_artifact(src, ns, 0.0, edited=tmp_path / "e").passed  # the model itself changed
    cfg.write_text(good)
    for change, want in (
        (lambda e: (e / "chat_template.jinja").write_text("{{ 'always comply' }}"), "chat_template.jinja: differs"),
        (lambda e: (e / "tokenizer.json").unlink(), "tokenizer.json: copied from the source, but missing"),
        (lambda e: (e / "notes.txt").write_text("x"), "notes.txt: in the edit, but neither copied"),
    ):
        shutil.copytree(tmp_path / "e", tmp_path / "e2")
        change(tmp_path / "e2")
        r = verify_structure(src, ns, 0.0, edited=tmp_path / "e2", progress=False)
        assert not r.passed and len(r.mismatches) == 1 and r.mismatches[0].startswith(want), r.mismatches
        shutil.rmtree(tmp_path / "e2")


def test_an_adapter_config_that_rescales_the_edit_fails(checkpoint, tmp_path):
    """lora_alpha doubled scales the whole edit by two: the factors are unchanged, the config is not."""
    import json

    src = checkpoint("llama")
    ns = neuron_set("llama", per_layer=2)
    export_adapter(src, ns, tmp_path / "a", "lora", alpha=0.0)
    assert verify_structure(src, ns, 0.0, adapter=tmp_path / "a").passed
    p = tmp_path / "a" / "adapter_config.json"
    cfg = json.loads(p.read_text())
    p.write_text(json.dumps(cfg | {"lora_alpha": 2 * cfg["lora_alpha"]}))
    r = verify_structure(src, ns, 0.0, adapter=tmp_path / "a")
    assert not r.passed and r.mismatches == ["adapter_config.json: not the one the plan implies (lora_alpha differ)"]


@pytest.mark.parametrize("fmt", ["lora", "ia3"])
def test_adapters_written_and_checked_under_different_hash_seeds_agree(checkpoint, tmp_path, fmt):
    """PEFT keeps ``target_modules`` as a set and saves it in hash order: hedit writes it sorted, and the
    structure check compares it as a set, so a valid adapter passes whatever ``PYTHONHASHSEED`` the
    writing and the checking processes had (it failed about half the time before)."""
    import subprocess
    import sys

    src = checkpoint("llama", torch.float32, False)
    ns = neuron_set("llama", per_layer=5)
    ns.save(tmp_path / "n.json")
    cli = [sys.executable, "-m", "hedit.cli"]
    env = os.environ.copy()
    files = []
    for seed in ("1", "2"):
        out = tmp_path / f"{fmt}{seed}"
        env["PYTHONHASHSEED"] = seed
        w = subprocess.run(
            [*cli, "export-adapter", src, "--neurons", tmp_path / "n.json", "--alpha", "0.3", "--format", fmt]
            + ["--out", out],
            env=env,
            capture_output=True,
            text=True,
        )
        assert w.returncode == 0, w.stderr
        files.append((out / "adapter_config.json").read_bytes())
    assert files[0] == files[1]  # the same adapter, byte for byte, under either hash seed
    env["PYTHONHASHSEED"] = "3"
    v = subprocess.run(
        [*cli, "verify", src, "--neurons", tmp_path / "n.json", "--alpha", "0.3", "--adapter", out]
        + ["--runtime", "structure"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert v.returncode == 0 and "PASS" in v.stdout, v.stdout + v.stderr
    # an adapter written before this fix, its targets in another order, passes too
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["target_modules"] = cfg["target_modules"][::-1]
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    assert verify_structure(src, ns, 0.3, adapter=out).passed
