import hashlib
import os

from hedit.io import hashing
from hedit.io.hashing import Hasher


def test_digests_are_sha256_and_cached(tmp_path, monkeypatch):
    files = []
    for i in range(3):
        p = tmp_path / f"w{i}.safetensors"
        p.write_bytes(os.urandom(100_000 + i))
        files.append(p)
    want = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert Hasher(files).result() == want
    assert hashing.cache_file().is_file()

    def boom(path):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(hashing, "sha256_file", boom)
    assert Hasher(files).result() == want


def test_changed_file_is_hashed_again(tmp_path):
    p = tmp_path / "w.safetensors"
    p.write_bytes(b"one")
    Hasher([p]).result()
    p.write_bytes(b"two!")
    assert Hasher([p]).result()[p.name] == hashlib.sha256(b"two!").hexdigest()


def test_hub_cache_blob_names_are_trusted(tmp_path, monkeypatch):
    digest = "ab" * 32
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / digest).write_bytes(b"data")
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "model.safetensors").symlink_to(f"../blobs/{digest}")
    monkeypatch.setattr(hashing, "sha256_file", lambda p: "computed")
    assert Hasher([tmp_path / "snap" / "model.safetensors"]).result() == {"model.safetensors": digest}


def test_edit_fills_the_cache(checkpoint, tmp_path, monkeypatch):
    from hedit.edit.checkpoint import edit_checkpoint

    from conftest import neuron_set

    src = checkpoint("llama", shards=True)
    edit_checkpoint(src, neuron_set(), tmp_path / "a", alpha=0.0, progress=False)
    monkeypatch.setattr(hashing, "sha256_file", None)  # a second edit must not hash again
    edit_checkpoint(src, neuron_set(), tmp_path / "b", alpha=0.0, progress=False)
    assert (tmp_path / "a" / "hedit.json").read_text().split('"weight_sha256"')[1].split("}")[0] == (
        tmp_path / "b" / "hedit.json"
    ).read_text().split('"weight_sha256"')[1].split("}")[0]


def test_a_sharded_hub_snapshot_is_edited_with_its_digests_from_the_blob_names(checkpoint, tmp_path, monkeypatch):
    """A Hub cache snapshot's shards are links into blobs/<sha256>: they are the model's own files, and
    their digests are free (nothing is hashed)."""
    import hashlib
    import json
    import shutil

    import hedit.io.hashing
    from hedit.edit.writers import write_artifact

    from conftest import neuron_set

    src = checkpoint("llama", shards=True)
    repo = tmp_path / "models--team--tiny"
    snap, blobs = repo / "snapshots" / ("a" * 40), repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    want = {}
    for p in sorted(src.iterdir()):
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        shutil.copyfile(p, blobs / digest)
        (snap / p.name).symlink_to(f"../../blobs/{digest}")
        want[p.name] = digest

    def no_hashing(*a, **k):
        raise AssertionError("a blob's digest is its name: nothing should be hashed")

    monkeypatch.setattr(hedit.io.hashing, "sha256_file", no_hashing)
    write_artifact(snap, neuron_set(), tmp_path / "out", alpha=0.0)
    got = json.loads((tmp_path / "out" / "hedit.json").read_text())["source"]["weight_sha256"]
    assert got == {k: v for k, v in want.items() if k.endswith(".safetensors")} and len(got) > 1


def test_a_source_changed_while_it_is_read_is_refused_and_not_cached(tmp_path, monkeypatch):
    """The digest is of the bytes read: when the file's size, mtime or inode move while hedit reads it, the
    edit stops with one line instead of recording a hash of neither version (nor caching it)."""
    import pytest

    from hedit.errors import HeditError

    p = tmp_path / "w.safetensors"
    p.write_bytes(b"one" * 1000)
    real = hashing.sha256_file

    def reads_then_changes(path, stop=None):
        digest = real(path, stop)
        path.write_bytes(b"two" * 1001)  # another process rewrote the file meanwhile
        return digest

    monkeypatch.setattr(hashing, "sha256_file", reads_then_changes)
    with pytest.raises(HeditError, match="changed while hedit read it; nothing was written"):
        Hasher([p]).result()
    monkeypatch.setattr(hashing, "sha256_file", real)
    assert Hasher([p]).result()[p.name] == hashlib.sha256(b"two" * 1001).hexdigest()  # nothing stale cached


def test_an_edit_whose_source_changes_midway_writes_nothing(checkpoint, tmp_path, monkeypatch):
    from hedit.edit.checkpoint import edit_checkpoint
    from hedit.errors import HeditError

    from conftest import neuron_set

    src = checkpoint("llama", shards=True)
    real = hashing.sha256_file
    shard = sorted(src.glob("*.safetensors"))[0]

    def touched(path, stop=None):
        digest = real(path, stop)
        if path.name == shard.name:
            os.utime(shard, ns=(1, 1))  # the same bytes, but its mtime moved: hedit cannot tell it stayed
        return digest

    monkeypatch.setattr(hashing, "sha256_file", touched)
    import pytest

    with pytest.raises(HeditError, match="changed while hedit read it"):
        edit_checkpoint(src, neuron_set(), tmp_path / "a", alpha=0.0, progress=False)
    assert not (tmp_path / "a").exists() and not [p for p in tmp_path.iterdir() if ".hedit-" in p.name]
