"""Stage stamps: the input digests of each finished stage in ``<work>/stages.json``, so a rerun skips
a stage whose inputs (and outputs) are unchanged and redoes one whose inputs changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hedit.io.atomic import atomic_write_text
from hedit.io.jsonfile import expect, read_json

STAMPS = "stages.json"


class Stamps:
    def __init__(self, work: str | Path):
        self.path = Path(work) / STAMPS
        self.data = expect(read_json(self.path), dict, str(self.path)) if self.path.exists() else {}

    def fresh(self, stage: str, inputs: dict[str, Any], *outputs: Path) -> bool:
        """True when ``stage`` last ran with exactly ``inputs`` and its ``outputs`` still exist."""
        return self.data.get(stage, {}).get("inputs") == inputs and all(o.exists() for o in outputs)

    def done(self, stage: str, inputs: dict[str, Any], result: Any = None) -> None:
        self.data[stage] = {"inputs": inputs, "result": result}
        atomic_write_text(self.path, json.dumps(self.data, indent=2) + "\n")

    def result(self, stage: str) -> Any:
        return self.data[stage]["result"]
