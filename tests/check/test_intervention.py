import pytest
import torch

from hedit.check.intervention import down_proj_module, scale_neurons
from hedit.edit.scaling import scale_columns_
from hedit.errors import HeditError
from hedit.model.tiny import tiny_model

from conftest import ARCHS, neuron_set


@pytest.mark.parametrize("model_type", ARCHS)
def test_hooks_equal_scaled_weights_and_are_removed(model_type):
    model = tiny_model(model_type)
    ids = torch.tensor([[3, 17, 42, 9, 100, 5]])
    ns = neuron_set(model_type, per_layer=6)
    with torch.no_grad():
        plain = model(ids).logits
        with scale_neurons(model, ns, alpha=0.0):
            hooked = model(ids).logits
        after = model(ids).logits
        for layer, pairs in ns.plan(0.0).items():
            cols, alphas = zip(*pairs)
            scale_columns_(down_proj_module(model, layer).weight.data, list(cols), list(alphas))
        folded = model(ids).logits
    assert torch.equal(after, plain)  # hooks removed on exit
    assert (hooked - plain).abs().max() > 1e-2  # the intervention does something
    assert (hooked - folded).abs().max() < 1e-5


def test_mapping_form_and_shape_checks():
    model = tiny_model("llama")
    with pytest.raises(HeditError, match="made for another model"):
        with scale_neurons(model, neuron_set(num_layers=5), alpha=0.0):
            pass
    with pytest.raises(HeditError, match="layer 9 out of range"):
        with scale_neurons(model, {9: [(0, 0.0)]}):
            pass
    assert not down_proj_module(model, 0)._forward_pre_hooks  # nothing left registered
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad(), scale_neurons(model, {1: [(5, 1.0)]}):
        same = model(ids).logits
    assert torch.equal(same, model(ids).logits)  # alpha = 1 is the identity
