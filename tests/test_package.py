"""hedit as a user installs it: `python -m build` makes a wheel and an sdist that `twine check` passes, and
the wheel, installed with --no-deps into a fresh virtual environment beside the pinned set, runs `hedit
--version`, `hedit architectures` (the registry's JSON files are package data) and a tiny edit (the
bundled question and suite files are package data too), importing hedit from that environment, not from
this checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import hedit

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(*cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, (cmd, r.stdout[-2000:], r.stderr[-3000:])
    return r.stdout


def test_the_wheel_installs_alone_and_runs(tmp_path):
    from hedit.model.tiny import save_tiny_model

    from conftest import neuron_set

    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", dist, ROOT, cwd=tmp_path)
    wheel = next(dist.glob("hedit-*.whl"))
    sdist = next(dist.glob("hedit-*.tar.gz"))
    assert "PASSED" in run(sys.executable, "-m", "twine", "check", wheel, sdist)
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "hedit/architectures/llama.json" in names and "hedit/data/trivia.jsonl" in names
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    site = next(venv.glob("lib/python*/site-packages"))
    # the pinned set (torch, transformers, ...) from this environment, after the wheel's own hedit
    (site / "pinned.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    py = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", wheel)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HEDIT_CACHE": str(tmp_path / "cache")}
    where = run(py, "-c", "import hedit; print(hedit.__file__)", cwd=tmp_path, env=env).strip()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(ROOT), where
    hedit_bin = venv / "bin" / "hedit"
    assert run(hedit_bin, "--version", cwd=tmp_path, env=env).strip().endswith(hedit.__version__)
    listed = run(hedit_bin, "architectures", cwd=tmp_path, env=env)
    assert "llama" in listed and "qwen3_moe" in listed
    src = save_tiny_model(tmp_path / "m", "llama")
    neuron_set("llama", per_layer=2).save(tmp_path / "n.json")
    out = run(hedit_bin, "edit", src, "--neurons", tmp_path / "n.json", "--alpha", "0", "--out", tmp_path / "e",
              "--quiet", cwd=tmp_path, env=env)  # fmt: skip
    assert "wrote edited checkpoint" in out and (tmp_path / "e" / "model.safetensors").is_file()
