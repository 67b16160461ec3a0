"""Neuron sets on the Hub, against the test Hub server on 127.0.0.1: `hedit push neurons.json`, every
`--neurons owner/name[@revision]`, the found-on check and its `--force`, offline use from the cache."""

import dataclasses
import json

import pytest

from hedit.errors import HeditError
from hedit.model.tiny import save_tiny_model
from hedit.neurons import NeuronSet
from hedit.ship.neuron_hub import fetch_neurons, neuron_files, push_neurons

from conftest import add_tokenizer, neuron_set, run_cli
from hub_server import serving


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with serving(tmp_path, monkeypatch) as server:
        src = add_tokenizer(save_tiny_model(tmp_path / "src", "llama"))
        server.add_folder("team/tiny", src)
        other = add_tokenizer(save_tiny_model(tmp_path / "other", "llama", seed=1))
        server.add_folder("team/other", other)
        yield server


def neuron_folder(folder, model="team/tiny", revision=None):
    """A neuron set as `hedit probe` leaves it, in a folder of its own: the file, report.json, a plot."""
    folder.mkdir(parents=True)
    ns = neuron_set("llama", per_layer=3)
    ns.model = dataclasses.replace(ns.model, name_or_path=model, revision=revision)
    ns.provenance = {"probe": {"heldout": {"auroc": 0.9, "auroc_ci95": [0.8, 0.95], "accuracy": 0.85}}}
    ns.save(folder / "neurons.json")
    (folder / "report.json").write_text(json.dumps({"h_neurons": len(ns.neurons), "mode": "3-vs-1"}))
    (folder / "c_sweep.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return folder / "neurons.json"


def test_round_trip_gives_the_same_bytes_as_the_local_file(hub, tmp_path):
    nf = neuron_folder(tmp_path / "set")
    r = run_cli("push", nf, "--repo-id", "team/tiny-neurons")
    assert r.exit_code == 0, r.output
    assert "pushed neuron set (4 files) to team/tiny-neurons@main" in r.output
    files = hub.repos["team/tiny-neurons"].snapshots[hub.repos["team/tiny-neurons"].resolve("main")]
    assert sorted(set(files) - {".gitattributes"}) == ["README.md", "c_sweep.png", "neurons.json", "report.json"]
    assert files["neurons.json"] == nf.read_bytes()
    card = files["README.md"].decode()
    assert "- hedit-neurons" in card and "base_model: team/tiny" in card and "AUROC 0.900" in card
    assert "hedit edit team/tiny --neurons team/tiny-neurons" in card
    for name, data in files.items():  # nothing of this machine's paths went up
        assert str(tmp_path).encode() not in data and b"/tmp/" not in data, name
    # edit from the Hub set: the same bytes as with the local file
    a = run_cli("edit", "team/tiny", "--neurons", "team/tiny-neurons@main", "--alpha", "0", "--out", tmp_path / "a")
    b = run_cli("edit", "team/tiny", "--neurons", nf, "--alpha", "0", "--out", tmp_path / "b")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    # offline, from the cache
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        assert fetch_neurons("team/tiny-neurons").read_bytes() == nf.read_bytes()
        with pytest.raises(HeditError, match="offline.*not in the local cache"):
            fetch_neurons("team/never-fetched")


def test_a_set_found_on_another_model_is_refused_unless_forced(hub, tmp_path):
    push_neurons(neuron_folder(tmp_path / "set"), "team/tiny-neurons")
    r = run_cli("edit", "team/other", "--neurons", "team/tiny-neurons", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "this neuron set was found on team/tiny, not team/other" in r.output
    assert "--force" in r.output and not (tmp_path / "o").exists()
    # option order does not matter
    r = run_cli("edit", "--neurons", "team/tiny-neurons", "team/other", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "found on team/tiny" in r.output
    r = run_cli(
        "edit", "team/other", "--neurons", "team/tiny-neurons", "--force", "--alpha", "0", "--out", tmp_path / "f"
    )
    assert r.exit_code == 0, r.output
    card = (tmp_path / "f" / "README.md").read_text()
    assert "**Warning**" in card and "found on team/tiny, not team/other" in card
    # a revision the set was not found at, before anything downloads
    push_neurons(neuron_folder(tmp_path / "rev", revision="abc123"), "team/tiny-neurons-rev")
    r = run_cli("edit", "team/tiny@v2", "--neurons", "team/tiny-neurons-rev", "--out", tmp_path / "r")
    assert r.exit_code == 1 and "at revision abc123, not v2" in r.output
    # tune would write into the Hub cache: it needs --out
    r = run_cli("tune", "team/tiny", "--neurons", "team/tiny-neurons", "--work", tmp_path / "w")
    assert r.exit_code == 1 and "is a Hub neuron set: give --out" in r.output


def test_bad_neuron_repos_are_one_line(hub, tmp_path):
    push_neurons(neuron_folder(tmp_path / "set"), "team/tiny-neurons")
    for spec, msg in [
        ("team/nothing", "no model team/nothing on the Hub"),
        ("team/tiny", "holds no neurons.json"),
        ("team/tiny-neurons@nope", "has no revision 'nope'"),
    ]:
        r = run_cli("edit", "team/tiny", "--neurons", spec, "--out", tmp_path / "x")
        assert r.exit_code != 0 and msg in r.output, (spec, r.output)
        assert len(r.output.strip().splitlines()) == 1


def test_a_push_takes_only_a_clean_neuron_set(hub, tmp_path):
    nf = neuron_folder(tmp_path / "work")
    (tmp_path / "work" / "responses.jsonl").write_text("{}\n")
    (tmp_path / "work" / "features").mkdir()
    with pytest.raises(HeditError, match=r"holds more than a neuron set \(features/, responses.jsonl\)"):
        neuron_files(nf)
    clean = neuron_folder(tmp_path / "clean")
    ns = NeuronSet.load(clean)
    ns.provenance["features"] = str(tmp_path / "work" / "features")
    ns.save(clean)
    with pytest.raises(HeditError, match="names a local path"):
        push_neurons(clean, "team/x")
    assert "team/x" not in hub.repos
    with pytest.raises(HeditError, match="not a neurons file"):
        neuron_files(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "spec",
    ["team/evil@../../../../../victim.txt", "team/evil@refs/../../victim.txt", "team/evil@main/../../victim.txt"],
)
def test_a_revision_that_leaves_the_cache_is_refused_before_any_call(hub, tmp_path, monkeypatch, spec):
    """A mirror that answers any revision would have huggingface_hub write ``refs/<revision>`` outside
    its cache, replacing a file with a commit id: hedit refuses the revision before asking, for a neuron
    set and for a model alike, and the file and the server's request log stay as they were."""
    hub.add_folder("team/evil", neuron_folder(tmp_path / "set").parent, any_revision=True)
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    asked = len(hub.requests)
    for argv in (
        ["edit", "team/tiny", "--neurons", spec, "--alpha", "0", "--out", tmp_path / "o1"],
        ["edit", spec, "--neurons", tmp_path / "set" / "neurons.json", "--alpha", "0", "--out", tmp_path / "o2"],
    ):
        r = run_cli(*argv)
        assert r.exit_code != 0 and "is not a revision the Hub has" in r.output, r.output
    assert victim.read_text() == "mine" and len(hub.requests) == asked
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    # the same mirror's main is fetched as usual: the refusal is the revision's, not the server's
    assert fetch_neurons("team/evil@main").read_bytes() == (tmp_path / "set" / "neurons.json").read_bytes()


def test_a_cached_neuron_set_whose_files_link_out_of_the_cache_is_not_used(hub, tmp_path):
    nf = neuron_folder(tmp_path / "set")
    assert run_cli("push", nf, "--repo-id", "team/tiny-neurons").exit_code == 0
    cached = fetch_neurons("team/tiny-neurons")
    (tmp_path / "key").write_text("PRIVATE")
    plot = cached.parent / "c_sweep.png"
    plot.unlink()
    plot.symlink_to(tmp_path / "key")  # tampered with after the download
    with pytest.raises(HeditError, match="is a link to outside"):
        fetch_neurons("team/tiny-neurons")
