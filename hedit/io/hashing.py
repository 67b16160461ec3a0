"""SHA-256 of source weight files, with a stat-keyed cache so repeated edits of a model are cheap.

Files inside a Hugging Face cache snapshot are links to ``blobs/<sha256>``; for those the digest is
read from the link target, which the Hub client checked on download.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..paths import cache_dir

CHUNK = 1 << 20  # 1 MiB: stays in cache while one thread hashes and another writes it
_BLOB = re.compile(r"^[0-9a-f]{64}$")


def cache_file() -> Path:
    return cache_dir() / "sha256.json"


def _key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


def _load_cache() -> dict[str, str]:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _store_cache(new: dict[str, str]) -> None:
    if not new:
        return
    f = cache_file()
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        data = _load_cache()
        data.update(new)
        tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, f)
    except OSError:
        pass  # a read-only home is no reason to fail an edit


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)  # releases the GIL: runs beside the copy
    return h.hexdigest()


def _known(path: Path, cache: dict[str, str]) -> str | None:
    if path.is_symlink():
        target = os.path.basename(os.readlink(path))
        if _BLOB.match(target) and path.resolve().parent.name == "blobs":
            return target
    return cache.get(_key(path))


def known_sha256(paths: list[Path]) -> dict[Path, str | None]:
    """Digests found without reading the files (a Hub-cache blob name or hedit's stat-keyed cache);
    None for a file that must be hashed. The cache is read once for all files."""
    cache = _load_cache()
    return {p: _known(p, cache) for p in paths}


def remember(digests: dict[Path, str]) -> None:
    """Store digests computed elsewhere (by copy_with_sha256) in the cache."""
    _store_cache({_key(p): d for p, d in digests.items()})


def copy_with_sha256(src: Path, dst: Path, chunk: int = CHUNK) -> str:
    """Copy ``src`` to ``dst`` reading each byte once; a second thread hashes a chunk while it is written.

    Three buffers rotate: chunk i reuses the buffer of chunk i-3, whose hash is waited for first.
    """
    h = hashlib.sha256()
    bufs = [bytearray(chunk) for _ in range(3)]
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=1) as pool, open(src, "rb", buffering=0) as fi, \
            open(dst, "wb", buffering=0) as fo:
        i = 0
        while True:
            while len(pending) > 2:
                pending.popleft().result()
            buf = bufs[i % 3]
            n = fi.readinto(buf)
            if not n:
                break
            view = memoryview(buf)[:n]
            pending.append(pool.submit(h.update, view))  # FIFO on one thread: hashed in order
            done = 0
            while done < n:
                done += fo.write(view[done:])
            i += 1
        for f in pending:
            f.result()
    return h.hexdigest()


class Hasher:
    """Hashes files in background threads; ``result()`` waits and stores new digests in the cache."""

    def __init__(self, paths: list[Path], threads: int = 2):
        cache = _load_cache()
        self._pool = ThreadPoolExecutor(max_workers=threads)
        self._jobs: dict[str, Future[str] | str] = {}
        self._new: dict[str, str] = {}
        for p in paths:
            known = _known(p, cache)
            self._jobs[p.name] = known if known else self._pool.submit(self._run, p)

    def _run(self, p: Path) -> str:
        digest = sha256_file(p)
        self._new[_key(p)] = digest
        return digest

    def result(self) -> dict[str, str]:
        out = {name: (j if isinstance(j, str) else j.result()) for name, j in self._jobs.items()}
        self._pool.shutdown()
        _store_cache(self._new)
        return out

    def cancel(self) -> None:
        self._pool.shutdown(cancel_futures=True)
