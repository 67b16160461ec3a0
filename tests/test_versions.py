"""The declared floors are the tested versions: each dependency's floor in pyproject.toml is the
major.minor that .ci/constraints.txt (torch: the Makefile) pins for `make install`, and what is installed
here satisfies it. A floor nobody ran is a promise nobody checked."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, v = line.partition("==")
            pins[name.lower().replace("_", "-")] = v
    torch = re.search(r"install torch==([\d.]+)", (ROOT / "Makefile").read_text())
    pins["torch"] = torch.group(1)
    return pins


def test_every_floor_is_the_tested_version():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = _pins()
    for dep in deps:
        name, floor = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([\d.]+)", dep).groups()
        key = name.lower().replace("_", "-")
        pinned = pins[key]
        assert pinned.split(".")[: len(floor.split("."))] == floor.split("."), (name, floor, pinned)
        installed = [int(x) for x in re.findall(r"\d+", version(name))[:2]]
        assert installed >= [int(x) for x in floor.split(".")][:2], (name, floor, version(name))
