"""One output shape for every writer (``hedit.edit.output.artifact``, ``hedit.edit.writers``): each format
found by name gives one Report; a failure leaves nothing; ``hedit.json`` names the source's real digests."""

import hashlib
import json

import pytest

from hedit.edit.output import artifact
from hedit.edit.plan import make_plan
from hedit.edit.writers import WRITERS, get_writer, write_artifact
from hedit.errors import HeditError
from hedit.io.safetensors_header import read_header

from conftest import LAYERS


def test_every_float_format_by_name_gives_one_report(checkpoint, neurons_file, tmp_path):
    src, nf = checkpoint("llama"), neurons_file("llama", per_layer=3)
    for fmt in ("checkpoint", "lora", "ia3"):
        r = write_artifact(src, nf, tmp_path / fmt, fmt, alpha=0.0)
        info = json.loads((tmp_path / fmt / "hedit.json").read_text())
        want = "up" if fmt == "checkpoint" else "down"  # auto: rows for float checkpoints, adapters keep down
        assert (r.format, r.target, r.out, info["kind"]) == (fmt, want, str(tmp_path / fmt), get_writer(fmt).kind)
    assert r.info == {k: v for k, v in info.items() if k in r.info}  # the report's info is what hedit.json records
    lora = json.loads((tmp_path / "lora" / "hedit.json").read_text())
    assert lora["lora_rank"] == 3 and lora["vllm_max_lora_rank"] == 8  # the LoRA writer's runtime rule
    ck = write_artifact(src, nf, tmp_path / "ck2", alpha=0.5)  # no format: the source's own
    assert ck.format == "checkpoint" and len(ck.tensors) == LAYERS and ck.max_abs_error == 0.0
    a, b = (src / "model.safetensors").read_bytes(), (tmp_path / "ck2" / "model.safetensors").read_bytes()
    assert ck.changed_bytes == sum(x != y for x, y in zip(a, b)) > 0  # the bytes that really differ


def test_a_writer_that_cannot_hold_the_plan_refuses_before_any_work(checkpoint, neurons_file, tmp_path):
    src, nf = checkpoint("llama"), neurons_file("llama")
    with pytest.raises(HeditError, match="unknown output format 'safetensor'; choose one of " + ", ".join(WRITERS)):
        write_artifact(src, nf, tmp_path / "o", "safetensor")
    with pytest.raises(HeditError, match="is not quantized; it is edited with the checkpoint writer"):
        write_artifact(src, nf, tmp_path / "o", "quantized", 0.0)
    with pytest.raises(HeditError, match="is not a GGUF file"):
        write_artifact(src, nf, tmp_path / "o", "gguf", 0.0)
    assert not (tmp_path / "o").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["neurons.json"]


def test_a_failure_inside_leaves_nothing_and_success_records_the_sources_digests(checkpoint, neurons_file, tmp_path):
    src, nf = checkpoint("llama"), neurons_file("llama")
    plan = make_plan(src, nf, 0.0)
    with pytest.raises(RuntimeError, match="mid-write"):
        with artifact(tmp_path / "out", plan, "edit", neurons_file=nf) as w:
            (w.path / "partial.bin").write_bytes(b"x")
            raise RuntimeError("mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["neurons.json"]
    with artifact(tmp_path / "out", plan, "edit", neurons_file=nf) as w:
        (w.path / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
        w.info = {"note": 1}
        w.card = lambda plan, name, ev, plots: f"card of {name}"
    info = json.loads((tmp_path / "out" / "hedit.json").read_text())
    want = hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest()
    assert info["source"]["weight_sha256"] == {"model.safetensors": want} and info["note"] == 1
    assert info["neurons"]["file"] == "neurons.json" and str(tmp_path) not in json.dumps(info)  # no local path
    assert (tmp_path / "out" / "README.md").read_text() == "card of out"
    assert (
        read_header(tmp_path / "out" / "model.safetensors").tensors.keys()
        == read_header(src / "model.safetensors").tensors.keys()
    )
