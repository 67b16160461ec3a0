"""Models larger than one device: accelerate's device map with part of a tiny model offloaded to disk. The
runtime intervention, the CETT hooks and verify give the same numbers as on the whole model."""

from __future__ import annotations

import pytest
import torch

from hedit.check.verify import verify
from hedit.edit.checkpoint import edit_checkpoint
from hedit.engine.intervention import scale_neurons
from hedit.errors import HeditError
from hedit.find.features import CettHooks, Item, batch_features
from hedit.model.load import load_model, parse_max_memory

from conftest import neuron_set

OFFLOAD = {"device_map": "auto", "max_memory": "cpu=500KB"}  # the last layer, norm and head on disk


@pytest.fixture(scope="module")
def models(tmp_path_factory, checkpoint):
    src = checkpoint("llama")
    folder = tmp_path_factory.mktemp("offload")
    whole = load_model(src)
    split = load_model(src, **OFFLOAD, offload_folder=folder)
    places = set(split.hf_device_map.values())
    assert "disk" in places and "cpu" in places  # part of the model really is offloaded
    return src, whole, split


def test_intervention_across_devices(models):
    _, whole, split = models
    ns = neuron_set("llama", per_layer=6)
    ids = torch.tensor([[5, 9, 22, 40, 77, 3]])
    with torch.no_grad(), scale_neurons(whole, ns, 0.0):
        want = whole(ids).logits
    with torch.no_grad(), scale_neurons(split, ns, 0.0):
        got = split(ids).logits
    with torch.no_grad():
        plain = split(ids).logits
    assert torch.allclose(got, want, atol=1e-5) and (plain - want).abs().max() > 1e-2


def test_cett_hooks_across_devices(models):
    _, whole, split = models
    items = [
        Item([5, 9, 22, 40, 77, 3, 8], {"answer": [5, 6], "other": [0, 1, 2, 3, 4]}, {}),
        Item([1, 2, 3, 4], {"answer": [3], "other": [0, 1, 2]}, {}),
    ]
    feats = []
    for m in (whole, split):
        hooks = CettHooks(m)
        try:
            feats.append(batch_features(m, hooks, items, ("answer", "other"), 0))
        finally:
            hooks.remove()
    assert torch.allclose(feats[0], feats[1], atol=1e-6) and feats[0].abs().max() > 0


def test_verify_with_a_device_map(models, tmp_path):
    src, _, _ = models
    ns = neuron_set("llama", per_layer=6)
    edit_checkpoint(src, ns, tmp_path / "e", alpha=0.0, progress=False)
    r = verify(
        src, ns, 0.0, edited=tmp_path / "e", new_tokens=3, placement=OFFLOAD | {"offload_folder": tmp_path / "off"}
    )
    assert r.passed and r.max_abs_logit_diff < 1e-4 and r.effect > 1e-2


def test_max_memory_is_parsed_or_refused():
    assert parse_max_memory("0=20GiB, cpu=60GiB") == {0: "20GiB", "cpu": "60GiB"}
    assert parse_max_memory(None) is None
    with pytest.raises(HeditError, match="--max-memory takes DEVICE=SIZE pairs"):
        parse_max_memory("20GiB")
