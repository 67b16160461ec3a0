"""Faults in the middle of an edit of a >100 MB model: signals, kill -9 then a rerun, a full disk, and two
runs writing the same output. Each run is a real `hedit` process; a small wrapper pauses it between
shards (so "mid-edit" is a known point, not a race) and says so on stdout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from faults import edit_args, one_error_line, start, wait_mid

from conftest import leftovers, neuron_set, tree_digest


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 4-shard llama checkpoint of about 130 MB (float32) and a neurons file for it."""
    from hedit.model.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("big")
    src = save_tiny_model(
        root / "src",
        "llama",
        max_shard_size="40MB",
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=8,
        head_dim=128,
    )
    for p in src.iterdir():
        p.chmod(0o444)
    size = sum(p.stat().st_size for p in src.iterdir())
    assert size > 100e6 and len(list(src.glob("*.safetensors"))) >= 3
    nf = root / "neurons.json"
    neuron_set("llama", per_layer=16, num_layers=2, inter=4096).save(nf)
    return src, nf


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_a_signal_mid_edit_leaves_nothing(big, tmp_path, sig, code):
    before = tree_digest(big[0])
    proc = start(edit_args(big, tmp_path / "out"))
    wait_mid(proc)
    assert leftovers(tmp_path)  # the temporary folder is there mid-edit
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert f"interrupted ({signal.Signals(sig).name})" in one_error_line(err)
    assert os.listdir(tmp_path) == [] and tree_digest(big[0]) == before


def test_kill_9_then_a_rerun_cleans_up_and_succeeds(big, tmp_path):
    proc = start(edit_args(big, tmp_path / "out"))
    wait_mid(proc)
    proc.kill()
    proc.wait(timeout=30)
    stale = leftovers(tmp_path)
    assert len(stale) == 1 and not (tmp_path / "out").exists()
    r = subprocess.run(
        [sys.executable, "-m", "hedit.cli", *map(str, edit_args(big, tmp_path / "out"))], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert os.listdir(tmp_path) == ["out"] and (tmp_path / "out" / "hedit.json").is_file()


def test_two_edits_to_one_new_output_never_replace_each_other(big, tmp_path):
    gate = tmp_path / "gate"
    out = tmp_path / "work" / "out"
    out.parent.mkdir()
    first = start(edit_args(big, out), gate)
    wait_mid(first)
    second = subprocess.run(
        [sys.executable, "-m", "hedit.cli", *map(str, edit_args(big, out))], capture_output=True, text=True
    )
    assert second.returncode == 0, second.stderr
    written = tree_digest(out)
    gate.write_text("go")
    _, err = first.communicate(timeout=120)
    assert first.returncode == 1
    assert "appeared while hedit was writing it" in one_error_line(err)
    assert tree_digest(out) == written and os.listdir(out.parent) == ["out"]


def test_a_full_disk_is_one_line_and_leaves_nothing(big, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs is not allowed here")
    try:
        r = subprocess.run(
            [sys.executable, "-m", "hedit.cli", *map(str, edit_args(big, disk / "out"))], capture_output=True, text=True
        )
        assert r.returncode == 1
        assert "no space left on the device" in one_error_line(r.stderr)
        assert os.listdir(disk) == []
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(disk)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
