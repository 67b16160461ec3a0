"""Edits that cost only the bytes that change (``hedit.io.clone``): on a reflink filesystem the output's
weight files are clones of the source's with only the edited byte ranges rewritten; elsewhere the kernel
copies. Either way the output is byte for byte the same, the source is never touched, and the fault
guarantees hold."""

import os
import shutil
import signal
import subprocess
import sys

import pytest
from faults import edit_args, one_error_line, start, wait_mid

from hedit.check.structure import verify_structure
from hedit.edit.writers import write_artifact
from hedit.io.clone import clone_file

from conftest import leftovers, neuron_set, reflink_disk, tree_digest


def used(path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_a_copy_where_no_clone_can_be_made_is_the_same_bytes(tmp_path, monkeypatch):
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(3 << 20))
    assert clone_file(src, tmp_path / "b.bin") in ("clone", "copy_file_range")  # ext4 here: the kernel copies
    monkeypatch.setenv("HEDIT_CLONE", "copy")
    assert clone_file(src, tmp_path / "c.bin") == "copy"
    assert (tmp_path / "b.bin").read_bytes() == (tmp_path / "c.bin").read_bytes() == src.read_bytes()


@pytest.fixture
def xfs(tmp_path):
    with reflink_disk(tmp_path / "xfs", 400) as where:
        yield where


def test_on_a_reflink_filesystem_an_edit_clones_and_writes_only_what_changes(xfs, checkpoint, monkeypatch):
    src = xfs / "src"
    shutil.copytree(checkpoint("llama", shards=True), src)
    nf = xfs / "neurons.json"
    neuron_set("llama", per_layer=3).save(nf)
    before = tree_digest(src)
    for target in ("down", "up"):
        mark = used(xfs)
        r = write_artifact(src, nf, xfs / f"clone-{target}", alpha=0.0, target=target)
        os.sync()
        assert set(r.info["weight_files_copied_by"]) == {"clone"}
        weights = sum(p.stat().st_size for p in src.glob("*.safetensors"))
        assert used(xfs) - mark < weights / 2  # shared blocks: far less new disk than a copy
        monkeypatch.setenv("HEDIT_CLONE", "copy")
        write_artifact(src, nf, xfs / f"copy-{target}", alpha=0.0, target=target)
        monkeypatch.delenv("HEDIT_CLONE")
        a, b = tree_digest(xfs / f"clone-{target}"), tree_digest(xfs / f"copy-{target}")
        for own in ("hedit.json", "README.md"):  # provenance (time, copy path) and the card (the output name)
            a.pop(own), b.pop(own)
        assert a == b  # byte for byte the copy path's output
        assert verify_structure(src, nf, 0.0, edited=xfs / f"clone-{target}", progress=False).passed
    assert tree_digest(src) == before  # writing the clones never touched the source's shared blocks


def test_a_gguf_edit_clones_too(xfs, monkeypatch):
    from hedit.model.builtin import BUILTINS, gguf_path

    src = xfs / "m.gguf"
    shutil.copyfile(gguf_path(BUILTINS["smollm2-135m-instruct"]), src)
    nf = xfs / "n.json"
    neuron_set("llama", per_layer=4, num_layers=30, inter=1536).save(nf)
    digest = tree_digest(xfs)["m.gguf"]
    mark = used(xfs)
    r = write_artifact(src, nf, xfs / "e.gguf", alpha=0.0)
    os.sync()
    assert r.info["copied_by"] == "clone" and used(xfs) - mark < src.stat().st_size / 4
    monkeypatch.setenv("HEDIT_CLONE", "copy")
    write_artifact(src, nf, xfs / "c.gguf", alpha=0.0)
    got = tree_digest(xfs)
    assert got["e.gguf"] == got["c.gguf"] != digest and got["m.gguf"] == digest


