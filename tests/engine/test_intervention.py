import pytest
import torch

from hedit.edit.scaling import scale_columns_
from hedit.engine.intervention import down_proj_module, scale_neurons
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


@pytest.mark.parametrize("model_type", ARCHS)
def test_cell_scales_give_each_row_its_own_edit(model_type):
    """Rows of one batch under different cells compute what each cell computes alone."""
    from hedit.engine.intervention import CellScales, model_shape

    model = tiny_model(model_type)
    ns = neuron_set(model_type, per_layer=6)
    cells = [{}, ns.plan(0.0), ns.plan(2.5), {1: [(3, 0.0)]}]
    ids = torch.tensor([[3, 17, 42, 9, 100, 5], [8, 1, 77, 5, 2, 64]])
    rows = [2, 0, 1, 3, 1, 2]  # the cell of each row: three prompts, any order, cells repeated
    batch = ids[[0, 0, 1, 1, 0, 1]]
    with torch.no_grad():
        with CellScales(model, cells) as scales:
            scales.select(rows)
            mixed = model(batch).logits
        for r, c in enumerate(rows):
            with scale_neurons(model, cells[c]):
                alone = model(batch[r : r + 1]).logits
            assert (mixed[r] - alone[0]).abs().max() < 1e-5, (r, c)
        assert (mixed[1] - mixed[4]).abs().max() > 1e-2  # the cells do differ
        assert torch.equal(model(ids).logits, model(ids).logits)
    assert not any(down_proj_module(model, i)._forward_pre_hooks for i in range(model_shape(model)[1]))


def test_cell_scales_checks():
    from hedit.engine.intervention import CellScales

    model = tiny_model("llama")
    with pytest.raises(HeditError, match="layer 9 out of range"):
        CellScales(model, [{}, {9: [(0, 0.0)]}])
    with CellScales(model, [{}, {1: [(0, 0.0)]}]) as scales, torch.no_grad():
        with pytest.raises(HeditError, match="cell rows name 0 rows; the batch has 2"):
            model(torch.tensor([[1, 2], [3, 4]]))
        scales.select([0, 1, 1])
        with pytest.raises(HeditError, match="cell rows name 3 rows; the batch has 2"):
            model(torch.tensor([[1, 2], [3, 4]]))
