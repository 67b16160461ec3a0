"""A full disk under every command that writes: one error line naming the output, exit 1, and nothing
torn left behind (no hidden temporary entry, no empty plot, no half a journal line). Each test mounts a
tmpfs of a few kilobytes (hedit's tests run as root; elsewhere they skip)."""

from __future__ import annotations

import json
import os

import pytest

from hedit.find.collect import read_responses

from conftest import add_tokenizer, neuron_set, run_cli, small_disk


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from hedit.model.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("full")
    add_tokenizer(save_tiny_model(root / "src", "llama"))
    neuron_set("llama", per_layer=2).save(root / "n.json")
    (root / "q.jsonl").write_text(
        "".join(json.dumps({"question": f"Water boils {i}", "answers": ["yes"]}) + "\n" for i in range(4))
    )
    r = run_cli(
        "collect", root / "src", "--questions", root / "q.jsonl", "--out", root / "r.jsonl", "--samples", "1",
        "--max-new-tokens", "3", "--engine", "hf", "--quiet",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    header, recs = read_responses(root / "r.jsonl")
    for rec in recs:  # every question consistent, so that features has rows to write
        rec["samples"][0]["label"] = "correct" if int(rec["question_id"][1:]) % 2 else "incorrect"
    (root / "r.jsonl").write_text("".join(json.dumps(x) + "\n" for x in [header, *recs]))
    return root


def one_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("hedit: error: "), r.stderr
    assert "Traceback" not in r.output
    return lines[0]


def whole(disk) -> list[str]:
    """What is left on the disk; each file whole (a journal's every line is JSON, no file is empty)."""
    left = []
    for p in sorted(disk.rglob("*")):
        left.append(str(p.relative_to(disk)))
        if p.is_file():
            data = p.read_bytes()
            assert data, f"{p.name} is empty"
            if p.suffix == ".jsonl":
                assert data.endswith(b"\n") and all(json.loads(x) for x in data.splitlines()), p.name
    return left


def test_features_on_a_full_disk(world, tmp_path):
    with small_disk(tmp_path / "disk", "4k") as disk:
        r = run_cli("features", world / "src", world / "r.jsonl", "--out", disk / "F", "--quiet")
        line = one_line(r)
        assert "no space left on the device writing" in line and str(disk / "F") in line
        assert whole(disk) == []


def test_the_feature_matrix_is_allocated_before_it_is_mapped(tmp_path):
    """Writes through a memory map of a sparse file raise SIGBUS on a full disk (exit 135, no message):
    the matrix's blocks are allocated first, so the full disk is an ordinary ENOSPC."""
    import errno

    from hedit.find.features import _preallocated

    with small_disk(tmp_path / "disk", "64k") as disk:
        with pytest.raises(OSError) as e:
            _preallocated(disk / "features.f32", (1000, 1000))
        assert e.value.errno == errno.ENOSPC
        m = _preallocated(disk / "small.f32", (10, 100))
        m[:] = 1.0
        m.flush()
        del m  # a live mapping would keep the disk busy
        assert os.path.getsize(disk / "small.f32") == 4000


def test_export_adapter_on_a_full_disk(world, tmp_path):
    with small_disk(tmp_path / "disk", "4k") as disk:
        r = run_cli(
            "export-adapter", world / "src", "--neurons", world / "n.json", "--alpha", "0", "--out", disk / "lora"
        )
        assert "no space left on the device writing" in one_line(r) and str(disk / "lora") in r.stderr
        assert whole(disk) == []


def test_edit_on_a_full_disk_names_the_output_not_the_source(world, tmp_path):
    with small_disk(tmp_path / "disk", "64k") as disk:
        r = run_cli(
            "edit", world / "src", "--neurons", world / "n.json", "--alpha", "0", "--out", disk / "e", "--quiet"
        )
        line = one_line(r)
        assert "no space left on the device writing" in line and str(disk / "e") in line
        assert str(world / "src") not in line
        assert whole(disk) == []


def test_collect_on_a_full_disk_leaves_no_torn_journal(world, tmp_path):
    with small_disk(tmp_path / "disk", "4k") as disk:
        long = tmp_path / "long.jsonl"
        long.write_text(
            "".join(json.dumps({"question": "Water boils " + "x " * 3000, "answers": ["yes"]}) + "\n" for _ in range(2))
        )
        r = run_cli(
            "collect", world / "src", "--questions", long, "--out", disk / "r.jsonl", "--samples", "1",
            "--max-new-tokens", "2", "--engine", "hf", "--quiet",
        )  # fmt: skip
        assert "no space left on the device writing" in one_line(r)
        assert whole(disk) == []  # the first batch did not fit: no file, not a header alone


def test_sweep_on_a_full_disk_leaves_only_whole_files(world, tmp_path):
    """The journal keeps whole cells; sweep.json and sweep.png are written whole or not at all."""
    with small_disk(tmp_path / "disk", "8k") as disk:
        r = run_cli(
            "sweep", world / "src", "--neurons", world / "n.json", "--alphas", "0", "--controls", "0", "--limit",
            "2", "--suites", "false-premise", "--max-new-tokens", "2", "--engine", "hf", "--out", disk / "s", "--quiet",
        )  # fmt: skip
        line = one_line(r)
        assert "no space left on the device" in line and "nothing was written" not in line
        left = whole(disk)
        assert "s/sweep.png" not in left or os.path.getsize(disk / "s" / "sweep.png") > 1000
        named = line.split("writing ", 1)[1].split(";")[0]
        assert os.path.relpath(named, disk) not in left  # the file the line names is the one not left
        assert f"no part of {os.path.basename(named)} was left" in line
