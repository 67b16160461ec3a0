"""An edit plan: a checkpoint, a neuron set checked against it, and the alpha of every chosen neuron."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hedit.errors import HeditError
from hedit.io.checkpoint import Checkpoint, open_checkpoint
from hedit.edit.neurons import NeuronSet


@dataclass
class EditPlan:
    checkpoint: Checkpoint
    neurons: NeuronSet
    layers: dict[int, list[tuple[int, float]]]  # layer -> sorted (neuron index, alpha)
    cli_alpha: float | None

    @property
    def num_neurons(self) -> int:
        return sum(len(v) for v in self.layers.values())

    def alphas(self) -> list[float]:
        return sorted({a for v in self.layers.values() for _, a in v})


def make_plan(source: str | Path, neurons: str | Path | NeuronSet, alpha: float | None = None,
              allow_negative: bool = False) -> EditPlan:
    from hedit.model.builtin import resolve_model

    ckpt = open_checkpoint(resolve_model(source, must_exist=False))
    ns = neurons if isinstance(neurons, NeuronSet) else NeuronSet.load(neurons)
    ns.check_model(ckpt.model_type, ckpt.num_layers, ckpt.intermediate_size)
    if not ns.neurons:
        raise HeditError("the neurons file lists no neurons; nothing to edit")
    return EditPlan(ckpt, ns, ns.plan(alpha, allow_negative), alpha)
