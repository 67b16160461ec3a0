import pytest

from hedit.edit.plan import make_plan
from hedit.errors import HeditError

from conftest import neuron_set


def test_plan_from_file_and_object(checkpoint, neurons_file):
    src = checkpoint("qwen3")
    from_file = make_plan(src, neurons_file("qwen3", per_layer=3), alpha=1.5)
    from_obj = make_plan(src, neuron_set("qwen3", per_layer=3), alpha=1.5)
    assert from_file.layers == from_obj.layers
    assert from_file.num_neurons == 9 and from_file.alphas() == [1.5] and from_file.cli_alpha == 1.5


def test_plan_checks_the_model(checkpoint):
    with pytest.raises(HeditError, match="made for another model: llama"):
        make_plan(checkpoint("qwen3"), neuron_set("llama"), 0.0)
