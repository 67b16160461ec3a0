"""The house: each stage's package imports only from the packages below it (arrows point down), and every
default is stated once (the command line's and the recipes' defaults are the settings dataclasses')."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest

import hedit
from hedit import config
from hedit.cli import main
from hedit.run.recipe import Recipe

# bottom to top; a module may import from its own layer and the ones below it. Shared layers (engine,
# score) sit under the stages (find, measure, choose, edit, check); the neuron-set file is the contract
# between finding and editing, a layer of its own.
LAYERS = [
    "",
    "io",
    "model",
    "neurons",
    "engine",
    "score",
    "edit",
    "check",
    "find",
    "measure",
    "choose",
    "ship",
    "run",
    "cli",
]
ROOT = Path(hedit.__file__).parent


def layer_of(module: str) -> int:
    parts = module.split(".")
    sub = parts[1] if len(parts) > 1 and ((ROOT / parts[1]).is_dir() or parts[1] in LAYERS) else ""
    return LAYERS.index(sub)


def test_imports_point_down():
    upward = []
    for path in ROOT.rglob("*.py"):
        me = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hedit"):
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("hedit")]
            else:
                continue
            upward += [f"{me} -> {t}" for t in targets if layer_of(t) > layer_of(me)]
    assert upward == []


def test_every_stage_has_its_package_and_no_module_is_left_at_the_top():
    top = sorted(p.stem for p in ROOT.glob("*.py"))
    assert top == ["__init__", "config", "errors", "neurons", "paths", "progress", "registry"]
    assert all((ROOT / d / "__init__.py").is_file() or (ROOT / f"{d}.py").is_file() for d in LAYERS if d)


def test_check_has_no_circle_and_verify_only_dispatches():
    """No module of check/ imports verify.py (the dispatcher), and verify.py defines no check of its own."""
    for path in (ROOT / "check").glob("*.py"):
        if path.name != "verify.py":
            assert "hedit.check.verify" not in path.read_text(), path.name
    tree = ast.parse((ROOT / "check" / "verify.py").read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert defined == {"_transformers", "_vllm", "_mlx", "_structure", "verify_artifact"}


def test_every_writer_has_the_one_shape():
    from hedit.edit.writers import WRITERS, Writer, get_writer

    assert set(WRITERS) == {"checkpoint", "quantized", "gguf", "lora", "ia3", "gguf-lora", "mlx-lora"}
    for name in WRITERS:
        w = get_writer(name)
        assert isinstance(w, Writer) and w.name == name
        for method in ("check", "write", "card", "expected", "rules"):
            assert callable(getattr(w, method)), (name, method)


def _param_default(command: click.Command, name: str):
    p = next(p for p in command.params if p.name == name)
    return p.default


SETTINGS = {
    "collect": config.CollectConfig,
    "features": config.FeaturesConfig,
    "probe": config.ProbeConfig,
    "identify": config.IdentifyConfig,
    "sweep": config.SweepConfig,
    "tune": config.TuneConfig,
    "verify": config.VerifyConfig,
}


@pytest.mark.parametrize("command", list(SETTINGS))
def test_command_line_defaults_are_the_dataclasses(command):
    cls = SETTINGS[command]
    cmd = main.commands[command]
    names = {p.name for p in cmd.params}
    for name, default in cls.defaults().items():
        meta = next(f.metadata for f in cls.__dataclass_fields__.values() if f.name == name)
        if not meta.get("cli", True):
            continue
        assert name in names, f"{command} has no option for {name}"
        got = _param_default(cmd, name)
        if isinstance(default, tuple):
            got = tuple(type(default[0])(v) for v in str(got).split(",")) if default else ()
        assert got == default, (command, name)


def test_recipe_sections_take_the_dataclasses_defaults():
    r = Recipe()
    for section, cls in (
        ("identify", config.IdentifyConfig),
        ("tune", config.TuneConfig),
        ("sweep", config.SweepConfig),
        ("verify", config.VerifyConfig),
    ):
        for name, default in cls.defaults().items():
            assert getattr(getattr(r, section), name) == default, (section, name)


def test_old_import_paths_still_work():
    import hedit.check.intervention
    import hedit.check.verify
    import hedit.edit.neurons
    import hedit.measure.generate
    import hedit.measure.tune
    from hedit.adapters import export_adapter
    from hedit.choose.tune import tune
    from hedit.edit import edit_checkpoint
    from hedit.identify import identify
    from hedit.intervention import scale_neurons
    from hedit.measure.tune import tune as old_tune
    from hedit.neurons import NeuronSet
    from hedit.sweep import SweepConfig, run_sweep
    from hedit.verify import verify

    assert verify is hedit.check.verify.verify and SweepConfig is config.SweepConfig
    assert export_adapter.__module__ == "hedit.edit.adapters" and edit_checkpoint.__module__ == "hedit.edit.checkpoint"
    assert identify.__module__ == "hedit.find.identify" and run_sweep.__module__ == "hedit.measure.sweep"
    assert scale_neurons.__module__ == "hedit.engine.intervention" and old_tune is tune
    assert NeuronSet.__module__ == "hedit.neurons" and hedit.edit.neurons.NeuronSet is NeuronSet
    assert hedit.check.intervention.scale_neurons is scale_neurons and hedit.measure.generate.decode
