"""Copies that cost only what changes: a file clone where the filesystem can make one (``FICLONE`` on
Linux: XFS, Btrfs, bcachefs, OCFS2; ``clonefile`` on macOS: APFS), which shares every block with the source
until a block is written; else the kernel's own copy (``copy_file_range``: no bytes through user space,
and on NFS 4.2 or a CIFS share a copy on the server); else a plain copy.

``clone_file`` says which it did; ``$HEDIT_CLONE=copy`` forces a plain copy (to compare the two paths).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
_NO_CLONE = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EBADF}
_NO_RANGE = _NO_CLONE | {errno.EIO}


def clone_file(src: str | Path, dst: str | Path) -> str:
    """Copy ``src`` to a new file ``dst`` (which must not exist, or is replaced); "clone",
    "copy_file_range" or "copy"."""
    if os.environ.get("HEDIT_CLONE") != "copy":
        if sys.platform == "darwin" and _clonefile(src, dst):
            return "clone"
        if sys.platform.startswith("linux"):
            how = _linux(src, dst)
            if how:
                return how
    shutil.copyfile(src, dst)
    return "copy"


def _linux(src, dst) -> str | None:
    import fcntl

    sfd = os.open(src, os.O_RDONLY)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            try:
                fcntl.ioctl(dfd, FICLONE, sfd)
                return "clone"
            except OSError as e:
                if e.errno not in _NO_CLONE:
                    raise
            size, done = os.fstat(sfd).st_size, 0
            try:
                while done < size:
                    n = os.copy_file_range(sfd, dfd, size - done, done, done)
                    if n == 0:
                        break
                    done += n
            except OSError as e:
                if e.errno not in _NO_RANGE:
                    raise
                return None
            return "copy_file_range" if done == size else None
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _clonefile(src, dst) -> bool:
    """macOS ``clonefile(2)`` (APFS); False where it is not available."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.clonefile
    except (OSError, AttributeError):
        return False
    if os.path.lexists(dst):
        os.unlink(dst)
    return fn(os.fsencode(str(src)), os.fsencode(str(dst)), 0) == 0
