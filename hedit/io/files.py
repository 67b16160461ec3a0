"""Untrusted input, bounded: files hedit did not write, the folders models come in, and work that such
input could make endless. Every file is a regular file, read with a size bound that fits its kind; a
model folder contributes no link that leaves it and no device, FIFO or socket; rendering a chat
template has a time limit (``time_limit``).

A FIFO is opened without blocking (``O_NONBLOCK``) and refused after ``fstat``, so no read ever waits
on a writer that never comes; ``/dev/zero`` and its links are refused the same way, before a byte is
read. Limits are per kind (``LIMITS``): a neurons file is kilobytes, a responses journal can be
gigabytes, neither is ever read without a bound.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from hedit.errors import HeditError

MiB = 1 << 20
LIMITS = {
    "json": 256 * MiB,  # configs, neurons files, reports, tokenizer configs
    "text": 1024 * MiB,  # question files, CSV
    "journal": 8192 * MiB,  # responses and sweep journals
    "recipe": 1 * MiB,
    "plot": 64 * MiB,  # the PNG plots of a neuron set or an artifact's evidence
}


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: str | Path, what: str | None = None) -> int:
    """A read-only descriptor of ``path``, which must be (or link to) a regular file; never blocks."""
    name = what or str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise HeditError(f"{name} not found") from None
    except IsADirectoryError:
        raise HeditError(f"{name} is a folder, not a file") from None
    except OSError as e:
        raise HeditError(f"cannot read {name}: {e.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise HeditError(f"{name} is {_kind_of(mode)}, not a regular file")
    return fd


def read_bytes(path: str | Path, what: str | None = None, kind: str = "json") -> bytes:
    """The bytes of a regular file, at most ``LIMITS[kind]`` of them (a larger file is one HeditError)."""
    name = what or str(path)
    limit = LIMITS[kind]
    fd = open_regular(path, name)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise HeditError(f"{name} is too large ({size} bytes; a {kind} file is at most {limit} bytes)")
        chunks, total = [], 0
        while True:  # the file may grow while it is read: never past the limit
            try:
                chunk = os.read(fd, min(MiB * 16, limit + 1 - total))
            except OSError as e:
                raise HeditError(f"cannot read {name}: {e.strerror}") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise HeditError(f"{name} is too large (more than {limit} bytes for a {kind} file)")
        return b"".join(chunks)
    finally:
        os.close(fd)


def check_regular(path: str | Path, what: str | None = None) -> Path:
    """``path`` when it is (or links to) a regular file; else one HeditError."""
    os.close(open_regular(path, what))
    return Path(path)


def pwrite_all(fd: int, data, offset: int) -> None:
    """All of ``data`` written at ``offset``: ``os.pwrite`` may write fewer bytes than asked (a signal, a
    filesystem's own limit), and the rest follows; a write that makes no progress is an OSError, not a
    loop without end. Every positional write of hedit (edited rows, tensors, GGUF blocks, features)."""
    view, done = memoryview(data).cast("B"), 0
    while done < len(view):
        n = os.pwrite(fd, view[done:], offset + done)
        if n <= 0:
            raise OSError(errno.EIO, f"a write at byte {offset + done} wrote nothing")
        done += n


# ------------------------------------------------------------------------------------------ model folders


def hub_snapshot(folder: str | Path) -> tuple[Path, str] | None:
    """(the repository's cache folder, the revision) when ``folder`` is a Hugging Face cache snapshot
    (``.../models--owner--name/snapshots/<rev>``), else None."""
    folder = Path(folder).absolute()
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith(("models--", "datasets--")):
        return folder.parent.parent, folder.name
    return None


def allowed_root(folder: Path) -> Path:
    """Where links inside a model folder may point: the folder itself, or for a Hugging Face cache
    snapshot, that repository's cache folder (its ``blobs/``)."""
    snap = hub_snapshot(folder)
    return (snap[0] if snap else folder).resolve()


def check_inside(path: str | Path, root: Path, what: str) -> Path:
    """``path`` when it, after every link on its way (a linked file or a linked folder above it), stays
    inside ``root`` (see ``allowed_root``) and is a regular file; else one HeditError. Every file hedit
    copies into an artifact or pushes passes here: no link out is ever copied or pushed."""
    path = Path(path)
    target = path.resolve()
    if root != target and root not in target.parents:
        raise HeditError(f"{what}: {path} is a link to outside {root}; hedit never copies or pushes it")
    return check_regular(path, f"{what}: {path}")


def check_model_folder(folder: str | Path) -> Path:
    """Refuse a model folder with a link that leaves it (``tokenizer.json`` -> a key file elsewhere) or
    an entry that is a device, FIFO or socket: hedit copies and pushes what a source contributes."""
    folder = Path(folder)
    root = allowed_root(folder)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise HeditError(f"cannot read the folder {folder}: {e.strerror}") from None
    for entry in entries:
        p = Path(entry.path)
        if entry.is_symlink():
            target = p.resolve()
            if root != target and root not in target.parents:
                raise HeditError(f"{folder}: {entry.name} is a link to outside the model folder; hedit never copies it")
        try:
            mode = p.stat().st_mode
        except OSError:
            raise HeditError(f"{folder}: {entry.name} is a broken link") from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise HeditError(f"{folder}: {entry.name} is {_kind_of(mode)}, not a regular file")
    return folder


# ------------------------------------------------------------------------------------------ time


@contextlib.contextmanager
def time_limit(seconds: float, message: str) -> Iterator[None]:
    """Run the block for at most ``seconds`` (wall clock), else one HeditError with ``message``: for work
    on untrusted input that could loop (a chat template with nested 100,000-step loops). Uses SIGALRM,
    so it bounds the block only in the main thread; elsewhere the block runs unbounded."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expired(signum, frame):
        raise _Expired

    old = signal.signal(signal.SIGALRM, expired)
    start = time.monotonic()
    before = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Expired:
        raise HeditError(message) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if before[0]:  # an outer timer keeps running, less the time spent here
            signal.setitimer(signal.ITIMER_REAL, max(before[0] - (time.monotonic() - start), 1e-3))


class _Expired(BaseException):
    """Raised by the alarm: a BaseException, so the block's own ``except Exception`` cannot swallow it."""
