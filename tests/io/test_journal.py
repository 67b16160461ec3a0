import json
import os

import pytest

from hedit.errors import HeditError
from hedit.io.journal import CHECKS, KEYS, Journal, read_journal


def test_new_journal_writes_header_then_records(tmp_path):
    p = tmp_path / "j.jsonl"
    with Journal(p, "sweep", {"a": 1}, {"model": "m"}) as j:
        j.append([{"x": 1}, {"x": 2}])
    header, recs = read_journal(p, "sweep")
    assert header == {"_hedit": "sweep", "config": {"a": 1}, "model": "m"} and recs == [{"x": 1}, {"x": 2}]


def test_reopening_appends_and_trims_a_torn_tail(tmp_path):
    p = tmp_path / "j.jsonl"
    with Journal(p, "sweep", {"a": 1}) as j:
        j.append([{"x": 1}])
    with open(p, "a") as f:
        f.write('{"x": 2, "torn')  # a crash mid-write
    j = Journal(p, "sweep", {"a": 1})
    assert j.records == [{"x": 1}]
    with j:
        j.append([{"x": 3}])
    assert [json.loads(line) for line in p.read_text().splitlines()][1:] == [{"x": 1}, {"x": 3}]


def test_other_settings_or_kind_are_errors(tmp_path):
    p = tmp_path / "j.jsonl"
    with Journal(p, "sweep", {"a": 1}) as j:
        j.append([{"x": 1}])
    with pytest.raises(HeditError, match="with other settings"):
        Journal(p, "sweep", {"a": 2})
    with pytest.raises(HeditError, match="is not a hedit responses file"):
        read_journal(p, "responses")
    p.write_text("not json\n")
    with pytest.raises(HeditError, match="j.jsonl:1: not valid JSON"):
        read_journal(p, "sweep")
    assert read_journal(tmp_path / "none.jsonl", "sweep") == (None, [])


def test_records_include_what_was_appended(tmp_path):
    p = tmp_path / "j.jsonl"
    with Journal(p, "sweep", {}) as j:
        j.append([{"x": 1}])
    j = Journal(p, "sweep", {})
    with j:
        j.append([{"x": 2}])
        assert j.records == [{"x": 1}, {"x": 2}] == read_journal(p, "sweep")[1]


def test_missing_folders_are_created(tmp_path):
    path = tmp_path / "new" / "deeper" / "j.jsonl"
    with Journal(path, "responses", {"k": 1}) as j:
        j.append([{"question_id": "a"}])
    assert read_journal(path, "responses") == ({"_hedit": "responses", "config": {"k": 1}}, [{"question_id": "a"}])


def test_a_record_twice_is_refused_on_reading(tmp_path):
    p = tmp_path / "j.jsonl"
    with Journal(p, "sweep", {}, check=lambda r: True) as j:
        j.append([{"set": "h", "alpha": 0, "task": "t", "items": []}])
        j.append([{"set": "h", "alpha": 0.0, "task": "t", "items": []}])  # two runs, one cell
    with pytest.raises(HeditError, match="j.jsonl:3: cell h 0.0 t is recorded twice"):
        read_journal(p, "sweep", CHECKS["sweep"], KEYS["sweep"])


def test_a_failed_write_leaves_no_torn_line(tmp_path, monkeypatch):
    """A full disk midway through a batch: the file is cut back to its last whole record."""
    import errno

    import hedit.io.journal as journal_mod

    p = tmp_path / "j.jsonl"
    with Journal(p, "sweep", {}) as j:
        j.append([{"x": 1}])
        good = p.read_bytes()
        real = os.write

        def half_then_full(fd, data):
            real(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(journal_mod.os, "write", half_then_full)
        with pytest.raises(HeditError, match="no space left on the device writing .*j.jsonl"):
            j.append([{"x": 2}, {"x": 3}])
        monkeypatch.setattr(journal_mod.os, "write", real)
    assert p.read_bytes() == good


def test_the_header_is_written_with_the_first_records(tmp_path):
    p = tmp_path / "j.jsonl"
    with Journal(p, "sweep", {"a": 1}):
        assert p.exists()  # held (locked) while open
    assert not p.exists()  # nothing recorded: nothing left
    with Journal(p, "sweep", {"a": 1}, model_id="abc") as j:
        j.append([{"x": 1}])
    assert read_journal(p, "sweep")[0] == {"_hedit": "sweep", "config": {"a": 1}, "model_id": "abc"}
    with pytest.raises(HeditError, match="with another model"):
        Journal(p, "sweep", {"a": 1}, model_id="xyz")


def test_a_torn_line_longer_than_a_read_chunk_is_trimmed_whole(tmp_path):
    """The tail is read back a chunk at a time: a torn line spanning several chunks goes whole."""
    from hedit.io.journal import _trim_torn_tail

    p = tmp_path / "j.jsonl"
    good = b'{"_hedit": "sweep"}\n{"x": 1}\n'
    p.write_bytes(good + b'{"x": "' + b"y" * 50)
    fd = os.open(p, os.O_RDWR)
    try:
        _trim_torn_tail(fd, p, chunk=8)
    finally:
        os.close(fd)
    assert p.read_bytes() == good
