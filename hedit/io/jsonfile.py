"""Reading JSON files hedit did not write: every failure is one HeditError that names the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hedit.errors import HeditError
from hedit.io.files import read_bytes


class _Duplicate(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Duplicate(k)
        out[k] = v
    return out


def loads(text: str | bytes, where: str) -> Any:
    """Parse JSON text; bad encoding, bad syntax, a key given twice in one object (which value would
    count?) or nesting too deep is a HeditError naming ``where``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise HeditError(f"{where} is not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_pairs)
    except _Duplicate as e:
        raise HeditError(f"{where}: the key {str(e)!r} appears twice in one object") from None
    except json.JSONDecodeError as e:
        raise HeditError(f"{where}: not valid JSON ({e.msg}, line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise HeditError(f"{where} is nested too deeply to be read") from None


def read_json(path: str | Path, what: str | None = None) -> Any:
    """The JSON value in ``path``; a missing, unreadable, non-UTF-8 or invalid file is one HeditError."""
    name = what or str(path)
    return loads(read_bytes(path, name, "json"), name)


def expect(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    """``value`` when it is of ``kind`` (bool is never an int), else a HeditError naming ``where``."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        names = " or ".join(
            {
                dict: "an object",
                list: "a list",
                str: "a string",
                int: "an integer",
                float: "a number",
                bool: "true or false",
            }.get(k, k.__name__)
            for k in kinds
        )
        raise HeditError(f"{where} must be {names}, got {type(value).__name__}")
    return value


def read_text(path: str | Path, what: str | None = None, kind: str = "text") -> str:
    """A UTF-8 text file's contents (a regular file of at most ``LIMITS[kind]`` bytes, no NUL
    character); a missing, unreadable, non-UTF-8 or binary file is one HeditError."""
    path = Path(path)
    name = what or str(path)
    data = read_bytes(path, name, kind)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HeditError(
            f"{name} is not UTF-8 text (byte {e.start}); is it really a {path.suffix or 'text'} file?"
        ) from None
    nul = data.find(b"\0")
    if nul >= 0:
        raise HeditError(f"{name} holds a NUL byte (at byte {nul}); not a text file")
    return text


def jsonl(path: str | Path, what: str | None = None) -> list[tuple[int, Any]]:
    """(line number, value) of every non-empty line of a JSONL file; a bad line is one HeditError."""
    out = []
    for n, line in enumerate(read_text(path, what).split("\n"), 1):  # JSON strings may hold U+2028
        if line.strip():
            out.append((n, loads(line, f"{path}:{n}")))
    return out
