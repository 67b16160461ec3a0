"""Append-only JSONL journals: a header line naming the kind and settings, then one record per line.

Writers append whole lines and fsync after each batch, so a crash loses at most the batch in flight;
a torn last line (a crash mid-write) is ignored on reading and trimmed before appending again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from hedit.errors import HeditError


def read_journal(path: str | Path, kind: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(header, records) of a journal of ``kind``; (None, []) when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return None, []
    header, records = None, []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(keepends=True), 1):
        if not line.endswith("\n"):
            break  # torn write
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise HeditError(f"{path}:{n}: not valid JSON; not a hedit {kind} file?") from None
        if n == 1:
            if not isinstance(obj, dict) or obj.get("_hedit") != kind:
                raise HeditError(f"{path} is not a hedit {kind} file")
            header = obj
        else:
            records.append(obj)
    return header, records


class Journal:
    """Opens ``path`` for appending: checks the settings of an existing journal, trims a torn tail,
    writes the header of a new one (``{"_hedit": kind, "config": settings, **extra}``)."""

    def __init__(self, path: str | Path, kind: str, settings: dict[str, Any], extra: dict[str, Any] | None = None,
                 what: str = "written"):
        self.path = Path(path)
        self.header, self.records = read_journal(self.path, kind)
        if self.header is not None and self.header.get("config") != settings:
            raise HeditError(f"{self.path} was {what} with other settings ({self.header.get('config')}); "
                             "use another output")
        self._new_header = {"_hedit": kind, "config": settings} | (extra or {})

    def __enter__(self) -> "Journal":
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
