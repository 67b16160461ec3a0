"""Recipes: one YAML file per model with every setting of `hedit run`, in layers.

    defaults (``hedit.config``)  <  the recipe file  <  command-line overrides (--set a.b=value)

Each section extends the settings dataclass of its stage, so its keys and defaults are that stage's
(``identify`` takes every setting of ``IdentifyConfig``, ``tune`` of ``TuneConfig``, ...), plus the
few a recipe adds. Every key is checked: an unknown key, or a value of the wrong type or out of range,
is an error that names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hedit.config import EngineConfig, IdentifyConfig, Settings, SweepConfig, TuneConfig, VerifyConfig, setting
from hedit.errors import HeditError
from hedit.io import hub_data
from hedit.io.jsonfile import expect, read_text


@dataclass(frozen=True)
class IdentifySection(IdentifyConfig):
    questions: str = setting(
        "bundled",
        "'bundled' (the team's trivia set), a question file (TriviaQA, NQ-Open, flat) or a Hub dataset's split "
        "(hf://datasets/OWNER/NAME[@REVISION][:CONFIG][/SPLIT]).",
    )
    limit: int | None = setting(None, "Only the first N questions.", min=1)

    def check(self) -> None:
        super().check()
        if hub_data.is_dataset(self.questions):  # its form now; the download when the recipe runs
            hub_data.parse(self.questions)


@dataclass(frozen=True)
class TuneSection(TuneConfig):
    enabled: bool = setting(True, "Tune alpha; false: use `alpha` below.")
    alpha: float = setting(0.0, "The alpha used when tuning is off.")


@dataclass(frozen=True)
class SweepSection(SweepConfig):
    enabled: bool = setting(False, "Run the full sweep with random controls (slow).")


@dataclass(frozen=True)
class OriginSection(Settings):
    enabled: bool = setting(False, "Compare the H-neurons with the pre-trained base model (`hedit origin`).")
    base: str | None = setting(None, "The base model: built-in name, folder or Hub id.")
    draws: int = setting(2000, "Random neuron sets for the baseline.", min=10)

    def check(self) -> None:
        if self.enabled and not self.base:
            raise HeditError("origin.enabled needs origin.base (the pre-trained model)")


@dataclass(frozen=True)
class ExportSection(Settings):
    edited: bool = setting(True, "Write the edited checkpoint.")
    lora: bool = setting(True, "Write the exact LoRA adapter.")
    ia3: bool = setting(False, "Write the IA3 adapter.")


@dataclass(frozen=True)
class VerifySection(VerifyConfig):
    enabled: bool = setting(True, "Verify every artifact against the runtime intervention.")


@dataclass(frozen=True)
class Recipe(Settings):
    model: str = setting("smollm2-135m-instruct", "Built-in name, local folder or Hub id.")
    work: str = setting("hedit-runs/default", "Every stage is cached here.")
    device: str = setting("cpu", "cpu, cuda, cuda:1, ...")
    engine: EngineConfig = setting(factory=EngineConfig)
    identify: IdentifySection = setting(factory=IdentifySection)
    tune: TuneSection = setting(factory=TuneSection)
    sweep: SweepSection = setting(factory=SweepSection)
    origin: OriginSection = setting(factory=OriginSection)
    export: ExportSection = setting(factory=ExportSection)
    verify: VerifySection = setting(factory=VerifySection)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'tune.alphas=[0, 0.5]' -> (['tune', 'alphas'], [0, 0.5]); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise HeditError(f"--set takes KEY=VALUE (e.g. identify.samples=5), got {text!r}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise HeditError(f"--set {key}: cannot read {raw!r} as a value") from None
    return key.strip().split("."), value


def _merge(base: dict[str, Any], keys: list[str], value: Any, where: str) -> None:
    for i, k in enumerate(keys[:-1]):
        nxt = base.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise HeditError(f"{where}: {'.'.join(keys[: i + 1])} is not a section")
        base = nxt
    base[keys[-1]] = value


def _contained_work(work: Any, path: Path) -> None:
    """The recipe file's own ``work`` must be a relative folder without '..' that stays inside the
    current folder with every link followed (``--work`` may be anything)."""
    if not isinstance(work, str):
        return
    p = Path(work)
    cwd = Path.cwd().resolve()
    escapes = p.is_absolute() or ".." in p.parts or work.startswith("~")
    if not escapes:
        r = (cwd / p).resolve()
        escapes = r != cwd and cwd not in r.parents
    if escapes:
        raise HeditError(
            f"{path}: work {work!r} points outside the current folder (a link?); use a relative path without "
            "'..', or --work"
        )


def load_recipe(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise HeditError(f"recipe not found: {path}")
        text = read_text(path, f"recipe {path}", "recipe")
        try:
            loaded = yaml.load(text, Loader=_StrictLoader)
        except yaml.YAMLError as e:
            raise HeditError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        except RecursionError:
            raise HeditError(f"{path}: nested too deeply") from None
        if _expanded_size(loaded) > MAX_NODES:
            raise HeditError(
                f"{path}: the recipe expands to more than {MAX_NODES} values (YAML aliases that repeat each other?)"
            )
        data = expect(loaded if loaded is not None else {}, dict, f"{path}: the recipe")
        if not data and not overrides:
            raise HeditError(f"{path} sets nothing (empty); a recipe names at least its model")
    file_work = data.get("work")
    data = _deep_copy(data)
    for text in overrides:
        keys, value = parse_override(text)
        _merge(data, keys, value, f"--set {text}")
    if path is not None and data.get("work") == file_work:  # --work / --set work=... are the user's own
        _contained_work(file_work, path)
    return Recipe.from_dict(data)


MAX_NODES = 10_000  # values in a recipe once its aliases are expanded; a real one has about a hundred


class _StrictLoader(yaml.SafeLoader):
    """yaml's safe loader that refuses a key given twice in one mapping (which value would count?)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _expanded_size(value: Any, memo: dict[int, int] | None = None) -> int:
    """How many values ``value`` holds with every shared (aliased) part counted each time it appears,
    computed once per distinct object, so an alias bomb is measured in microseconds, never expanded."""
    memo = {} if memo is None else memo
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, dict):
        n = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in value.items())
    elif isinstance(value, list):
        n = 1 + sum(_expanded_size(v, memo) for v in value)
    else:
        n = 1
    memo[id(value)] = n
    return n


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
