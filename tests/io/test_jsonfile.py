"""Reading JSON hedit did not write (``hedit.io.jsonfile``): every failure one HeditError naming the file."""

import pytest

from hedit.errors import HeditError
from hedit.io.jsonfile import expect, jsonl, loads, read_json, read_text


def test_values_come_back_and_duplicate_keys_are_refused(tmp_path):
    (tmp_path / "a.json").write_text('{"x": [1, 2.5, "s", null, true], "y": {"z": {}}}')
    assert read_json(tmp_path / "a.json") == {"x": [1, 2.5, "s", None, True], "y": {"z": {}}}
    with pytest.raises(HeditError, match=r"^cfg: the key 'x' appears twice in one object$"):
        loads('{"a": {"x": 1, "x": 2}}', "cfg")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xff\xfe{}", r"f.json is not UTF-8 text \(byte 0\)"),
        (b'{"a": 1,\n "b": }', r"f.json: not valid JSON \(Expecting value, line 2, column 7\)"),
        (b"[" * 100_000 + b"]" * 100_000, "f.json is nested too deeply to be read"),
    ],
)
def test_bad_files_name_the_file_and_the_place(tmp_path, data, message):
    (tmp_path / "f.json").write_bytes(data)
    with pytest.raises(HeditError, match=message):
        read_json(tmp_path / "f.json", "f.json")


def test_expect_never_takes_a_bool_for_a_number():
    assert expect(3, int, "n") == 3 and expect(2.5, (int, float), "x") == 2.5 and expect(True, bool, "b") is True
    with pytest.raises(HeditError, match="^n must be an integer, got bool$"):
        expect(True, int, "n")
    with pytest.raises(HeditError, match="^m must be an object or a list, got str$"):
        expect("x", (dict, list), "m")


def test_text_files_refuse_nul_bytes_and_jsonl_names_the_bad_line(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"ok\0no")
    with pytest.raises(HeditError, match=r"holds a NUL byte \(at byte 2\)"):
        read_text(tmp_path / "t.txt")
    (tmp_path / "r.jsonl").write_text('{"a": 1}\n\n{"a": "\u2028"}\n{"a": \n')
    with pytest.raises(HeditError, match=r"r.jsonl:4: not valid JSON"):
        jsonl(tmp_path / "r.jsonl")
    (tmp_path / "r.jsonl").write_text('{"a": 1}\n\n{"a": "\u2028"}\n')
    assert jsonl(tmp_path / "r.jsonl") == [(1, {"a": 1}), (3, {"a": "\u2028"})]  # U+2028 is no line break
