"""Hub ids as model sources, against the test Hub server on 127.0.0.1 (HF_ENDPOINT)."""

import json

import pytest
from safetensors.numpy import load_file

from hedit.edit.checkpoint import edit_checkpoint
from hedit.errors import HeditError
from hedit.io.hub import download, is_repo_id
from hedit.model.builtin import resolve_model
from hedit.model.tiny import save_tiny_model

from conftest import add_tokenizer, neuron_set, run_cli
from hub_server import HubServer


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


@pytest.fixture
def tiny_repo(hub, tmp_path):
    src = add_tokenizer(save_tiny_model(tmp_path / "src", "llama"))
    (src / "pytorch_model.bin").write_bytes(b"pickle, never downloaded")
    (src / "README.md").write_text("readme")
    hub.add_folder("team/tiny", src)
    return src


def test_repo_id_syntax(tmp_path):
    assert is_repo_id("team/tiny") and is_repo_id("meta-llama/Llama-3.1-8B-Instruct@main")
    for bad in ("tiny", "a/b/c", "/abs/path", "./x/y", "team/", "smollm2-135m-instruct"):
        assert not is_repo_id(bad)


def test_download_only_weights_configs_and_tokenizer(hub, tiny_repo):
    path = resolve_model("team/tiny")
    names = sorted(p.name for p in path.iterdir())
    assert "model.safetensors" in names and "config.json" in names and "tokenizer.json" in names
    assert "pytorch_model.bin" not in names and "README.md" not in names
    for name in names:
        assert (path / name).read_bytes() == (tiny_repo / name).read_bytes()
    assert resolve_model("team/tiny") == path  # cached: a second call downloads nothing new
    gets = [p for m, p in hub.requests if m == "GET" and "/resolve/" in p]
    assert len(gets) == len(names)


def test_edit_from_a_hub_id(hub, tiny_repo, tmp_path):
    nf = tmp_path / "n.json"
    neuron_set("llama", per_layer=2).save(nf)
    out = edit_checkpoint("team/tiny", nf, tmp_path / "edited", alpha=0.0, progress=False)
    want = edit_checkpoint(tiny_repo, nf, tmp_path / "edited-local", alpha=0.0, progress=False)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(want / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert "base_model: team/tiny" in (out / "README.md").read_text()
    r = run_cli("edit", "team/tiny", "--neurons", str(nf), "--alpha", "0", "--out", str(tmp_path / "cli"), "--quiet")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "fail, spec, message",
    [
        (None, "team/nothing", "no model team/nothing on the Hub"),
        (None, "team/tiny@v9", "has no revision 'v9'"),
        ((500, "/api/models/"), "team/tiny", "cannot reach the Hub|answered 500"),
        ((401, "/api/models/"), "team/tiny", "no model team/tiny on the Hub|answered 401"),
        ((0, "/api/models/"), "team/tiny", "cannot reach the Hub"),
    ],
)
def test_hub_failures_are_one_line_errors(hub, tiny_repo, fail, spec, message):
    hub.fail = fail
    with pytest.raises(HeditError, match=message) as e:
        download(spec)
    assert "\n" not in str(e.value)


def test_unreachable_and_offline(tiny_repo, hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HeditError, match="cannot reach the Hub at http://127.0.0.1:9 and team/tiny is not in"):
        download("team/tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HeditError, match=r"the Hub is offline \(HF_HUB_OFFLINE\) and team/tiny is not in"):
        download("team/tiny")


def test_offline_uses_the_cache(hub, tiny_repo, monkeypatch):
    first = download("team/tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert download("team/tiny") == first


def test_a_repo_without_safetensors_is_refused(hub, tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"x")
    hub.add_folder("team/pickles", tmp_path / "bin")
    with pytest.raises(HeditError, match="no safetensors weights"):
        download("team/pickles")
