"""Contained, atomic outputs: checked before any work, built beside the target, renamed into place.

Rules every writer follows (``check_target``):
- the output is never the source, inside it, or a folder that holds it; never the working directory
  or one of its parents;
- an existing output is replaced only with ``overwrite`` and only when it is a previous hedit output
  (a folder with ``hedit.json``, a features folder, or a file with its ``.hedit.json`` sidecar);
- the output is built in a temporary entry ``.NAME.hedit-PID-XXXX`` beside it and renamed into place
  with a rename that fails when the target appeared meanwhile (another run), so nothing is replaced
  silently. On any error, or SIGINT/SIGTERM/SIGHUP (the CLI turns those into exceptions), the
  temporary entry is removed; one left by a killed run (``kill -9``) is removed by the next run to
  the same output once its process is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from hedit.errors import HeditError

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _libc_renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


_RENAMEAT2 = _libc_renameat2()


def rename_noreplace(src: str | Path, dst: str | Path) -> None:
    """Rename ``src`` to ``dst``; FileExistsError when ``dst`` exists (atomic where the OS allows)."""
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "exists", str(dst))
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):  # no renameat2 here: check, then rename (a much narrower window)
        raise FileExistsError(errno.EEXIST, "exists", str(dst))
    os.rename(src, dst)


# ------------------------------------------------------------------------------------------ checks

SIDECAR = ".hedit.json"


def is_hedit_output(path: Path) -> bool:
    """A folder or file that hedit wrote: what ``--overwrite`` may replace."""
    if path.is_dir() and not path.is_symlink():
        for marker, keys in (("hedit.json", ("hedit_version",)), ("meta.json", ("hedit_version", "layout"))):
            try:
                data = json.loads((path / marker).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and any(k in data for k in keys):
                return True
        return False
    return path.is_file() and Path(f"{path}{SIDECAR}").is_file()


def check_target(target: str | Path, sources: Iterable[str | Path] = (), overwrite: bool = False) -> Path:
    """Refuse an output that would destroy or escape anything (see the module docstring)."""
    target = Path(target)
    t = target.resolve()
    cwd = Path.cwd().resolve()
    if t == cwd or t in cwd.parents:
        raise HeditError(f"output {target} is the working directory or one of its parents")
    if not target.name or target.name in (".", ".."):
        raise HeditError(f"output {target} is not a new file or folder name")
    for source in sources:
        s = Path(source).resolve()
        if t == s:
            raise HeditError(f"output {target} is the source {source}; the source is never modified")
        if s in t.parents:
            raise HeditError(f"output {target} is inside the source {source}; the source is never modified")
        if t in s.parents:
            raise HeditError(f"output {target} holds the source {source}; the source is never modified")
    parent = target.absolute().parent
    if not parent.is_dir():
        raise HeditError(f"folder {parent} does not exist")
    if os.path.lexists(target):
        if not overwrite:
            raise HeditError(f"output {target} already exists; pass --overwrite to replace it")
        if not is_hedit_output(target):
            raise HeditError(
                f"output {target} exists and is not a hedit output; --overwrite only replaces what hedit wrote"
            )
    return target


# ------------------------------------------------------------------------------------------ temporaries


def _prefix(target: Path) -> str:
    return f".{target.name}.hedit-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(target: str | Path) -> list[str]:
    """Remove temporary entries a killed run left beside ``target`` (their process is gone); returns
    their names. Entries of a live process are left alone."""
    target = Path(target)
    parent = target.absolute().parent
    pattern = re.compile(re.escape(_prefix(target)) + r"(\d+)-")
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    for name in names:
        m = pattern.match(name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        p = parent / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        removed.append(name)
    return removed


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _appeared(target: Path) -> HeditError:
    return HeditError(
        f"output {target} appeared while hedit was writing it (another run?); it was left as it "
        "is and nothing was written"
    )


def _install(tmp: Path, target: Path, overwrite: bool, any_output: bool = False) -> None:
    """Rename ``tmp`` to ``target``; with ``overwrite``, a previous hedit output there (or anything, with
    ``any_output``) is replaced."""
    if overwrite and os.path.lexists(target):
        if not any_output and not is_hedit_output(target):
            raise HeditError(
                f"output {target} exists and is not a hedit output; --overwrite only replaces what hedit wrote"
            )
        if not target.is_dir() or target.is_symlink():
            os.replace(tmp, target)  # a file: replaced in one step
            return
        old = Path(tempfile.mkdtemp(prefix=f"{_prefix(target)}{os.getpid()}-old-", dir=target.absolute().parent))
        os.replace(target, old / "x")
        try:
            rename_noreplace(tmp, target)
        except BaseException as e:
            with contextlib.suppress(OSError):
                rename_noreplace(old / "x", target)  # put the previous output back
            if isinstance(e, FileExistsError):
                raise _appeared(target) from None
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        rename_noreplace(tmp, target)
    except FileExistsError:
        raise _appeared(target) from None


@contextlib.contextmanager
def atomic_dir(
    target: str | Path, overwrite: bool = False, sources: Iterable[str | Path] = (), checked: bool = True
) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it becomes ``target``, on any error it is removed.
    ``checked=False`` skips ``check_target`` (hedit's own cache, which it may always replace)."""
    target = Path(target)
    if checked:
        check_target(target, sources, overwrite)
    elif os.path.lexists(target) and not target.is_dir():
        raise HeditError(f"output {target} exists and is not a folder")
    parent = target.absolute().parent
    if not parent.is_dir():
        raise HeditError(f"folder {parent} does not exist")
    remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_prefix(target)}{os.getpid()}-", dir=parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        _install(tmp, target, overwrite or not checked, any_output=not checked)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(target: str | Path, overwrite: bool = False, sources: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Like ``atomic_dir`` for one file: yields the path of a temporary file beside ``target``."""
    target = check_target(target, sources, overwrite)
    remove_stale(target)
    fd, name = tempfile.mkstemp(prefix=f"{_prefix(target)}{os.getpid()}-", dir=target.absolute().parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        _install(tmp, target, overwrite)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write a file through a temporary file beside it and a rename: readers see the old or the new."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f"{_prefix(target)}{os.getpid()}-", dir=target.absolute().parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
