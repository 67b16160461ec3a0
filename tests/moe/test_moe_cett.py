"""CETT of expert neurons against a hand computation in float64, and the sparse features folder."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hedit.engine.intervention import experts_shape, site_module
from hedit.find.cett_moe import MoeCettHooks
from hedit.find.features import Item, batch_features
from hedit.model.tiny import tiny_model
from hedit.registry import get_architecture


def hand_cett(model, ids: list[int], positions: list[int]) -> dict:
    """site -> mean CETT over ``positions``, from the weights in float64: the router's top-k weights g,
    z = silu(x W_gate^T) * (x W_up^T) of each routed expert, |g z| ||W_down[:, j]|| / ||MoE block output||,
    0 where the expert was not routed; a shared expert's z times its sigmoid gate; a dense layer's CETT."""
    m = model.double()
    m.config._experts_implementation = "eager"  # transformers' own loop (grouped_mm takes no float64)
    arch = get_architecture(m.config.model_type)
    shape = experts_shape(m)
    seen = {}
    hooks = []
    for layer in range(shape.num_layers):
        if layer in shape.dense:
            mod, _ = site_module(m, layer)
            hooks.append(
                mod.register_forward_hook(
                    lambda md, a, o, layer=layer: seen.__setitem__(("dense", layer), (a[0][0], o[0]))
                )
            )
            continue
        experts, _ = site_module(m, (layer, 0))
        block = m.get_submodule(arch.site_module(layer, 0)[0].rsplit(".", 1)[0])
        hooks.append(
            experts.register_forward_pre_hook(lambda md, a, layer=layer: seen.__setitem__(("route", layer), a))
        )
        hooks.append(block.register_forward_pre_hook(lambda md, a, layer=layer: seen.__setitem__(("in", layer), a)))
        hooks.append(block.register_forward_hook(lambda md, a, o, layer=layer: seen.__setitem__(("out", layer), o)))
        if shape.shared_intermediate_size:
            sh, _ = site_module(m, (layer, "shared"))
            hooks.append(
                sh.register_forward_hook(lambda md, a, o, layer=layer: seen.__setitem__(("shared", layer), a[0]))
            )
            gate = arch.moe.shared.get("gate")
            if gate:
                g = m.get_submodule(f"{arch.layers_module}.{layer}.{gate}")
                hooks.append(
                    g.register_forward_hook(lambda md, a, o, layer=layer: seen.__setitem__(("sgate", layer), o))
                )
    with torch.no_grad():
        m(torch.tensor([ids]))
    for h in hooks:
        h.remove()
    out = {}
    pos = torch.tensor(positions)
    for layer in range(shape.num_layers):
        if layer in shape.dense:
            z, y = seen[("dense", layer)]
            w = site_module(m, layer)[0].weight
            out[layer] = (z.abs() * w.norm(dim=0) / y.norm(dim=-1, keepdim=True))[pos].mean(0)
            continue
        o = seen[("out", layer)]
        y = (o[0] if isinstance(o, tuple) else o).reshape(len(ids), -1)
        ynorm = y.norm(dim=-1)
        experts, _ = site_module(m, (layer, 0))
        inter = shape.intermediate_size
        if arch.moe.routing == "input":  # Llama 4: sigmoid(top-k router logit) times the expert's input
            x = seen[("in", layer)][0].reshape(len(ids), -1)
            block = m.get_submodule(arch.site_module(layer, 0)[0].rsplit(".", 1)[0])
            logits = x @ block.router.weight.T
            top = logits.topk(m.config.num_experts_per_tok, dim=-1)
            for e in range(shape.num_experts):
                s = (torch.sigmoid(top.values) * (top.indices == e)).sum(-1)  # 0 where e was not routed
                gu = (x * s[:, None]) @ experts.gate_up_proj[e]  # [H, 2I], gate first
                z = F.silu(gu[:, :inter]) * gu[:, inter:]  # enters the output unweighted
                cett = z.abs() * experts.down_proj[e].norm(dim=1) / ynorm[:, None]
                out[(layer, e)] = cett[pos].mean(0)
        for e in range(shape.num_experts if arch.moe.routing == "output" else 0):
            hidden, index, weights = seen[("route", layer)]
            gu = hidden @ experts.gate_up_proj[e].T
            z = F.silu(gu[:, :inter]) * gu[:, inter:]
            g = (weights * (index == e)).sum(-1)  # 0 where e was not routed
            cett = (g[:, None] * z).abs() * experts.down_proj[e].norm(dim=0) / ynorm[:, None]
            out[(layer, e)] = cett[pos].mean(0)
        if shape.shared_intermediate_size:
            z = seen[("shared", layer)].reshape(len(ids), -1)
            if ("sgate", layer) in seen:
                z = z * torch.sigmoid(seen[("sgate", layer)].reshape(len(ids), 1))
            w = site_module(m, (layer, "shared"))[0].weight
            out[(layer, "shared")] = (z.abs() * w.norm(dim=0) / ynorm[:, None])[pos].mean(0)
    m.float()
    m.config._experts_implementation = None
    return {k: v.detach() for k, v in out.items()}


@pytest.mark.parametrize("model_type", ["qwen2_moe", "deepseek_v3", "qwen3_moe", "mixtral", "llama4_text"])
def test_expert_cett_matches_a_hand_computation(model_type):
    model = tiny_model(model_type)
    seqs = [list(range(3, 14)), [5, 9, 2, 40, 41, 7]]
    batch = [Item(s, {"answer": [len(s) - 3, len(s) - 1], "other": list(range(len(s) - 3))}, {}) for s in seqs]
    hooks = MoeCettHooks(model)
    batch_features(model, hooks, batch, ("answer", "other"), pad_id=0, collect=False)
    cols = hooks.columns
    got_rows = {(r, b): hooks.rows(r, b) for b in range(len(batch)) for r in range(2)}
    hooks.remove()
    checked = zero = 0
    for b, it in enumerate(batch):
        for r, region in enumerate(("answer", "other")):
            ref = hand_cett(model, it.ids, it.masks[region])
            c, v, _, _ = got_rows[(r, b)]
            row = np.zeros(cols.total)
            row[c] = v
            for site, want in ref.items():
                got = row[cols.offset(site) : cols.offset(site) + len(want)]
                assert np.allclose(got, want.numpy(), rtol=1e-4, atol=1e-6), (model_type, site, region)
                checked += 1
                zero += int(not want.any())
    assert checked and zero  # some experts were never routed in a region: their neurons are exactly 0
    assert not any(site_module(model, (1, 0))[0].__dict__.get("forward") for _ in [0])  # the wrapper is gone
