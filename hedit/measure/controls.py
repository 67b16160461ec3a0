"""Random control neuron sets: as many neurons at each site (a layer, or in a mixture of experts a
(layer, expert)) as the H-neurons, none of them."""

from __future__ import annotations

import numpy as np

from hedit.errors import HeditError
from hedit.neurons import NeuronSet, site_name, split_site


def control_sets(neurons: NeuronSet, draws: int, seed: int = 0, experts=None) -> list[dict]:
    """Random neuron sets, each with the same number of neurons at each site as ``neurons`` and none
    of them; draw k depends only on (seed, k), so adding draws keeps the earlier ones. ``experts``: the
    model's ``ExpertsShape`` (a mixture's sites have their own widths)."""
    inter = neurons.model.intermediate_size
    chosen = {site: set(idx) for site, idx in neurons.by_layer().items()}
    out = []
    for k in range(draws):
        rng = np.random.default_rng([seed, k])
        draw = {}
        for site in chosen:
            width = inter if experts is None else experts.width(*split_site(site))
            pool = np.setdiff1d(np.arange(width), np.fromiter(chosen[site], dtype=np.int64))
            if len(pool) < len(chosen[site]):
                raise HeditError(f"{site_name(site)} has too few other neurons for a random control set")
            draw[site] = sorted(int(i) for i in rng.choice(pool, size=len(chosen[site]), replace=False))
        out.append(draw)
    return out
