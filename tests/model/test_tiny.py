import json

import pytest

from hedit.model.tiny import random_neurons, save_tiny_model
from hedit.registry import get_architecture

from conftest import ARCHS, INTER, LAYERS


def test_random_neurons_are_distinct_per_layer_and_seeded():
    pairs = random_neurons(4, 50, 7, seed=3)
    assert len(pairs) == 28
    for layer in range(4):
        idx = [i for lay, i in pairs if lay == layer]
        assert len(set(idx)) == 7 and idx == sorted(idx) and all(0 <= i < 50 for i in idx)
    assert pairs == random_neurons(4, 50, 7, seed=3) and pairs != random_neurons(4, 50, 7, seed=4)
    assert {lay for lay, _ in random_neurons(4, 50, 2, layers=[1, 3])} == {1, 3}


@pytest.mark.parametrize("model_type", ARCHS)
def test_saved_configs_have_the_declared_shape(tmp_path, model_type):
    path = save_tiny_model(tmp_path / "m", model_type)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == model_type
    assert get_architecture(model_type).shape(config) == (LAYERS, INTER)
