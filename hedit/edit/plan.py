"""An edit plan: a source model (checkpoint folder or GGUF file), a neuron set checked against it, the
alpha of every chosen neuron, and which weight carries the edit (``down``: down_proj columns; ``up``:
up_proj rows, exact for quantized formats whose scales run along rows)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hedit.edit.neurons import NeuronSet
from hedit.errors import HeditError
from hedit.io.checkpoint import Checkpoint, open_checkpoint
from hedit.io.files import hub_snapshot
from hedit.registry import Architecture

TARGETS = ("auto", "down", "up")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class EditPlan:
    source: Path  # the checkpoint folder or the GGUF file
    arch: Architecture
    num_layers: int
    intermediate_size: int
    neurons: NeuronSet
    layers: dict[int, list[tuple[int, float]]]  # layer -> sorted (neuron index, alpha)
    cli_alpha: float | None
    weight_files: list[Path]  # whose SHA-256 the output's hedit.json records
    known_names: list[str] = field(default_factory=list)  # what the source says it is (config, GGUF metadata)
    target: str = "down"
    checkpoint: Checkpoint | None = None  # safetensors sources

    @property
    def model_type(self) -> str:
        return self.arch.model_type

    @property
    def num_neurons(self) -> int:
        return sum(len(v) for v in self.layers.values())

    def alphas(self) -> list[float]:
        return sorted({a for v in self.layers.values() for _, a in v})

    @property
    def base_model(self) -> str:
        """A Hub id for model cards when one is known, else the source's folder or file name."""
        for cand in [self.neurons.model.name_or_path, *self.known_names]:
            if isinstance(cand, str) and _HUB_ID.match(cand) and not Path(cand).exists():
                return cand
        snap = hub_snapshot(self.source)  # a Hub cache snapshot: .../models--owner--name/snapshots/<sha>
        if snap and snap[0].name.startswith("models--"):
            return snap[0].name[len("models--") :].replace("--", "/", 1)
        return self.source.resolve().name


def load_neurons(neurons: str | Path | NeuronSet) -> NeuronSet:
    ns = neurons if isinstance(neurons, NeuronSet) else NeuronSet.load(neurons)
    if not ns.neurons:
        raise HeditError("the neurons file lists no neurons; nothing to edit")
    return ns


def resolve_target(target: str, arch: Architecture, quantized: bool) -> str:
    """``auto``: ``up`` for quantized sources (exact through their per-channel scales), ``down`` otherwise."""
    if target not in TARGETS:
        raise HeditError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    if target == "auto":
        target = "up" if quantized else "down"
    if target == "up" and not arch.gated:
        raise HeditError(f"{arch.model_type} has no gated MLP: --target up needs one (use --target down)")
    if target == "down" and quantized:
        raise HeditError(
            "a quantized checkpoint shares its scales along the rows of down_proj, so a down_proj "
            "column cannot be scaled exactly; --target up scales the neurons' up_proj channels "
            "exactly"
        )
    return target


def make_plan(
    source: str | Path,
    neurons: str | Path | NeuronSet,
    alpha: float | None = None,
    allow_negative: bool = False,
    target: str = "auto",
) -> EditPlan:
    """The plan for a safetensors checkpoint (a built-in name, a folder or a Hub id)."""
    from hedit.model.builtin import builtin_hub_id, resolve_model

    ckpt = open_checkpoint(resolve_model(source, must_exist=False))
    ns = load_neurons(neurons)
    ns.check_model(ckpt.model_type, ckpt.num_layers, ckpt.intermediate_size)
    names = [n for n in (builtin_hub_id(str(source)), ckpt.config.get("_name_or_path")) if n]
    return EditPlan(
        ckpt.path,
        ckpt.arch,
        ckpt.num_layers,
        ckpt.intermediate_size,
        ns,
        ns.plan(alpha, allow_negative),
        alpha,
        [ckpt.path / f for f in ckpt.weight_files],
        names,
        resolve_target(target, ckpt.arch, ckpt.quant_method is not None),
        ckpt,
    )
