"""Runtime intervention: scale chosen neurons' down_proj inputs on a loaded transformers model.

Used to verify exported artifacts and for alpha sweeps. The hooks multiply the down_proj input by a
per-site vector (1 everywhere, alpha at the chosen neurons), computed in float32. A site is a layer's
MLP, or in a mixture of experts (layer, expert): a shared expert is an MLP with its own down_proj; a
routed expert lives in transformers' fused experts module, whose forward ``hedit.engine.experts`` wraps
to scale the expert's activation the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch

from hedit.engine.experts import ExpertsScope
from hedit.errors import HeditError
from hedit.neurons import NeuronSet, Site, split_site
from hedit.registry import ExpertsShape, get_architecture

Layers = Mapping[Site, Sequence[tuple[int, float]]]


def model_shape(model: torch.nn.Module) -> tuple[str, int, int]:
    """(model_type, num_layers, intermediate_size) of a loaded transformers model, from its config."""
    config = model.config.to_dict()
    arch = get_architecture(config.get("model_type"))
    layers, inter = arch.shape(config)
    return arch.model_type, layers, inter


def experts_shape(model: torch.nn.Module) -> ExpertsShape | None:
    """The experts of a loaded mixture of experts (None for a dense model), from its config."""
    config = model.config.to_dict()
    return get_architecture(config.get("model_type")).experts_shape(config)


def check_neurons(model: torch.nn.Module, neurons: NeuronSet) -> None:
    """``neurons`` made for this model: its type and shape, and in a mixture of experts every site."""
    neurons.check_model(*model_shape(model), experts_shape(model))


def site_module(model: torch.nn.Module, site: Site) -> tuple[torch.nn.Module, str]:
    """(module, kind) of a site: a down_proj Linear (``linear``) or a fused experts module (``experts``)."""
    arch = get_architecture(model.config.model_type)
    path, kind = arch.site_module(*split_site(site))
    try:
        return model.get_submodule(path), kind
    except AttributeError:
        raise HeditError(
            f"{type(model).__name__} has no module {path}; the registry entry for {arch.model_type} "
            "does not match this model class"
        ) from None


def down_proj_module(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    return site_module(model, layer)[0]


def site_width(model: torch.nn.Module, site: Site) -> int:
    """The intermediate size at a site (a mixture's dense layers and shared experts have their own)."""
    shape = experts_shape(model)
    if shape is None:
        layer, expert = split_site(site)
        if expert is not None:
            raise HeditError(f"{model.config.model_type} is a dense model: it has no expert {expert!r}")
        _check_layer(layer, model_shape(model)[1])
        return model_shape(model)[2]
    return shape.width(*split_site(site))


@contextlib.contextmanager
def scale_neurons(
    model: torch.nn.Module, neurons: NeuronSet | Layers, alpha: float | None = None, allow_negative: bool = False
) -> Iterator[torch.nn.Module]:
    """Within the block, chosen neurons' activations are multiplied by their alpha.

    ``neurons`` is a NeuronSet (checked against the model's shape; alphas resolved as in `hedit edit`)
    or a mapping layer -> [(neuron index, alpha), ...].
    """
    if isinstance(neurons, NeuronSet):
        check_neurons(model, neurons)
        layers: Layers = neurons.plan(alpha, allow_negative)
    else:
        layers = neurons
    with CellScales(model, [layers]) as scales:
        scales.select(None)
        yield model


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
        self.model, self.cells = model, list(cells)
        # site -> (cells, intermediate) float32 factors; a layer's experts share one (cells, experts, I) table
        self.tables: dict[Site, torch.Tensor] = {}
        self.experts: dict[int, torch.Tensor] = {}
        for c, layers in enumerate(self.cells):
            for site, pairs in layers.items():
                width = site_width(model, site)
                layer, expert = split_site(site)
                if isinstance(expert, int):
                    shape = experts_shape(model)
                    if layer not in self.experts:
                        self.experts[layer] = torch.ones(len(self.cells), shape.num_experts, width)
                    self.experts[layer][c, expert] = _vector(pairs, width)
                    continue
                if site not in self.tables:
                    self.tables[site] = torch.ones(len(self.cells), width, dtype=torch.float32)
                self.tables[site][c] = _vector(pairs, width)
        self.rows: torch.Tensor | None = None  # None: every row runs cell 0 (once ``select(None)`` said so)
        self._selected = False
        self._placed: dict[tuple, torch.Tensor] = {}
        self._handles: list = []
        self._scopes: list[ExpertsScope] = []

    def __len__(self) -> int:
        return len(self.cells)

    def select(self, rows: Sequence[int] | torch.Tensor | None) -> None:
        """The cell of each row of the next forward passes (None: every row runs the first cell)."""
        self.rows = None if rows is None else torch.as_tensor(rows, dtype=torch.long).cpu()
        self._selected = True
        self._placed.clear()

    def _check_rows(self, batch: int) -> None:
        if not self._selected or (self.rows is not None and len(self.rows) != batch):
            raise HeditError(f"cell rows name {0 if self.rows is None else len(self.rows)} rows; the batch has {batch}")

    def _factors(self, site: Site, x: torch.Tensor) -> torch.Tensor:
        """[rows, 1, I] for a [rows, tokens, I] input; [tokens, I] for a flattened one (a mixture's
        shared expert sees [rows * tokens, I])."""
        key = (site, x.device, x.dim())
        if key not in self._placed:
            table = self.tables[site].to(x.device)
            if self.rows is None:
                self._check_rows(x.shape[0])
                self._placed[key] = table[0]
            elif x.dim() == 2:
                self._check_rows(self._batch)
                self._placed[key] = table[self.rows.to(x.device)].repeat_interleave(self._length, dim=0)
            else:
                self._check_rows(x.shape[0])
                self._placed[key] = table[self.rows.to(x.device)].unsqueeze(1)
        return self._placed[key]

    def _expert_scale(self, layer: int, batch: int, expert: int, tokens: torch.Tensor) -> torch.Tensor:
        """Factors [tokens, I] of ``expert`` at flattened token positions ``tokens`` (row = token // length)."""
        table = self.experts[layer][:, expert]  # [cells, I]
        if self.rows is None:
            self._check_rows(batch)
            return table[0]
        self._check_rows(batch)
        return table[self.rows[(tokens.cpu() // self._length)]]

    def __enter__(self) -> CellScales:
        for site in self.tables:
            hook = _hook(lambda x, site=site: self._factors(site, x))
            self._handles.append(site_module(self.model, site)[0].register_forward_pre_hook(hook))
        routing = get_architecture(self.model.config.model_type).moe.routing if self.experts else None
        for layer in self.experts:
            module, _ = site_module(self.model, (layer, 0))
            scope = ExpertsScope(
                module,
                scale=lambda e, tok, layer=layer: self._expert_scale(layer, self._batch, e, tok),
                routing=routing,
            )
            self._scopes.append(scope.__enter__())
        # a mixture's experts see flattened tokens: the batch and length come from the model's input
        self._handles.append(self.model.register_forward_pre_hook(self._shape_hook, with_kwargs=True))
        return self

    def _shape_hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        ref = ids if ids is not None else kwargs.get("inputs_embeds")
        self._batch, self._length = int(ref.shape[0]), int(ref.shape[1])
        self._placed = {k: v for k, v in self._placed.items() if k[2] != 2}  # flattened factors follow the length

    def __exit__(self, *exc) -> None:
        release(self._handles, self._scopes)


def release(handles: list, scopes: list) -> None:
    """Remove the hooks and leave the experts scopes a set of scales entered (emptying both lists)."""
    for h in handles:
        h.remove()
    handles.clear()
    for scope in scopes:
        scope.__exit__()
    scopes.clear()


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
