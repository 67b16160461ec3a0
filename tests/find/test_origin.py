"""`hedit origin`: parameter drift from base to instruct, streamed, ranked and set against random neurons;
the probe's transfer to the base model's activations."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from hedit.errors import HeditError
from hedit.find.origin import run_origin
from hedit.model.tiny import save_tiny_model
from hedit.neurons import ModelInfo, Neuron, NeuronSet

from conftest import INTER, LAYERS, add_tokenizer, run_cli, yes_no_questions


def instruct_of(base, out, unchanged: dict[int, list[int]], model_type="llama", scale=0.05, seed=1):
    """A copy of ``base`` whose MLP weights moved, except the ``unchanged`` neurons' rows and columns."""
    import shutil

    shutil.copytree(base, out)
    sd = load_file(out / "model.safetensors")
    g = torch.Generator().manual_seed(seed)
    for name, t in sd.items():
        if ".mlp." not in name:
            continue
        layer = int(name.split(".")[2])
        noise = torch.randn(t.shape, generator=g) * scale
        keep = unchanged.get(layer, [])
        if "down_proj" in name:
            noise[:, keep] = 0
        elif "gate_up_proj" in name:
            noise[keep] = 0
            noise[[INTER + j for j in keep]] = 0
        else:
            noise[keep] = 0
        sd[name] = (t.float() + noise).to(t.dtype).contiguous()
    save_file(sd, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.mark.parametrize("model_type", ["llama", "phi3"])
def test_unchanged_neurons_rank_lowest_exactly(checkpoint, tmp_path, model_type):
    base = checkpoint(model_type)
    chosen = {0: [3, 50], 2: [7]}
    inst = instruct_of(base, tmp_path / "inst", chosen, model_type)
    ns = NeuronSet(ModelInfo(model_type, LAYERS, INTER), [Neuron(la, j) for la, idx in chosen.items() for j in idx])
    r = run_origin(base, inst, ns, tmp_path / "o", draws=500, progress=False)
    k, n = 3, LAYERS * INTER
    h = r["h_neurons"]
    assert h["mean_rank"] == pytest.approx((k - 1) / 2 / (n - 1))  # the three zeros share the lowest ranks
    assert h["p_lower_than_random"] == pytest.approx(1 / 501) and h["random_mean_rank"]["mean"] > 0.4
    assert all(p["drift"] < 1e-12 for p in r["per_neuron"]) and r["drift_all"]["mean"] > 1e-4
    assert (tmp_path / "o" / "drift.png").stat().st_size > 1000 and (tmp_path / "o" / "origin.json").is_file()


def test_pairs_of_another_shape_are_refused(checkpoint, tmp_path):
    other = save_tiny_model(tmp_path / "wide", "llama", intermediate_size=128)
    ns = NeuronSet(ModelInfo("llama", LAYERS, INTER), [Neuron(0, 1)])
    with pytest.raises(HeditError, match="base and instruct differ"):
        run_origin(checkpoint("llama"), other, ns, tmp_path / "o", progress=False)
    with pytest.raises(HeditError, match="base and instruct differ"):
        run_origin(checkpoint("llama"), checkpoint("qwen2"), ns, tmp_path / "o", progress=False)


def test_probe_transfer_to_the_same_model_is_the_heldout_figures(tmp_path, yes_judge):
    """Base = instruct: the base model's features are the instruct model's, so the transfer column equals
    the probe's own held-out figures, exactly (the consistency check)."""
    from hedit.config import IdentifyConfig
    from hedit.find.identify import identify

    model = add_tokenizer(save_tiny_model(tmp_path / "m", "llama"))
    cfg = IdentifyConfig(samples=2, max_new_tokens=4, batch_size=8, random_draws=2, c_grid=(0.1, 1.0, 10.0))
    rep = identify(str(model), yes_no_questions(), tmp_path / "id", cfg, progress=False, log=lambda *a: None)
    ns_file = tmp_path / "id" / "neurons.json"
    r = run_origin(model, model, ns_file, tmp_path / "o", identify_work=tmp_path / "id", draws=200, progress=False)
    t = r["probe_transfer"]
    assert t["probe"]["auroc"] == rep["heldout"]["auroc"] and t["probe"]["accuracy"] == rep["heldout"]["accuracy"]
    assert r["h_neurons"]["mean_rank"] == pytest.approx(0.5, abs=0.2)  # nothing moved: every drift is 0, one rank
    res = run_cli(
        "origin",
        "--base",
        model,
        "--instruct",
        model,
        "--neurons",
        ns_file,
        "--out",
        tmp_path / "c",
        "--draws",
        "100",
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    assert "H-neurons' mean rank of parameter drift" in res.output
    assert json.loads((tmp_path / "c" / "origin.json").read_text())["h_neurons"]["neurons"] == len(
        NeuronSet.load(ns_file).neurons
    )


CHILD = r"""
import sys, resource
from hedit.find.origin import drift
from hedit.io.checkpoint import open_checkpoint
a, b = (open_checkpoint(p) for p in sys.argv[1:3])
drift(a, b, progress=False)
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) // 1024)
"""


@pytest.mark.slow
def test_drift_streams_one_layer_at_a_time(tmp_path):
    """Two 386 MB checkpoints: peak memory stays below one of them (one layer's MLP at a time, not two models)."""
    kw = dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
        head_dim=128,
    )
    a = save_tiny_model(tmp_path / "a", "llama", **kw)
    b = save_tiny_model(tmp_path / "b", "llama", seed=1, **kw)
    size = (a / "model.safetensors").stat().st_size / 2**20
    idle = subprocess.run(
        [
            sys.executable,
            "-c",
            "import hedit.find.origin, torch; print(next(int(l.split()[1]) "
            "for l in open('/proc/self/status') if l.startswith('VmHWM')) // 1024)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    r = subprocess.run([sys.executable, "-c", CHILD, str(a), str(b)], capture_output=True, text=True, check=True)
    peak = int(r.stdout.strip()) - int(idle.stdout.strip())
    assert size > 300 and peak < size, (peak, size)
