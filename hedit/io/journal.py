"""Append-only JSONL journals: a header line naming the kind, the settings and the model, then one record
per line.

Writers append whole lines and fsync after each batch, so a crash loses at most the batch in flight;
a torn last line (a crash mid-write) is ignored on reading and trimmed before appending again. The
header is written with the first records, so a run that fails before it has any leaves no file. One
writer at a time: a second run to the same journal is refused (an exclusive ``flock``), and on resume
the header's settings and model fingerprint must be this run's. A record recorded twice (two runs that
merged their files, or a file edited by hand) is refused on reading.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hedit.errors import HeditError
from hedit.io.jsonfile import loads, read_text


def read_journal(
    path: str | Path, kind: str, check=None, key: Callable[[dict], Any] | None = None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(header, records) of a journal of ``kind``; (None, []) when the file does not exist. ``key``: what
    identifies a record; two records with one key are an error."""
    path = Path(path)
    if not os.path.lexists(path):
        return None, []
    if path.is_dir():
        raise HeditError(f"{path} is a folder, not a hedit {kind} file")
    header, records = None, []
    text = read_text(path, f"hedit {kind} file {path}", "journal")
    seen: dict[Any, int] = {}
    for n, line in enumerate(text.split("\n")[:-1] if text else [], 1):
        try:
            obj = loads(line, f"{path}:{n}")
        except HeditError as e:
            raise HeditError(f"{e}; not a hedit {kind} file?") from None
        if n == 1:
            if not isinstance(obj, dict) or obj.get("_hedit") != kind:
                raise HeditError(f"{path} is not a hedit {kind} file")
            header = obj
            continue
        if not isinstance(obj, dict) or (check is not None and not check(obj)):
            raise HeditError(f"{path}:{n}: not a {kind} record (a hedit file edited by hand?)")
        if key is not None:
            k = key(obj)
            if k in seen:
                raise HeditError(
                    f"{path}:{n}: {_show(k)} is recorded twice (also on line {seen[k]}); two runs wrote this "
                    "file, or it was edited by hand"
                )
            seen[k] = n
        records.append(obj)
    return header, records


def _show(k: Any) -> str:
    return f"question {k!r}" if isinstance(k, str) else "cell " + " ".join(str(x) for x in k)


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
KEYS = {"responses": lambda r: r["question_id"], "sweep": lambda r: (r["set"], float(r["alpha"]), r["task"])}


def _trim_torn_tail(fd: int, path: Path, chunk: int = 1 << 20) -> None:
    """Cut a last line that a crash left without its newline, reading back from the end a chunk at a
    time (a torn line may be longer than one chunk)."""
    size = os.fstat(fd).st_size
    if not size or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - chunk)
        nl = os.pread(fd, end - start, start).rfind(b"\n")
        if nl >= 0:
            os.truncate(path, start + nl + 1)
            return
        end = start
    os.truncate(path, 0)


class Journal:
    """Opens ``path`` for appending: checks the settings and the model of an existing journal, takes the
    writer's lock, trims a torn tail, and writes the header of a new one
    (``{"_hedit": kind, "config": settings, "model_id": ..., **extra}``) with its first records."""

    def __init__(
        self,
        path: str | Path,
        kind: str,
        settings: dict[str, Any],
        extra: dict[str, Any] | None = None,
        what: str = "written",
        check=None,
        model_id: str | None = None,
    ):
        self.path, self.kind, self.settings, self.what, self.check = Path(path), kind, settings, what, check
        self.model_id, self._created = model_id, False
        self._new_header = {"_hedit": kind, "config": settings} | (extra or {})
        if model_id is not None:
            self._new_header["model_id"] = model_id
        self._load()

    def _load(self) -> None:
        key = KEYS.get(self.kind) if self.check is not None else None  # only records checked to have a key
        self.header, self.records = read_journal(self.path, self.kind, self.check, key)
        if self.header is None:
            return
        if self.header.get("config") != self.settings:
            raise HeditError(
                f"{self.path} was {self.what} with other settings ({self.header.get('config')}); use another output"
            )
        theirs = self.header.get("model_id")
        if self.model_id is not None and theirs is not None and theirs != self.model_id:
            name = self.header.get("model") or self.header.get("config", {}).get("model") or "another model"
            raise HeditError(
                f"{self.path} was {self.what} with another model ({name}, fingerprint {str(theirs)[:12]}, not "
                f"{self.model_id[:12]}); use another output"
            )

    def __enter__(self) -> Journal:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not os.path.lexists(self.path)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            raise HeditError(f"cannot write {self.path}: {e.strerror}") from None
        self._created = created
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise HeditError(
                    f"another hedit run is writing {self.path}; wait for it, or write to another output"
                ) from None
            self._load()  # what the file holds now that no one else writes it
            if self.header is not None:
                _trim_torn_tail(fd, self.path)
        except BaseException:
            os.close(fd)
            self._drop_if_empty()
            raise
        self._fd = fd
        return self

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Appends records in one write, then fsync: a crash loses at most this call's records (a write
        that fails midway, a full disk, is cut back to the last whole line). ``self.records`` holds every
        record of the journal, old and new."""
        records = list(records)
        objs = records
        if self.header is None and records:
            self.header = self._new_header
            objs = [self.header, *records]
        self._write(objs)
        self.records.extend(records)

    def _write(self, objs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r) + "\n" for r in objs).encode("utf-8")
        if not data:
            return
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:  # O_APPEND: every write lands at the end
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.truncate(self.path, size)  # no torn line left behind
            if e.errno == errno.ENOSPC:
                raise HeditError(
                    f"no space left on the device writing {self.path}; it keeps the records before this batch"
                ) from None
            raise

    def _drop_if_empty(self) -> None:
        if self._created:
            with contextlib.suppress(OSError):
                if os.path.getsize(self.path) == 0:
                    os.unlink(self.path)

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._drop_if_empty()
