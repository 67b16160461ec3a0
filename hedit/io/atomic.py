"""Contained, atomic outputs: checked before any work, built beside the target, renamed into place.

Rules every writer follows (``check_place`` for every path any command writes, journals and work
folders included; ``check_target`` adds the rest for artifacts):
- the output is never an input of the command (the model, the neurons file, the responses...), inside
  one, or a folder that holds one, links followed; never inside a model folder (a ``config.json``
  beside weights, or a folder hedit wrote); never the working directory or one of its parents;
- an existing output is replaced only with ``overwrite`` and only when it is a previous hedit output of
  the same kind (a folder with ``hedit.json``, a features folder, or a file with its ``.hedit.json``
  sidecar); a full disk while writing is one line naming the output (``disk_error``);
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
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

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
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")


def is_hedit_output(path: Path, kind: str = "any") -> bool:
    """A folder or file that hedit wrote: what ``--overwrite`` may replace. ``kind``: ``artifact`` (a
    folder with ``hedit.json``), ``features`` (a features folder), ``file`` (a file with its
    ``.hedit.json`` sidecar), or ``any`` of them."""
    if path.is_dir() and not path.is_symlink():
        markers = {
            "artifact": ("hedit.json", ("hedit_version",)),
            "features": ("meta.json", ("hedit_version", "layout")),
        }
        for name, (marker, keys) in markers.items():
            if kind not in ("any", name):
                continue
            try:
                data = json.loads((path / marker).read_bytes()) if (path / marker).is_file() else None
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and any(k in data for k in keys):
                return True
        return False
    return kind in ("any", "file") and is_hedit_file(path)


def fingerprint(path: str | Path) -> dict[str, Any]:
    """What ties a single-file output to its ``.hedit.json`` sidecar: the file's size and a SHA-256 of
    its first and last MiB (constant time, whatever the file's size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
        h.update(f.read(1 << 20))
    return {"size": size, "sha256_ends": h.hexdigest()}


def is_hedit_file(path: Path) -> bool:
    """``path`` is a file hedit wrote: its sidecar is a regular file (not a link) that hedit wrote, and
    the fingerprint it records is the file's own. Any other file beside a ``.hedit.json``, even one of
    hedit's outputs changed since, is the user's."""
    sidecar = Path(f"{path}{SIDECAR}")
    try:
        if path.is_symlink() or not path.is_file() or sidecar.is_symlink() or not sidecar.is_file():
            return False
        if sidecar.stat().st_size > 1 << 20:
            return False
        data = json.loads(sidecar.read_bytes())
        return isinstance(data, dict) and "hedit_version" in data and data.get("output") == fingerprint(path)
    except (OSError, ValueError, RecursionError):
        return False


def is_model_folder(path: Path) -> bool:
    """A folder that holds a model: a ``config.json`` beside weights, or an artifact hedit wrote."""
    try:
        if not path.is_dir():
            return False
        if (path / "hedit.json").is_file():
            return True
        return (path / "config.json").is_file() and any(
            n.endswith(WEIGHT_SUFFIXES) or n == "model.safetensors.index.json" for n in os.listdir(path)
        )
    except OSError:
        return False


def _inputs(sources: Iterable[str | Path | tuple[str, str | Path]]) -> list[tuple[str, Path]]:
    out = []
    for s in sources:
        role, p = s if isinstance(s, tuple) else ("source", s)
        if p is not None and os.path.lexists(p):  # what does not exist cannot be replaced or removed
            out.append((role, Path(p)))
    return out


def check_place(
    target: str | Path, sources: Iterable[str | Path | tuple[str, str | Path]] = (), replaces: bool = False
) -> Path:
    """The one rule for every path hedit writes (an artifact, a journal, a work folder), links followed:
    it is never an input (``sources``: the model and every file the command reads, given as paths or
    (role, path)), never inside one, never a folder that holds one, and never inside a model folder
    (hedit writes beside models, not into them). ``replaces``: ``target`` itself may be a previous
    output that the caller's own rules let it replace (``check_target``); otherwise a work folder or a
    journal that is a model folder is refused too."""
    target = Path(target)
    t = target.resolve()
    for role, src in _inputs(sources):
        s = src.resolve()
        if t == s:
            raise HeditError(f"output {target} is the {role} {src}; hedit never replaces what it reads")
        if s in t.parents:
            raise HeditError(f"output {target} is inside the {role} {src}; hedit never writes into what it reads")
        if t in s.parents:
            raise HeditError(f"output {target} holds the {role} {src}; hedit never removes what it reads")
    for folder in ([] if replaces else [t]) + list(t.parents):
        if is_model_folder(folder):
            where = "is" if folder == t else "is inside"
            raise HeditError(f"output {target} {where} the model folder {folder}; hedit never writes into a model")
    return target


def check_work(work: str | Path, sources: Iterable[str | Path | tuple[str, str | Path]] = ()) -> Path:
    """A work folder (``identify --work``, ``sweep --out``, a recipe's ``work``), which hedit creates
    and fills over several runs: a folder (or nothing yet), never a model folder or inside one, never
    an input (``check_place``)."""
    work = Path(work)
    if os.path.lexists(work) and not work.is_dir():
        raise HeditError(f"{work} is a file, not a folder; give a folder for the work")
    for p in work.absolute().parents:
        if os.path.lexists(p) and not p.is_dir():
            raise HeditError(f"cannot create {work}: {p} is a file, not a folder")
    return check_place(work, sources)


def check_target(
    target: str | Path,
    sources: Iterable[str | Path | tuple[str, str | Path]] = (),
    overwrite: bool = False,
    kind: str = "any",
) -> Path:
    """Refuse an output that would destroy or escape anything (see the module docstring); with
    ``overwrite``, an existing output is replaced only when it is a hedit output of ``kind``."""
    target = Path(target)
    t = target.resolve()
    cwd = Path.cwd().resolve()
    if t == cwd or t in cwd.parents:
        raise HeditError(f"output {target} is the working directory or one of its parents")
    if not target.name or target.name in (".", ".."):
        raise HeditError(f"output {target} is not a new file or folder name")
    check_place(target, sources, replaces=True)
    parent = target.absolute().parent
    if not parent.is_dir():
        if os.path.lexists(parent):
            raise HeditError(f"cannot write {target}: {parent} is a file, not a folder")
        raise HeditError(f"folder {parent} does not exist")
    if os.path.lexists(target):
        if not overwrite:
            raise HeditError(f"output {target} already exists; pass --overwrite to replace it")
        if not is_hedit_output(target, kind):
            what = " of this kind (features replace only a features folder)" if kind == "features" else ""
            raise HeditError(
                f"output {target} exists and is not a hedit output{what}; --overwrite only replaces what hedit wrote"
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


def _install(tmp: Path, target: Path, overwrite: bool, any_output: bool = False, kind: str = "any") -> None:
    """Rename ``tmp`` to ``target``; with ``overwrite``, a previous hedit output there (or anything, with
    ``any_output``) is replaced."""
    if overwrite and os.path.lexists(target):
        if not any_output and not is_hedit_output(target, kind):
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
    target: str | Path,
    overwrite: bool = False,
    sources: Iterable[str | Path | tuple[str, str | Path]] = (),
    checked: bool = True,
    kind: str = "any",
) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it becomes ``target``, on any error it is removed.
    ``checked=False`` skips ``check_target`` (hedit's own cache, which it may always replace)."""
    target = Path(target)
    if checked:
        check_target(target, sources, overwrite, kind)
    elif os.path.lexists(target) and not target.is_dir():
        raise HeditError(f"output {target} exists and is not a folder")
    parent = target.absolute().parent
    if not parent.is_dir():
        raise HeditError(f"folder {parent} does not exist")
    remove_stale(target)
    tmp = Path(_temp(target, tempfile.mkdtemp))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        _install(tmp, target, overwrite or not checked, any_output=not checked, kind=kind)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if (disk := disk_error(e, target)) is not None:
            raise disk from None
        raise


@contextlib.contextmanager
def atomic_file(
    target: str | Path,
    overwrite: bool = False,
    sources: Iterable[str | Path | tuple[str, str | Path]] = (),
    kind: str = "any",
) -> Iterator[Path]:
    """Like ``atomic_dir`` for one file: yields the path of a temporary file beside ``target``."""
    target = check_target(target, sources, overwrite, kind)
    remove_stale(target)
    fd, name = _temp(target, tempfile.mkstemp)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        _install(tmp, target, overwrite, kind=kind)
    except BaseException as e:
        _remove(tmp)
        if (disk := disk_error(e, target)) is not None:
            raise disk from None
        raise


def disk_error(e: BaseException, target: Path) -> HeditError | None:
    """A one-line error naming ``target`` for a full or read-only disk met while writing it (wherever it
    struck: a kernel copy names its source file, the safetensors writer raises its own error type);
    None for any other error."""
    code = e.errno if isinstance(e, OSError) else None
    text = str(e)
    if code == errno.ENOSPC or "No space left on device" in text or "os error 28" in text:
        return HeditError(f"no space left on the device writing {target}; no part of {target.name} was left")
    if code in (errno.EROFS, errno.EDQUOT):
        return HeditError(f"cannot write {target}: {e.strerror}; no part of {target.name} was left")
    return None


def _temp(target: Path, make):
    """A temporary entry beside ``target`` (``make``: mkstemp or mkdtemp); an error names ``target``, not
    the hidden entry (a read-only folder, a name too long)."""
    parent = target.absolute().parent
    try:
        return make(prefix=f"{_prefix(target)}{os.getpid()}-", dir=parent)
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise HeditError(f"cannot write {target}: the name is too long for the file system") from None
        if e.errno == errno.ENOSPC:
            raise HeditError(f"no space left on the device to write {target}; no part of it was left") from None
        raise HeditError(f"cannot write {target}: {e.strerror} ({parent})") from None


def stage_text(target: str | Path, text: str | bytes) -> Path:
    """A temporary file beside ``target`` holding ``text``, written and synced, for the caller to rename
    onto ``target`` (``os.replace``) when the moment comes, or to remove; on any error nothing is left."""
    target = Path(target)
    fd, tmp = _temp(target, tempfile.mkstemp)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        return Path(tmp)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if (disk := disk_error(e, target)) is not None:
            raise disk from None
        raise


def atomic_write_text(target: str | Path, text: str | bytes) -> None:
    """Write a file through a temporary file beside it and a rename: readers see the old or the new."""
    tmp = stage_text(target, text)
    try:
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_png(fig, target: str | Path, dpi: int = 120) -> None:
    """A matplotlib figure written as PNG atomically: a full disk leaves no empty or torn plot."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_text(target, buf.getvalue())
