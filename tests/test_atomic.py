import pytest

from hedit.errors import HeditError
from hedit.io.atomic import atomic_dir

from conftest import leftovers


def test_success_renames_into_place(tmp_path):
    with atomic_dir(tmp_path / "out") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.hedit-")
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


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_text("old")
    with pytest.raises(HeditError, match="already exists; pass --overwrite"):
        with atomic_dir(tmp_path / "out"):
            pass
    with atomic_dir(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new"]
    assert leftovers(tmp_path) == []


def test_failure_with_overwrite_keeps_the_old_output(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out", overwrite=True):
            raise RuntimeError
    assert (tmp_path / "out" / "old").read_text() == "old" and leftovers(tmp_path) == []


def test_missing_parent_and_file_target(tmp_path):
    with pytest.raises(HeditError, match="does not exist"):
        with atomic_dir(tmp_path / "a" / "b"):
            pass
    (tmp_path / "f").write_text("x")
    with pytest.raises(HeditError, match="not a folder"):
        with atomic_dir(tmp_path / "f", overwrite=True):
            pass
