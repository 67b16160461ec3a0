"""Runtime intervention: scale chosen neurons' down_proj inputs on a loaded transformers model.

Used to verify exported artifacts and for alpha sweeps. The hooks multiply the down_proj input by a
per-layer vector (1 everywhere, alpha at the chosen neurons), computed in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch

from hedit.errors import HeditError
from hedit.neurons import NeuronSet
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
            _check_layer(layer, num_layers)
            scale = _vector(pairs, inter)
            handles.append(down_proj_module(model, layer).register_forward_pre_hook(_hook(lambda x, s=scale: s)))
        yield model
    finally:
        for h in handles:
            h.remove()


class CellScales:
    """Hooks under which every row of a batch runs its own edit, so that several sweep cells decode in
    one batch: ``cells[c]`` maps layer -> [(neuron index, alpha)] (empty: the unedited model), and
    ``select(rows)`` names the cell of each row of the forward passes that follow. A row computes what
    ``scale_neurons`` with its cell alone computes: the same float32 multiply, by 1.0 at neurons its cell
    leaves alone (exact in any dtype).

        with CellScales(model, [{}, {3: [(7, 0.0)]}]) as scales:
            scales.select([0, 0, 1, 1])   # rows 0-1 unedited, rows 2-3 with neuron 7 of layer 3 silenced
            model(input_ids=ids)          # ids: 4 rows
    """

    def __init__(self, model: torch.nn.Module, cells: Sequence[Layers]):
        _, num_layers, inter = model_shape(model)
        self.model, self.cells = model, list(cells)
        self.tables: dict[int, torch.Tensor] = {}  # layer -> (cells, intermediate) float32 factors
        for c, layers in enumerate(self.cells):
            for layer, pairs in layers.items():
                _check_layer(layer, num_layers)
                if layer not in self.tables:
                    self.tables[layer] = torch.ones(len(self.cells), inter, dtype=torch.float32)
                self.tables[layer][c] = _vector(pairs, inter)
        self.rows: torch.Tensor | None = None
        self._placed: dict[tuple[int, torch.device], torch.Tensor] = {}
        self._handles: list = []

    def __len__(self) -> int:
        return len(self.cells)

    def select(self, rows: Sequence[int] | torch.Tensor) -> None:
        """The cell of each row of the next forward passes."""
        self.rows = torch.as_tensor(rows, dtype=torch.long).cpu()
        self._placed.clear()

    def _factors(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        if self.rows is None or len(self.rows) != x.shape[0]:
            raise HeditError(
                f"cell rows name {0 if self.rows is None else len(self.rows)} rows; the batch has {x.shape[0]}"
            )
        key = (layer, x.device)
        if key not in self._placed:
            self._placed[key] = self.tables[layer].to(x.device)[self.rows.to(x.device)].unsqueeze(1)
        return self._placed[key]

    def __enter__(self) -> CellScales:
        for layer in self.tables:
            hook = _hook(lambda x, layer=layer: self._factors(layer, x))
            self._handles.append(down_proj_module(self.model, layer).register_forward_pre_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _check_layer(layer: int, num_layers: int) -> None:
    if not 0 <= layer < num_layers:
        raise HeditError(f"layer {layer} out of range: the model has {num_layers} layers")


def _vector(pairs: Sequence[tuple[int, float]], inter: int) -> torch.Tensor:
    scale = torch.ones(inter, dtype=torch.float32)
    for index, a in pairs:
        scale[index] = a
    return scale


def _hook(factors):
    """A pre-hook multiplying down_proj's input, in float32, by ``factors(x)`` (broadcast to its shape)."""

    def pre_hook(module, args):
        x = args[0]
        s = factors(x).to(x.device)
        return ((x.to(torch.float32) * s).to(x.dtype),) + tuple(args[1:])

    return pre_hook
