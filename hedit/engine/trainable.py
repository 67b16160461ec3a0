"""The runtime intervention with a gradient: one float32 scale per chosen neuron, trainable, nothing else.

``TrainableScales(model, sites)`` holds, for each site (a layer's MLP, or (layer, expert) in a mixture of
experts), a parameter vector over that site's chosen neuron indices, initialised to 1 (or to given
alphas). While entered, each site's activation ``z`` (the down projection's input; inside a fused experts
module, the expert's activation) is multiplied by a vector that is 1 everywhere except at the chosen
indices, where it is the parameter: the same multiply as ``hedit.engine.intervention.scale_neurons``,
so a fitted vector written into a neurons file edits exactly what was fitted. The model's own weights
are never trainable (callers keep them ``requires_grad=False``); gradients reach the scales only.

Attribution uses the same hooks with every neuron of every site chosen (``all_sites``): the gradient of
a loss with respect to each scale at 1 is one backward pass per batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from hedit.engine.experts import ExpertsScope
from hedit.engine.intervention import _hook, experts_shape, model_shape, release, site_module, site_width
from hedit.neurons import Site, split_site
from hedit.registry import get_architecture


def all_sites(model: torch.nn.Module) -> dict[Site, list[int]]:
    """Every neuron of every site of ``model``: its dense layers' MLPs and, in a mixture of experts,
    each routed expert and the shared expert (``ExpertsShape.sites``)."""
    shape = experts_shape(model)
    if shape is None:
        _, layers, inter = model_shape(model)
        return {layer: list(range(inter)) for layer in range(layers)}
    out: dict[Site, list[int]] = {}
    for layer, expert in shape.sites():
        site = layer if expert is None else (layer, expert)
        out[site] = list(range(shape.width(layer, expert)))
    return out


class TrainableScales:
    """Per site a trainable scale vector over chosen neurons (``params[site]``), applied while entered."""

    def __init__(
        self,
        model: torch.nn.Module,
        sites: Mapping[Site, Sequence[int]],
        init: Mapping[Site, Sequence[float]] | None = None,
    ):
        self.model = model
        self.index: dict[Site, torch.Tensor] = {}
        self.params: dict[Site, torch.nn.Parameter] = {}
        self.width: dict[Site, int] = {}
        for site, idx in sites.items():
            if not len(idx):
                continue
            self.index[site] = torch.as_tensor(list(idx), dtype=torch.long)
            start = torch.ones(len(idx)) if init is None else torch.as_tensor(list(init[site]), dtype=torch.float32)
            self.params[site] = torch.nn.Parameter(start.clone().float())
            self.width[site] = site_width(model, site)
        self._handles: list = []
        self._scopes: list[ExpertsScope] = []

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.params.values())

    def vector(self, site: Site, device: torch.device | None = None) -> torch.Tensor:
        """The site's full factor vector [width]: 1, and the parameters at the chosen indices."""
        p = self.params[site]
        full = torch.ones(self.width[site], dtype=torch.float32, device=p.device)
        out = full.scatter(0, self.index[site].to(p.device), p)
        return out if device is None else out.to(device)

    def alphas(self) -> dict[Site, list[tuple[int, float]]]:
        """The current scales as a plan: site -> [(neuron index, alpha)], sorted."""
        return {
            site: sorted(zip(self.index[site].tolist(), p.detach().float().tolist())) for site, p in self.params.items()
        }

    def __enter__(self) -> TrainableScales:
        experts: dict[int, dict[int, Site]] = {}
        for site in self.params:
            layer, expert = split_site(site)
            if isinstance(expert, int):
                experts.setdefault(layer, {})[expert] = site
                continue
            module, _ = site_module(self.model, site)
            self._handles.append(module.register_forward_pre_hook(_hook(lambda x, s=site: self.vector(s, x.device))))
        routing = get_architecture(self.model.config.model_type).moe.routing if experts else None
        for layer, by_expert in experts.items():
            module, _ = site_module(self.model, (layer, 0))

            def scale(e, tok, by_expert=by_expert):
                site = by_expert.get(e)
                return None if site is None else self.vector(site, tok.device)

            self._scopes.append(ExpertsScope(module, scale=scale, routing=routing).__enter__())
        return self

    def __exit__(self, *exc) -> None:
        release(self._handles, self._scopes)
