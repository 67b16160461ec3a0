import json

import pytest

from hedit.errors import HeditError
from hedit.io.journal import Journal, read_journal


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
    with Journal(p, "sweep", {"a": 1}):
        pass
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
