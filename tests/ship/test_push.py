"""`hedit push` end to end: the real huggingface_hub client against the test Hub server (HF_ENDPOINT)."""

import hashlib
import json
import os
from pathlib import Path

import pytest
from huggingface_hub import snapshot_download

from hedit.edit.adapters import export_adapter
from hedit.edit.checkpoint import edit_checkpoint
from hedit.errors import HeditError
from hedit.model.tiny import save_tiny_model
from hedit.ship.push import check_folder, push

from conftest import add_tokenizer, neuron_set, run_cli
from hub_server import LFS_THRESHOLD, TOKEN, serving


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with serving(tmp_path, monkeypatch) as server:
        yield server


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("push")
    src = add_tokenizer(save_tiny_model(root / "src", "llama"))
    nf = root / "n.json"
    neuron_set("llama", per_layer=3).save(nf)
    edited = edit_checkpoint(src, nf, root / "edited", alpha=0.0, progress=False)
    lora = export_adapter(src, nf, root / "lora", "lora", alpha=0.0)
    return edited, lora


def digests(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }


def test_push_checkpoint_and_download_it_back(hub, artifacts, tmp_path):
    edited, _ = artifacts
    r = push(edited, "team/tiny-hedit")
    assert r.kind == "checkpoint" and r.revision == "main" and "/team/tiny-hedit/commit/" in r.commit_url
    assert hub.lfs_uploads == 1  # model.safetensors went through git-LFS; the small files inline
    assert (edited / "model.safetensors").stat().st_size > LFS_THRESHOLD
    back = snapshot_download("team/tiny-hedit", endpoint=hub.url, cache_dir=str(tmp_path / "dl"), token=TOKEN)
    got = digests(__import__("pathlib").Path(back))
    got.pop(".gitattributes")
    assert got == digests(edited)  # every file, byte for byte


def test_push_adapter_to_a_private_branch(hub, artifacts, tmp_path):
    _, lora = artifacts
    r = push(lora, "team/tiny-lora", private=True, revision="alpha0", commit_message="LoRA alpha 0")
    assert r.kind == "adapter" and r.revision == "alpha0"
    repo = hub.repos["team/tiny-lora"]
    assert repo.private and set(repo.refs) == {"main", "alpha0"}
    assert repo.messages[repo.refs["alpha0"]] == "LoRA alpha 0"
    assert "adapter_model.safetensors" not in repo.snapshots[repo.refs["main"]]  # main untouched
    back = snapshot_download(
        "team/tiny-lora", revision="alpha0", endpoint=hub.url, cache_dir=str(tmp_path / "dl"), token=TOKEN
    )
    got = digests(__import__("pathlib").Path(back))
    got.pop(".gitattributes")
    assert got == digests(lora)
    again = push(lora, "team/tiny-lora", revision="alpha0")  # repo and branch exist: a new commit
    assert again.commit_url != r.commit_url


def test_cli_push_never_shows_the_token(hub, artifacts):
    edited, _ = artifacts
    r = run_cli("push", str(edited), "--repo-id", "team/cli")
    assert r.exit_code == 0, r.output
    assert "pushed checkpoint" in r.output and TOKEN not in r.output
    for p in edited.rglob("*"):
        assert TOKEN.encode() not in p.read_bytes()
    hub.token = "another"
    r = run_cli("push", str(edited), "--repo-id", "team/cli")
    assert r.exit_code == 1 and "refused the credentials (401)" in r.output and TOKEN not in r.output, r.output


@pytest.mark.parametrize(
    "fail, message",
    [
        ((404, "/commit/"), "answered 404|no model"),
        ((500, "/commit/"), "answered 500"),
        ((0, "/commit/"), "cannot reach the Hub"),
        ((500, "/api/repos/create"), "answered 500"),
        ((403, "/preupload/"), "does not let this token write"),
    ],
)
def test_server_failures_are_one_line_errors(hub, artifacts, fail, message):
    edited, _ = artifacts
    hub.fail = fail
    with pytest.raises(HeditError, match=message) as e:
        push(edited, "team/failing")
    assert "\n" not in str(e.value) and TOKEN not in str(e.value)


