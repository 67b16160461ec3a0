"""Append-only JSONL journals: a header line naming the kind and settings, then one record per line.

Writers append whole lines and fsync after each batch, so a crash loses at most the batch in flight;
a torn last line (a crash mid-write) is ignored on reading and trimmed before appending again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hedit.errors import HeditError
from hedit.io.jsonfile import loads, read_text


def read_journal(path: str | Path, kind: str, check=None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(header, records) of a journal of ``kind``; (None, []) when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return None, []
    if path.is_dir():
        raise HeditError(f"{path} is a folder, not a hedit {kind} file")
    header, records = None, []
    text = read_text(path, f"hedit {kind} file {path}")
    for n, line in enumerate(text.split("\n")[:-1] if text else [], 1):
        try:
            obj = loads(line, f"{path}:{n}")
        except HeditError as e:
            raise HeditError(f"{e}; not a hedit {kind} file?") from None
        if n == 1:
            if not isinstance(obj, dict) or obj.get("_hedit") != kind:
                raise HeditError(f"{path} is not a hedit {kind} file")
            header = obj
        else:
            if not isinstance(obj, dict) or (check is not None and not check(obj)):
                raise HeditError(f"{path}:{n}: not a {kind} record (a hedit file edited by hand?)")
            records.append(obj)
    return header, records


def _ints(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in x)


def _response(r: dict) -> bool:
    samples = r.get("samples")
    return (
        isinstance(r.get("question_id"), str)
        and _ints(r.get("prompt_ids"))
        and isinstance(samples, list)
        and isinstance(r.get("aliases"), list)
        and all(
            isinstance(s, dict)
            and isinstance(s.get("response"), str)
            and _ints(s.get("response_ids"))
            and isinstance(s.get("label"), str)
            for s in samples
        )
    )


def _cell(r: dict) -> bool:
    return (
        isinstance(r.get("set"), str)
        and isinstance(r.get("alpha"), (int, float))
        and isinstance(r.get("task"), str)
        and (isinstance(r.get("items"), list) or "value" in r)
    )


CHECKS = {"responses": _response, "sweep": _cell}  # what the stages that read them pass as ``check``


class Journal:
    """Opens ``path`` for appending: checks the settings of an existing journal, trims a torn tail,
    writes the header of a new one (``{"_hedit": kind, "config": settings, **extra}``)."""

    def __init__(
        self,
        path: str | Path,
        kind: str,
        settings: dict[str, Any],
        extra: dict[str, Any] | None = None,
        what: str = "written",
        check=None,
    ):
        self.path = Path(path)
        self.header, self.records = read_journal(self.path, kind, check)
        if self.header is not None and self.header.get("config") != settings:
            raise HeditError(
                f"{self.path} was {what} with other settings ({self.header.get('config')}); use another output"
            )
        self._new_header = {"_hedit": kind, "config": settings} | (extra or {})

    def __enter__(self) -> Journal:
        if self.header is not None:
            data = self.path.read_bytes()
            if not data.endswith(b"\n"):
                with open(self.path, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        if self.header is None:
            self.header = self._new_header
            self._write([self.header])
        return self

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Appends records in one write, then fsync: a crash loses at most this call's records.
        ``self.records`` holds every record of the journal, old and new."""
        records = list(records)
        self._write(records)
        self.records.extend(records)

    def _write(self, objs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r) + "\n" for r in objs)
        if text:
            self._f.write(text)
            self._f.flush()
            os.fsync(self._f.fileno())

    def __exit__(self, *exc) -> None:
        self._f.close()
