"""Random control neuron sets: as many neurons in each layer as the H-neurons, none of them."""

from __future__ import annotations

import numpy as np

from hedit.errors import HeditError
from hedit.neurons import NeuronSet


def control_sets(neurons: NeuronSet, draws: int, seed: int = 0) -> list[dict[int, list[int]]]:
    """Random neuron sets, each with the same number of neurons in each layer as ``neurons`` and none
    of them; draw k depends only on (seed, k), so adding draws keeps the earlier ones."""
    inter = neurons.model.intermediate_size
    chosen = {layer: set(idx) for layer, idx in neurons.by_layer().items()}
    out = []
    for k in range(draws):
        rng = np.random.default_rng([seed, k])
        draw = {}
        for layer in sorted(chosen):
            pool = np.setdiff1d(np.arange(inter), np.fromiter(chosen[layer], dtype=np.int64))
            if len(pool) < len(chosen[layer]):
                raise HeditError(f"layer {layer} has too few other neurons for a random control set")
            draw[layer] = sorted(int(i) for i in rng.choice(pool, size=len(chosen[layer]), replace=False))
        out.append(draw)
    return out
