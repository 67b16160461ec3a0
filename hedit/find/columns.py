"""The probe's column space: every neuron of the model, site by site.

A dense model's columns are layer-major (layer * intermediate + index), as they always were. A mixture
of experts' columns go site by site (``hedit.registry.ExpertsShape.sites``: a dense layer's MLP, then
each routed expert of an MoE layer, then its shared expert), each site as wide as its intermediate size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from hedit.neurons import Neuron, Site, site_of, split_site


@dataclass(frozen=True)
class Columns:
    sites: tuple[Site, ...]
    widths: tuple[int, ...]
    moe: bool = False

    @classmethod
    def dense(cls, layers: int, inter: int) -> Columns:
        return cls(tuple(range(layers)), (inter,) * layers)

    @classmethod
    def of(cls, experts) -> Columns:
        """The columns of an ``ExpertsShape``."""
        sites = tuple(site_of(layer, e) for layer, e in experts.sites())
        return cls(sites, tuple(experts.width(*split_site(s)) for s in sites), True)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Columns:
        if "sites" not in meta:
            return cls.dense(meta["num_layers"], meta["intermediate_size"])
        sites = tuple(site_of(layer, e) for layer, e, _ in meta["sites"])
        return cls(sites, tuple(w for _, _, w in meta["sites"]), True)

    def to_meta(self) -> list[list]:
        return [[*split_site(s), w] for s, w in zip(self.sites, self.widths)]

    @cached_property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.widths)]).astype(np.int64)

    @cached_property
    def _position(self) -> dict:
        return {site: k for k, site in enumerate(self.sites)}

    @property
    def total(self) -> int:
        return int(sum(self.widths))

    def width(self, site: Site) -> int:
        return self.widths[self._position[site]]

    def offset(self, site: Site) -> int:
        return int(self.offsets[self._position[site]])

    def site_of(self, column: int) -> tuple[Site, int]:
        """(site, index) of a column."""
        k = int(np.searchsorted(self.offsets, int(column), side="right")) - 1
        return self.sites[k], int(column) - int(self.offsets[k])

    def neuron(self, column: int, **kw) -> Neuron:
        site, index = self.site_of(column)
        layer, expert = split_site(site)
        return Neuron(layer, index, expert=expert, **kw)

    def where(self, column: int) -> dict[str, Any]:
        """{"layer", ("expert",) "index"} of a column, for reports."""
        site, index = self.site_of(column)
        layer, expert = split_site(site)
        return {"layer": layer} | ({"expert": expert} if expert is not None else {}) | {"index": index}

    def random_like(self, cols: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """As many random columns as ``cols``: uniform over the model (dense), or from the same sites
        in the same numbers (a mixture of experts: an H-neuron's expert is compared with itself)."""
        if not self.moe:
            return np.sort(rng.choice(self.total, size=len(cols), replace=False))
        offsets = self.offsets
        out = []
        sites = np.searchsorted(offsets, cols, side="right") - 1
        for k in np.unique(sites):
            n = int((sites == k).sum())
            out.append(offsets[k] + rng.choice(self.widths[k], size=n, replace=False))
        return np.sort(np.concatenate(out))

    def plan(self, cols, alpha: float) -> dict[Site, list[tuple[int, float]]]:
        out: dict[Site, list[tuple[int, float]]] = {}
        for c in cols:
            site, index = self.site_of(int(c))
            out.setdefault(site, []).append((index, alpha))
        return out
