import json
import os
import subprocess
import sys

import pytest

from hedit.errors import HeditError
from hedit.io.atomic import (
    atomic_dir,
    atomic_file,
    check_target,
    fingerprint,
    is_hedit_output,
    remove_stale,
    rename_noreplace,
)

from conftest import leftovers


def hedit_output(path):
    path.mkdir()
    (path / "hedit.json").write_text(json.dumps({"hedit_version": "0"}))
    (path / "old").write_text("old")
    return path


def test_success_renames_into_place(tmp_path):
    with atomic_dir(tmp_path / "out") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".out.hedit-{os.getpid()}-")
        (tmp / "f").write_text("1")
        assert not (tmp_path / "out").exists()
    assert (tmp_path / "out" / "f").read_text() == "1"
    assert leftovers(tmp_path) == []


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "f").write_text("1")
            raise RuntimeError("disk full")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_existing_output_needs_overwrite_and_must_be_a_hedit_output(tmp_path):
    hedit_output(tmp_path / "out")
    with pytest.raises(HeditError, match="already exists; pass --overwrite"):
        with atomic_dir(tmp_path / "out"):
            pass
    with atomic_dir(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new"]
    assert leftovers(tmp_path) == []
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(HeditError, match="is not a hedit output; --overwrite only replaces what hedit wrote"):
        with atomic_dir(tmp_path / "mine", overwrite=True):
            pass
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"


def test_failure_with_overwrite_keeps_the_old_output(tmp_path):
    hedit_output(tmp_path / "out")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out", overwrite=True):
            raise RuntimeError
    assert (tmp_path / "out" / "old").read_text() == "old" and leftovers(tmp_path) == []


def test_missing_parent_and_file_target(tmp_path):
    with pytest.raises(HeditError, match="does not exist"):
        with atomic_dir(tmp_path / "a" / "b"):
            pass
    (tmp_path / "f").write_text("x")
    with pytest.raises(HeditError, match="exists and is not a hedit output"):
        with atomic_dir(tmp_path / "f", overwrite=True):
            pass


def test_source_and_working_directory_are_protected(tmp_path, monkeypatch):
    src = tmp_path / "par" / "m"
    src.mkdir(parents=True)
    for out, why in [
        (src, "is the source"),
        (src / "x", "is inside the source"),
        (tmp_path / "par", "holds the source"),
        (tmp_path, "holds the source"),
    ]:
        with pytest.raises(HeditError, match=why):
            check_target(out, [src], overwrite=True)
    monkeypatch.chdir(src)
    for out in (".", "..", str(tmp_path)):
        with pytest.raises(HeditError, match="working directory or one of its parents|not a new file"):
            check_target(out, [], overwrite=True)


def test_the_final_rename_never_replaces_what_appeared_meanwhile(tmp_path):
    with pytest.raises(HeditError, match="appeared while hedit was writing it"):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "mine").write_text("first")
            (tmp_path / "out").mkdir()  # another run, or a user, made it meanwhile (empty, even)
    assert list((tmp_path / "out").iterdir()) == [] and leftovers(tmp_path) == []
    with pytest.raises(HeditError, match="appeared while hedit was writing it"):
        with atomic_file(tmp_path / "f.gguf") as tmp:
            tmp.write_text("new")
            (tmp_path / "f.gguf").write_text("theirs")
    assert (tmp_path / "f.gguf").read_text() == "theirs" and leftovers(tmp_path) == []


def test_rename_noreplace(tmp_path):
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    with pytest.raises(FileExistsError):
        rename_noreplace(tmp_path / "a", tmp_path / "b")
    rename_noreplace(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").read_text() == "a" and (tmp_path / "b").read_text() == "b"


def test_stale_temporaries_of_dead_runs_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    (tmp_path / f".out.hedit-{dead}-abc").mkdir()
    (tmp_path / f".out.hedit-{dead}-abc" / "half").write_text("x")
    (tmp_path / f".out.hedit-{dead}-old-def").mkdir()
    (tmp_path / f".out.hedit-{os.getpid()}-live").mkdir()  # this process: alive
    (tmp_path / f".other.hedit-{dead}-xyz").mkdir()  # another output's: not ours to judge
    assert sorted(remove_stale(tmp_path / "out")) == [f".out.hedit-{dead}-abc", f".out.hedit-{dead}-old-def"]
    assert sorted(leftovers(tmp_path)) == [f".other.hedit-{dead}-xyz", f".out.hedit-{os.getpid()}-live"]


def test_what_counts_as_a_hedit_output(tmp_path):
    assert not is_hedit_output(tmp_path / "none")
    (tmp_path / "d").mkdir()
    assert not is_hedit_output(tmp_path / "d")
    (tmp_path / "d" / "hedit.json").write_text("[1]")
    assert not is_hedit_output(tmp_path / "d")
    (tmp_path / "d" / "hedit.json").write_text('{"hedit_version": "0.1"}')
    assert is_hedit_output(tmp_path / "d")
    (tmp_path / "m.gguf").write_text("x")
    assert not is_hedit_output(tmp_path / "m.gguf")
    (tmp_path / "m.gguf.hedit.json").write_text("{}")  # a sidecar hedit did not write
    assert not is_hedit_output(tmp_path / "m.gguf")
    mark = {"hedit_version": "0.1", "output": fingerprint(tmp_path / "m.gguf")}
    (tmp_path / "m.gguf.hedit.json").write_text(json.dumps(mark))
    assert is_hedit_output(tmp_path / "m.gguf")
    (tmp_path / "m.gguf").write_text("y")  # changed since: the user's
    assert not is_hedit_output(tmp_path / "m.gguf")


def test_pwrite_all_finishes_short_writes_and_refuses_a_write_of_nothing(tmp_path, monkeypatch):
    """``os.pwrite`` may write fewer bytes than asked: every positional write of hedit goes on from there."""
    import os

    from hedit.io import files

    real = os.pwrite
    calls = []
    monkeypatch.setattr(os, "pwrite", lambda fd, data, off: calls.append(off) or real(fd, bytes(data)[:3], off))
    p = tmp_path / "f"
    p.write_bytes(b"." * 20)
    fd = os.open(p, os.O_WRONLY)
    try:
        files.pwrite_all(fd, b"abcdefghij", 5)
        monkeypatch.setattr(os, "pwrite", lambda fd, data, off: 0)
        with pytest.raises(OSError, match="a write at byte 2 wrote nothing"):
            files.pwrite_all(fd, b"xy", 2)
    finally:
        os.close(fd)
    assert p.read_bytes() == b"....." + b"abcdefghij" + b"....." and calls == [5, 8, 11, 14]
