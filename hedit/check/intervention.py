"""Runtime intervention: scale chosen neurons' down_proj inputs on a loaded transformers model.

Used to verify exported artifacts and for alpha sweeps. The hooks multiply the down_proj input by a
per-layer vector (1 everywhere, alpha at the chosen neurons), computed in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch

from hedit.edit.neurons import NeuronSet
from hedit.errors import HeditError
from hedit.registry import get_architecture

Layers = Mapping[int, Sequence[tuple[int, float]]]


def model_shape(model: torch.nn.Module) -> tuple[str, int, int]:
    """(model_type, num_layers, intermediate_size) of a loaded transformers model, from its config."""
    config = model.config.to_dict()
    arch = get_architecture(config.get("model_type"))
    layers, inter = arch.shape(config)
    return arch.model_type, layers, inter


def down_proj_module(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    arch = get_architecture(model.config.model_type)
    path = arch.module_path(layer)
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise HeditError(
            f"{type(model).__name__} has no module {path}; the registry entry for {arch.model_type} "
            "does not match this model class"
        ) from None


@contextlib.contextmanager
def scale_neurons(
    model: torch.nn.Module, neurons: NeuronSet | Layers, alpha: float | None = None, allow_negative: bool = False
) -> Iterator[torch.nn.Module]:
    """Within the block, chosen neurons' activations are multiplied by their alpha.

    ``neurons`` is a NeuronSet (checked against the model's shape; alphas resolved as in `hedit edit`)
    or a mapping layer -> [(neuron index, alpha), ...].
    """
    model_type, num_layers, inter = model_shape(model)
    if isinstance(neurons, NeuronSet):
        neurons.check_model(model_type, num_layers, inter)
        layers: Layers = neurons.plan(alpha, allow_negative)
    else:
        layers = neurons
    handles = []
    try:
        for layer, pairs in layers.items():
            if not 0 <= layer < num_layers:
                raise HeditError(f"layer {layer} out of range: the model has {num_layers} layers")
            scale = torch.ones(inter, dtype=torch.float32)
            for index, a in pairs:
                scale[index] = a
            handles.append(down_proj_module(model, layer).register_forward_pre_hook(_hook(scale)))
        yield model
    finally:
        for h in handles:
            h.remove()


def _hook(scale: torch.Tensor):
    def pre_hook(module, args):
        x = args[0]
        s = scale.to(x.device)
        return ((x.to(torch.float32) * s).to(x.dtype),) + tuple(args[1:])

    return pre_hook