def test_a_signal_mid_edit_on_the_clone_path_leaves_nothing(xfs, checkpoint):
    src = xfs / "src"
    shutil.copytree(checkpoint("llama", shards=True), src)
    nf = xfs / "neurons.json"
    neuron_set("llama", per_layer=3).save(nf)
    before = tree_digest(src)
    out = xfs / "work" / "out"
    out.parent.mkdir()
    proc = start(edit_args((src, nf), out))
    wait_mid(proc)
    assert leftovers(out.parent)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "interrupted (SIGTERM)" in one_error_line(err)
    assert os.listdir(out.parent) == [] and tree_digest(src) == before
    r = subprocess.run([sys.executable, "-m", "hedit.cli", *map(str, edit_args((src, nf), out))], capture_output=True)
    assert r.returncode == 0 and (out / "hedit.json").is_file()


def test_kill_9_on_the_clone_path_then_a_rerun_cleans_up(xfs, checkpoint):
    src = xfs / "src"
    shutil.copytree(checkpoint("llama", shards=True), src)
    nf = xfs / "neurons.json"
    neuron_set("llama", per_layer=3).save(nf)
    before = tree_digest(src)
    out = xfs / "work" / "out"
    out.parent.mkdir()
    proc = start(edit_args((src, nf), out))
    wait_mid(proc)
    proc.kill()
    proc.wait(timeout=30)
    assert len(leftovers(out.parent)) == 1 and not out.exists()  # a clone half patched, in its temporary folder
    r = subprocess.run(
        [sys.executable, "-m", "hedit.cli", *map(str, edit_args((src, nf), out))], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert os.listdir(out.parent) == ["out"] and tree_digest(src) == before
    assert json_of(out)["weight_files_copied_by"] == {"clone": len(list(src.glob("*.safetensors")))}
    assert verify_structure(src, nf, 0.0, edited=out, progress=False).passed


def test_a_full_reflink_disk_is_one_line_and_leaves_nothing(xfs, checkpoint):
    """Clones share the source's blocks, but rewriting a row needs new ones: with the disk filled, the
    patch's write fails, in one line, and nothing is left behind."""
    src = xfs / "src"
    shutil.copytree(checkpoint("llama", shards=True), src)
    nf = xfs / "neurons.json"
    neuron_set("llama", per_layer=48).save(nf)  # rows in every block of each up_proj: more than is left
    before = tree_digest(src)
    out = xfs / "work" / "out"
    out.parent.mkdir()
    filler = xfs / "filler"
    with open(filler, "wb") as f:  # every free block taken: in 1 MB steps, then block by block, twice (XFS
        size = 0  # gives back the blocks it preallocated past the end of the copied files once they are synced)
        for _ in range(2):
            os.sync()
            for step in (1 << 20, 4096):
                while True:
                    try:
                        os.posix_fallocate(f.fileno(), size, step)
                    except OSError:
                        break
                    size += step
    r = subprocess.run(
        [sys.executable, "-m", "hedit.cli", *map(str, edit_args((src, nf), out))], capture_output=True, text=True
    )
    assert r.returncode == 1 and "no space left on the device" in one_error_line(r.stderr)
    assert os.listdir(out.parent) == [] and tree_digest(src) == before


def json_of(out):
    import json

    return json.loads((out / "hedit.json").read_text())


def test_two_edits_to_one_new_output_on_the_clone_path_never_replace_each_other(xfs, checkpoint):
    src = xfs / "src"
    shutil.copytree(checkpoint("llama", shards=True), src)
    nf = xfs / "neurons.json"
    neuron_set("llama", per_layer=3).save(nf)
    gate, out = xfs / "gate", xfs / "work" / "out"
    out.parent.mkdir()
    first = start(edit_args((src, nf), out), gate)
    wait_mid(first)
    second = subprocess.run(
        [sys.executable, "-m", "hedit.cli", *map(str, edit_args((src, nf), out))], capture_output=True, text=True
    )
    assert second.returncode == 0, second.stderr
    written = tree_digest(out)
    gate.write_text("go")
    _, err = first.communicate(timeout=120)
    assert first.returncode == 1 and "appeared while hedit was writing it" in one_error_line(err)
    assert tree_digest(out) == written and os.listdir(out.parent) == ["out"]