def test_refusals_send_nothing(hub, artifacts, tmp_path):
    edited, _ = artifacts
    bare = save_tiny_model(tmp_path / "bare", "llama")
    with pytest.raises(HeditError, match="has no hedit.json"):
        push(bare, "team/x")
    assert check_folder(bare, force=True) == "checkpoint"
    (bare / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(HeditError, match="pickle files"):
        push(bare, "team/x", force=True)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("hedit.json", "README.md"):
        (broken / name).write_text("{}")
    with pytest.raises(HeditError, match="no config.json"):
        push(broken, "team/x")
    (broken / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2}))
    with pytest.raises(HeditError, match="no adapter_model.safetensors"):
        push(broken, "team/x")
    with pytest.raises(HeditError, match="owner/name"):
        push(edited, "just-a-name")
    with pytest.raises(HeditError, match="not a folder"):
        push(tmp_path / "nope", "team/x")
    assert hub.requests == [] and not os.path.exists(tmp_path / "hub-cache" / "x")


@pytest.mark.parametrize(
    "name, content",
    [
        ("PYTORCH_MODEL.BIN", b"x"),
        ("weights.Pickle", b"x"),
        ("opt.PT", b"x"),
        ("x.pth", b"x"),
        ("m.ckpt", b"x"),
        ("m.joblib", b"x"),
        ("a.npy", b"x"),
        ("a.NPZ", b"x"),
        ("sub/deep.pkl", b"x"),
        ("innocent.dat", b"\x80\x04\x95\x05\x00"),  # pickle protocol 4 by its magic bytes
    ],
)
def test_pickles_are_refused_by_name_in_any_case_or_by_content(hub, artifacts, tmp_path, name, content):
    import shutil

    edited, _ = artifacts
    folder = tmp_path / "f"
    shutil.copytree(edited, folder)
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
    with pytest.raises(HeditError, match="pickle files"):
        push(folder, "team/x")
    assert hub.requests == []


def test_a_torch_zip_is_a_pickle_and_links_out_are_refused(hub, artifacts, tmp_path):
    import shutil
    import zipfile

    edited, _ = artifacts
    folder = tmp_path / "f"
    shutil.copytree(edited, folder)
    with zipfile.ZipFile(folder / "weights.dat", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02.")
    with pytest.raises(HeditError, match="pickle files"):
        push(folder, "team/x")
    (folder / "weights.dat").unlink()
    (tmp_path / "secret").write_text("key")
    (folder / "notes.txt").symlink_to(tmp_path / "secret")
    with pytest.raises(HeditError, match="link to outside the folder"):
        push(folder, "team/x")
    assert hub.requests == []


def test_every_folder_hedit_writes_is_pushed(hub, tmp_path):
    """A GGUF edited into a folder, a gguf-lora adapter and an mlx-lora adapter are pushed as they are
    (their files readable by llama.cpp's and safetensors' headers), and come back byte for byte; a GGUF
    folder whose file is not a GGUF is refused with nothing sent."""
    from gguf import GGMLQuantizationType as T

    from hedit.edit.gguf import edit_gguf

    from builders import mlx_affine, write_gguf
    from builders import neurons as gguf_neurons

    g = write_gguf(tmp_path / "m.gguf", T.Q8_0)
    edit_gguf(g, gguf_neurons([(0, 1), (1, 3)]), tmp_path / "gdir", 0.0, progress=False)
    src = add_tokenizer(save_tiny_model(tmp_path / "src", "llama"))
    nf = tmp_path / "n.json"
    neuron_set("llama", per_layer=2).save(nf)
    export_adapter(src, nf, tmp_path / "glora", "gguf-lora", alpha=0.0)
    mlx = mlx_affine(save_tiny_model(tmp_path / "float", "llama"), tmp_path / "mlx")
    export_adapter(mlx, nf, tmp_path / "mlora", "mlx-lora", alpha=0.0)
    for folder, kind in (("gdir", "GGUF"), ("glora", "gguf-lora adapter"), ("mlora", "mlx-lora adapter")):
        r = push(tmp_path / folder, f"team/{folder}")
        assert r.kind == kind and any(f.endswith((".gguf", ".safetensors")) for f in r.files), (folder, r.files)
        got = snapshot_download(f"team/{folder}", endpoint=hub.url, cache_dir=str(tmp_path / "dl"), token=TOKEN)
        back = {k: v for k, v in digests(Path(got)).items() if k != ".gitattributes"}
        assert digests(tmp_path / folder) == back
    bad = tmp_path / "gdir"
    next(bad.glob("*.gguf")).write_bytes(b"not a gguf")
    asked = len(hub.requests)
    with pytest.raises(HeditError, match="GGUF"):
        push(bad, "team/bad")
    assert len(hub.requests) == asked
