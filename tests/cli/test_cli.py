"""The command line: outputs, and every bad input as one line, a non-zero exit and nothing on disk."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import leftovers, neuron_set, run_cli, tree_digest


def fails(tmp_path, *args, message):
    r = run_cli(*args)
    assert r.exit_code != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hedit: error: "), r.stderr
    assert message in lines[0], lines[0]
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_edit_export_verify_happy_path(checkpoint, tmp_path, neurons_file):
    src, nf = checkpoint("mistral"), neurons_file("mistral")
    r = run_cli("edit", src, "--neurons", nf, "--alpha", "0", "--out", tmp_path / "ed", "--quiet")
    assert r.exit_code == 0 and "wrote edited checkpoint" in r.stdout
    r = run_cli("export-adapter", src, "--neurons", nf, "--alpha", "0", "--out", tmp_path / "lora")
    assert r.exit_code == 0 and "rank 4; vLLM: --max-lora-rank 8" in r.stdout
    r = run_cli("verify", src, "--neurons", nf, "--alpha", "0", "--adapter", tmp_path / "lora", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["passed"] is True
    r = run_cli("verify", src, "--neurons", nf, "--alpha", "0", "--edited", tmp_path / "ed")
    assert r.exit_code == 0 and r.stdout.startswith("PASS transformers: max abs logit diff")
    r = run_cli("verify", src, "--neurons", nf, "--alpha", "1", "--edited", tmp_path / "ed")
    assert r.exit_code == 1 and r.stdout.startswith("FAIL")


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_source", "source not found"),
        ("no_safetensors", "has no safetensors weights"),
        ("bin_only", "only PyTorch pickle weights (.bin)"),
        ("unsupported", "model_type 'gpt2' is not supported"),
        ("layer_range", "layer 3 out of range: the model has 3 layers"),
        ("index_range", "neuron index 96 in layer 0 out of range"),
        ("other_shape", "neurons file was made for another model"),
        ("nan", "alpha must be a finite number, got nan"),
        ("inf", "alpha must be a finite number, got inf"),
        ("negative", "pass --allow-negative-alpha"),
        ("no_alpha", "no alpha: pass --alpha"),
        ("empty_set", "lists no neurons"),
    ],
)
@pytest.mark.parametrize("command", ["edit", "export-adapter"])
def test_bad_input(checkpoint, tmp_path, neurons_file, command, case, message):
    src = tmp_path / "src"
    shutil.copytree(checkpoint("llama"), src)
    nf, alpha = neurons_file("llama"), "0"
    config = json.loads((src / "config.json").read_text())
    if case == "missing_source":
        src = tmp_path / "nope"
    elif case == "no_safetensors":
        (src / "model.safetensors").unlink()
    elif case == "bin_only":
        (src / "model.safetensors").rename(src / "pytorch_model.bin")
    elif case == "unsupported":
        (src / "config.json").write_text(json.dumps(config | {"model_type": "gpt2"}))
    elif case in ("layer_range", "index_range", "empty_set"):
        data = json.loads(nf.read_text())
        data["neurons"] = {
            "layer_range": [{"layer": 3, "index": 0}],
            "index_range": [{"layer": 0, "index": 96}],
            "empty_set": [],
        }[case]
        nf.write_text(json.dumps(data))
    elif case == "other_shape":
        neuron_set(num_layers=30, inter=1536).save(nf)
    elif case in ("nan", "inf", "negative", "no_alpha"):
        alpha = {"nan": "nan", "inf": "inf", "negative": "-1", "no_alpha": None}[case]
    before = tree_digest(src) if src.exists() else None
    args = [command, src, "--neurons", nf, "--out", tmp_path / "out"] + (["--alpha", alpha] if alpha else [])
    fails(tmp_path, *args, message=message)
    if before is not None:
        assert tree_digest(src) == before


def test_negative_alpha_with_flag(checkpoint, tmp_path, neurons_file):
    r = run_cli(
        "edit",
        checkpoint("llama"),
        "--neurons",
        neurons_file(),
        "--alpha",
        "-1",
        "--out",
        tmp_path / "out",
        "--allow-negative-alpha",
        "--quiet",
    )
    assert r.exit_code == 0 and (tmp_path / "out" / "model.safetensors").is_file()


def test_existing_output_and_overwrite(checkpoint, tmp_path, neurons_file):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    args = ["edit", checkpoint("llama"), "--neurons", neurons_file(), "--alpha", "0", "--out", tmp_path / "out"]
    r = run_cli(*args)
    assert r.exit_code == 1 and "already exists; pass --overwrite" in r.stderr
    assert (tmp_path / "out" / "keep").read_text() == "mine"
    r = run_cli(*args, "--overwrite", "--quiet")
    assert r.exit_code == 1 and "is not a hedit output; --overwrite only replaces what hedit wrote" in r.stderr
    assert (tmp_path / "out" / "keep").read_text() == "mine"
    (tmp_path / "out" / "keep").unlink()
    (tmp_path / "out").rmdir()
    assert run_cli(*args, "--quiet").exit_code == 0
    (tmp_path / "out" / "keep").write_text("stale")
    r = run_cli(*args, "--overwrite", "--quiet")
    assert r.exit_code == 0 and not (tmp_path / "out" / "keep").exists()
    assert (tmp_path / "out" / "hedit.json").is_file() and leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["edit", "export-adapter"])
def test_write_failing_half_way_leaves_nothing(checkpoint, tmp_path, neurons_file, monkeypatch, command):
    """A disk that fills up in the middle of the job: one-line error, no output, no temp folder."""
    import hedit.edit.adapters

    src = checkpoint("llama", shards=True)
    before = tree_digest(src)
    if command == "edit":
        import hedit.edit.checkpoint

        real, calls = hedit.edit.checkpoint.pwrite_all, []

        def flaky(fd, data, offset):
            calls.append(offset)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            real(fd, data, offset)

        monkeypatch.setattr(hedit.edit.checkpoint, "pwrite_all", flaky)
    else:

        def full(*a, **k):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(hedit.edit.adapters, "save_file", full)
    quiet = ["--quiet"] if command == "edit" else []
    fails(
        tmp_path,
        command,
        src,
        "--neurons",
        neurons_file(),
        "--alpha",
        "0",
        "--out",
        tmp_path / "out",
        *quiet,
        message="no space left on the device",
    )
    assert tree_digest(src) == before


def test_console_script_exit_code(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "hedit.cli",
            "edit",
            str(tmp_path / "nope"),
            "--neurons",
            str(tmp_path / "n.json"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and r.stderr.strip() == f"hedit: error: source not found: {tmp_path / 'nope'}"


def test_architectures_lists_the_registry():
    r = run_cli("architectures")
    assert r.exit_code == 0
    assert "gemma3       model.language_model.layers.N.mlp.down_proj" in r.stdout.splitlines()


def test_help_lists_commands_in_pipeline_order():
    from hedit.cli import main

    r = run_cli("--help")
    listed = [line.split()[0] for line in r.output.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == list(type(main).ORDER) and set(listed) == set(main.commands)


@pytest.mark.parametrize(
    "command",
    [
        ["collect", "M", "--out", "r.jsonl"],
        ["features", "M", "r.jsonl", "--out", "feats"],
        ["identify", "M", "--work", "w"],
        ["sweep", "M", "--neurons", "n.json", "--out", "s"],
        ["tune", "M", "--neurons", "n.json"],
    ],
)
def test_a_missing_gpu_is_one_line_before_any_work(tmp_path, monkeypatch, command):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    for device, message in [
        ("cuda", "device 'cuda': torch sees no CUDA GPU on this machine"),
        ("gpu", "unknown device 'gpu' (cpu, cuda, cuda:1, mps, ...)"),
    ]:
        r = run_cli(*command, "--device", device)
        assert r.exit_code == 1 and r.output == f"hedit: error: {message}\n", r.output
    assert list(tmp_path.iterdir()) == []


def test_a_deleted_working_directory_is_one_line(tmp_path):
    """In a folder that was removed, hedit says so in one line (torch's math library would abort)."""
    r = subprocess.run(
        ["sh", "-c", f"mkdir gone && cd gone && rmdir ../gone && exec {sys.executable} -m hedit.cli architectures"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "FATAL" not in r.stderr
    assert r.stderr.strip() == (
        "hedit: error: the working directory no longer exists (deleted?); cd to a folder that does"
    )


def test_generation_uses_no_deprecated_api(tiny_chat, tmp_path):
    """A whole collect run in a fresh process prints no deprecation warning of transformers about how
    hedit calls it (the KV cache is passed as ``cache``, not ``past_key_values``)."""
    path, _, _ = tiny_chat
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question": "Water boils at?", "answers": ["100"]}) + "\n")
    r = subprocess.run(
        [sys.executable, "-W", "error::FutureWarning:hedit", "-m", "hedit.cli", "collect", str(path), "--questions",
         str(q), "--out", str(tmp_path / "r.jsonl"), "--samples", "2", "--max-new-tokens", "4", "--engine", "hf",
         "--quiet"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "deprecated" not in r.stderr.lower() and "Warning" not in r.stderr, r.stderr


def test_every_command_that_writes_takes_quiet():
    """Scripts pass --quiet to every command that writes (--out or --work): none may refuse it."""
    from hedit.cli import main

    for name, cmd in main.commands.items():
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        if opts & {"--out", "--work"}:
            assert "--quiet" in opts, name
