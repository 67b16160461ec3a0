"""Reading JSON files hedit did not write: every failure is one HeditError that names the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hedit.errors import HeditError

MAX_BYTES = 256 * 1024 * 1024


def loads(text: str | bytes, where: str) -> Any:
    """Parse JSON text; bad encoding, bad syntax or nesting too deep is a HeditError naming ``where``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise HeditError(f"{where} is not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise HeditError(f"{where}: not valid JSON ({e.msg}, line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise HeditError(f"{where} is nested too deeply to be read") from None


def read_json(path: str | Path, what: str | None = None) -> Any:
    """The JSON value in ``path``; a missing, unreadable, non-UTF-8 or invalid file is one HeditError."""
    path = Path(path)
    name = what or str(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise HeditError(f"{name} is too large for a JSON file ({path.stat().st_size} bytes)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise HeditError(f"{name} not found") from None
    except IsADirectoryError:
        raise HeditError(f"{name} is a folder, not a JSON file") from None
    except OSError as e:
        raise HeditError(f"cannot read {name}: {e.strerror}") from None
    return loads(data, name)


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


def read_text(path: str | Path, what: str | None = None) -> str:
    """A UTF-8 text file's contents; a missing, unreadable or non-UTF-8 file is one HeditError."""
    path = Path(path)
    name = what or str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise HeditError(f"{name} not found") from None
    except IsADirectoryError:
        raise HeditError(f"{name} is a folder, not a file") from None
    except OSError as e:
        raise HeditError(f"cannot read {name}: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HeditError(
            f"{name} is not UTF-8 text (byte {e.start}); is it really a {path.suffix or 'text'} file?"
        ) from None


def jsonl(path: str | Path, what: str | None = None) -> list[tuple[int, Any]]:
    """(line number, value) of every non-empty line of a JSONL file; a bad line is one HeditError."""
    out = []
    for n, line in enumerate(read_text(path, what).split("\n"), 1):  # JSON strings may hold U+2028
        if line.strip():
            out.append((n, loads(line, f"{path}:{n}")))
    return out
