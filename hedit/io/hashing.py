"""SHA-256 of source weight files, with a stat-keyed cache so repeated edits of a model are cheap.

Files inside a Hugging Face cache snapshot are links to ``blobs/<sha256>``; for those the digest is
read from the link target, which the Hub client checked on download.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path

from hedit.errors import HeditError
from hedit.io.files import hub_snapshot
from hedit.paths import cache_dir

CHUNK = 1 << 20  # 1 MiB reads
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


def sha256_file(path: Path, stop: threading.Event | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)  # releases the GIL: threads hash beside a kernel copy
            if stop is not None and stop.is_set():
                raise CancelledError
    return h.hexdigest()


def _known(path: Path, cache: dict[str, str]) -> str | None:
    if path.is_symlink():
        target = os.path.basename(os.readlink(path))
        if _BLOB.match(target) and path.resolve().parent.name == "blobs":
            return target
    return cache.get(_key(path))


class Hasher:
    """Hashes files in background threads; ``result()`` waits and stores new digests in the cache.

    ``hedit edit`` starts one and then copies the same files with the kernel: the copy and the hashing
    run on different cores and share the page cache (a cold 2.15 GB edit read from the disk: 0.74x a plain
    copy; from the page cache on 2 cores, where SHA-256 costs more core-time than the copy, 2.3x against a
    floor of 1.7x: ``benchmarks/bench_edit.py``, README "Editing")."""

    def __init__(self, paths: list[Path], threads: int | None = None):
        cache = _load_cache()
        # one thread per shard up to the cores (hashlib releases the GIL): a sharded checkpoint hashes in
        # about hash / cores beside the kernel's copy; one file is one SHA-256 stream, one core
        threads = threads or max(1, min(len(paths), os.cpu_count() or 2))
        self._pool = ThreadPoolExecutor(max_workers=threads)
        self._stop = threading.Event()
        self._jobs: dict[str, Future[str] | str] = {}
        self._new: dict[str, str] = {}
        self._paths = list(paths)
        self._keys = {p.name: _key(p) for p in paths}  # size, mtime and inode before any byte is read
        for p in paths:
            known = _known(p, cache)
            self._jobs[p.name] = known if known else self._pool.submit(self._run, p)

    def _run(self, p: Path) -> str:
        digest = sha256_file(p, self._stop)
        self._new[self._keys[p.name]] = digest
        return digest

    def result(self) -> dict[str, str]:
        """The digests; a source file that changed while hedit read it (its size, mtime or inode differ
        from before) is one HeditError: the artifact would mix two versions and its hash name neither."""
        out = {name: (j if isinstance(j, str) else j.result()) for name, j in self._jobs.items()}
        self._pool.shutdown()
        for p in self._paths:
            try:
                same = _key(p) == self._keys[p.name]
            except OSError:
                same = False
            if not same:
                raise HeditError(
                    f"the source file {p} changed while hedit read it; nothing was written: edit it again once "
                    "it is no longer being written"
                )
        _store_cache(self._new)
        return out

    def cancel(self) -> None:
        """Stop: queued files are dropped and running ones stop at their next chunk."""
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


FINGERPRINT_SAMPLE = 1 << 20  # bytes read at the start, middle and end of each weight file


def fingerprint(folder: str | Path) -> str:
    """A short digest that tells one model from another without reading its weights: a Hub snapshot's
    revision, else the SHA-256 of its config, tokenizer files and, per weight file, its name, size and
    three 1 MiB samples (a fine-tune of the same architecture differs in them). Journals record it, so
    a resumed run never mixes two models' answers."""
    folder = Path(folder)
    snap = hub_snapshot(folder)
    if snap and re.fullmatch(r"[0-9a-f]{40}", snap[1]):  # a commit: the Hub checked every byte of it
        return f"hub:{snap[0].name}@{snap[1]}"
    h = hashlib.sha256()
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    else:
        files = [folder]
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.name}\0{size}\0".encode())
        with open(p, "rb") as f:
            if size <= 3 * FINGERPRINT_SAMPLE:
                h.update(f.read())
            else:
                for at in (0, size // 2, size - FINGERPRINT_SAMPLE):
                    f.seek(at)
                    h.update(f.read(FINGERPRINT_SAMPLE))
    return h.hexdigest()
