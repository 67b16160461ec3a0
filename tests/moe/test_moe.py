"""Mixtures of experts, family by family: the runtime intervention equals the folded weights, the edited
checkpoint (both expert layouts, both targets) equals the intervention, and bad input is refused."""

import copy
import dataclasses

import pytest
import torch

from hedit.edit.writers import write_artifact
from hedit.engine.intervention import CellScales, experts_shape, scale_neurons, site_module
from hedit.errors import HeditError
from hedit.model.load import auto_class
from hedit.model.tiny import save_tiny_model, tiny_model
from hedit.neurons import ModelInfo, Neuron, NeuronSet, split_site
from hedit.registry import get_architecture

from conftest import MOE_ARCHS

IDS = torch.tensor([[1, 5, 9, 33, 7, 8, 100, 3], [4, 4, 5, 6, 7, 8, 9, 10]])


def _load(path):
    """A checkpoint as hedit loads it: the registry's Auto class."""
    return auto_class(path).from_pretrained(path)


def every_site(shape, alphas=(0.0, 2.5)) -> dict:
    """Two neurons at every site (first and last but one), at the given alphas."""
    return {
        site: [(1, alphas[0]), (shape.width(*split_site(site)) - 2, alphas[1])] for site in map(_site, shape.sites())
    }


def _site(pair):
    layer, expert = pair
    return layer if expert is None else (layer, expert)


def neuron_set(model_type, shape, alpha=0.0) -> NeuronSet:
    ns = [
        Neuron(*split_site(s)[:1], j, alpha=a, expert=split_site(s)[1])
        for s, ps in every_site(shape).items()
        for j, a in ps
    ]
    return NeuronSet(
        ModelInfo(model_type, shape.num_layers, shape.intermediate_size, num_experts=shape.num_experts), ns, alpha
    )


def fold(model, layers):
    """The edit in the weights of a copy, by hand: column j of the site's down projection times alpha."""
    f = copy.deepcopy(model)
    transposed = get_architecture(model.config.model_type).moe.transposed
    with torch.no_grad():
        for site, pairs in layers.items():
            mod, kind = site_module(f, site)
            expert = split_site(site)[1]
            for j, a in pairs:
                if kind == "linear":
                    mod.weight[:, j] *= a
                elif transposed:
                    mod.down_proj[expert][j, :] *= a
                else:
                    mod.down_proj[expert][:, j] *= a
    return f


@pytest.mark.parametrize("model_type", MOE_ARCHS)
def test_hooks_equal_folded_weights(model_type):
    model = tiny_model(model_type)
    shape = experts_shape(model)
    layers = every_site(shape)
    with torch.no_grad():
        base = model(IDS).logits
        with scale_neurons(model, layers):
            hooked = model(IDS).logits
        folded = fold(model, layers)(IDS).logits
        with CellScales(model, [{}, layers]) as cells:
            cells.select([1, 0])  # row 0 edited, row 1 not: one batch, two edits
            mixed = model(IDS).logits
        after = model(IDS).logits
    assert (hooked - base).abs().max() > 0.05  # the edit does something
    assert torch.allclose(hooked, folded, atol=1e-5), (hooked - folded).abs().max()
    assert torch.allclose(mixed[0], hooked[0], atol=1e-5) and torch.allclose(mixed[1], base[1], atol=1e-5)
    assert torch.equal(after, base)  # the wrapper is gone when the block ends
    assert not any(
        "forward" in site_module(model, (layer, 0))[0].__dict__
        for layer in range(shape.num_layers)
        if layer not in shape.dense
    )


@pytest.fixture(scope="module", params=MOE_ARCHS)
def moe_checkpoint(request, tmp_path_factory):
    mt = request.param
    path = save_tiny_model(tmp_path_factory.mktemp(mt) / "m", mt)
    model = _load(path).eval()
    return mt, path, model, experts_shape(model)


def test_edited_checkpoint_equals_the_intervention(moe_checkpoint, tmp_path):
    mt, path, model, shape = moe_checkpoint
    ns = neuron_set(mt, shape)
    with torch.no_grad(), scale_neurons(model, ns):
        want = model(IDS).logits
    up_ok = get_architecture(mt).moe.up_exact is True
    for target in ("down", "up") if up_ok else ("down",):
        r = write_artifact(path, ns, tmp_path / target, target=target, progress=False)
        assert r.target == target and len(r.tensors) == len(every_site(shape))
        got = _load(tmp_path / target).eval()
        with torch.no_grad():
            assert torch.allclose(got(IDS).logits, want, atol=1e-5), (mt, target)
    auto = write_artifact(path, ns, tmp_path / "auto", progress=False)
    assert auto.target == ("up" if up_ok else "down")  # rows where rows are exact: only their bytes change
    if not up_ok:
        with pytest.raises(HeditError, match="--target up: gpt_oss's SwiGLU clamps"):
            write_artifact(path, ns, tmp_path / "up", target="up", progress=False)
        assert not (tmp_path / "up").exists()


@pytest.mark.parametrize("model_type", ["qwen3_moe", "deepseek_v3", "mixtral", "qwen2_moe"])
def test_stacked_layout_is_read_and_written(model_type, tmp_path):
    """Checkpoints that store the experts as 3-D tensors (as transformers holds them) edit the same."""
    per = save_tiny_model(tmp_path / "per", model_type)
    stacked = save_tiny_model(tmp_path / "stacked", model_type, stacked=True)
    from safetensors import safe_open

    with safe_open(stacked / "model.safetensors", "pt") as f:
        assert "model.layers.1.mlp.experts.down_proj" in f.keys()
    model = _load(stacked).eval()
    ns = neuron_set(model_type, experts_shape(model), alpha=0.5)
    with torch.no_grad(), scale_neurons(model, ns):
        want = model(IDS).logits
    for target in ("down", "up"):
        for src in (per, stacked):
            out = tmp_path / f"{src.name}-{target}"
            write_artifact(src, ns, out, target=target, progress=False)
            with torch.no_grad():
                got = _load(out).eval()(IDS).logits
            assert torch.allclose(got, want, atol=1e-5), (src.name, target)


def test_bad_expert_neurons_are_refused_in_one_line(tmp_path):
    moe = save_tiny_model(tmp_path / "moe", "qwen3_moe")  # layer 0 dense, 8 experts, no shared expert
    dense = save_tiny_model(tmp_path / "dense", "llama")
    info = ModelInfo("qwen3_moe", 3, 32, num_experts=8)
    cases = [
        ([Neuron(1, 3, expert=8)], info, moe, "expert 8 in layer 1 out of range"),
        ([Neuron(1, 3, expert="shared")], info, moe, "layer 1 has no shared expert"),
        ([Neuron(0, 3, expert=2)], info, moe, "layer 0 is a dense layer: it has no expert 2"),
        ([Neuron(1, 3)], info, moe, "layer 1 is a mixture-of-experts layer: a neuron there needs an 'expert'"),
        ([Neuron(0, 96)], info, moe, "neuron index 96 in layer 0 out of range: its width is 96"),
        ([Neuron(1, 3, expert=2)], ModelInfo("qwen3_moe", 3, 32, num_experts=16), moe, "16 experts per layer"),
        ([Neuron(1, 3, expert=2)], ModelInfo("llama", 3, 96), dense, "names experts .* llama is a dense model"),
    ]
    for neurons, model_info, src, msg in cases:
        with pytest.raises(HeditError, match=msg):
            write_artifact(src, NeuronSet(model_info, neurons, alpha=0.0), tmp_path / "out", progress=False)
        assert not (tmp_path / "out").exists()
    ns = NeuronSet(info, [Neuron(1, 3, expert=2)], alpha=0.0)
    with pytest.raises(HeditError, match="ia3 format cannot hold expert neurons: PEFT.s IA3 scales nn.Linear"):
        write_artifact(moe, ns, tmp_path / "out", "ia3", progress=False)
    # a hand-written file without num_experts is accepted and checked against the model
    plain = NeuronSet(ModelInfo("qwen3_moe", 3, 32), [Neuron(1, 3, expert=7), Neuron(0, 50)], alpha=0.0)
    assert write_artifact(moe, plain, tmp_path / "ok", progress=False).tensors


def test_a_missing_expert_tensor_is_refused_before_writing(tmp_path):
    from safetensors.torch import load_file, save_file

    src = save_tiny_model(tmp_path / "m", "qwen2_moe")
    state = load_file(src / "model.safetensors")
    del state["model.layers.2.mlp.experts.5.up_proj.weight"]
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})
    ns = NeuronSet(ModelInfo("qwen2_moe", 3, 32, num_experts=8), [Neuron(1, 3, expert=2)], alpha=0.0)
    with pytest.raises(HeditError, match=r"layer 2 has no mlp.experts.5.up_proj.weight \(expert 5 of 8\)"):
        write_artifact(src, ns, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_neuron_file_round_trip_keeps_experts(tmp_path):
    ns = NeuronSet(
        ModelInfo("qwen2_moe", 3, 32, num_experts=8), [Neuron(1, 3, expert=2), Neuron(2, 40, expert="shared")]
    )
    ns.save(tmp_path / "n.json")
    back = NeuronSet.load(tmp_path / "n.json")
    assert back.neurons == ns.neurons and back.model.num_experts == 8
    assert list(back.by_layer()) == [(1, 2), (2, "shared")]
    dense = NeuronSet(ModelInfo("llama", 3, 96), [Neuron(0, 1)])
    assert "expert" not in str(dense.to_dict()) and "num_experts" not in str(dense.to_dict())  # dense files as before
    for bad in ({"expert": "router"}, {"expert": 1.5}):
        d = ns.to_dict()
        d["neurons"][0] |= bad
        with pytest.raises(HeditError, match=r"neurons\[0\].expert must be an expert's number or \"shared\""):
            NeuronSet.from_dict(d)


def test_lora_is_exact_in_peft_and_checked_by_structure(moe_checkpoint, tmp_path):
    """Expert neurons as PEFT parameter targets (rank r per expert): base + adapter equals the intervention;
    the structure check recomputes every tensor; a wrong alpha fails."""
    from hedit.check.verify import verify, verify_artifact
    from hedit.config import VerifyConfig

    mt, path, model, shape = moe_checkpoint
    ns = neuron_set(mt, shape)
    ns = NeuronSet(ns.model, [dataclasses.replace(n, alpha=None) for n in ns.neurons], alpha=0.0)  # one alpha
    r = write_artifact(path, ns, tmp_path / "lora", "lora", progress=False)
    assert r.target == "down" and r.info["expert_parameters"]
    got = verify(path, ns, 0.0, adapter=tmp_path / "lora", new_tokens=4)
    assert got.passed and got.max_abs_logit_diff < 1e-4 and got.effect > 1e-2, got
    assert verify_artifact(path, ns, 0.0, adapter=tmp_path / "lora", cfg=VerifyConfig(runtime="structure")).passed
    assert not verify(path, ns, 0.5, adapter=tmp_path / "lora", new_tokens=4).passed
    with pytest.raises(HeditError, match="(carries down_proj columns|gpt_oss.s SwiGLU clamps).*use --target down"):
        write_artifact(path, ns, tmp_path / "up", "lora", target="up", progress=False)


def _moved_except(base, out, keep: dict):
    """A copy of ``base`` whose MLP weights all moved, except the ``keep`` neurons' gate and up rows and
    down columns ((layer, expert) -> indices; per-expert tensors, or gpt_oss's stacked transposed ones)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(base, out)
    sd = load_file(out / "model.safetensors")
    g = torch.Generator().manual_seed(1)
    for name, t in sd.items():
        if ".mlp." not in name or t.dim() < 2:
            continue
        noise = torch.randn(t.shape, generator=g) * 0.05
        layer = int(name.split(".")[2])
        for (la, e), idx in keep.items():
            if la != layer:
                continue
            if t.dim() == 3:  # gpt_oss: down [E, I, H] rows; gate_up [E, H, 2I], gate and up interleaved
                if "down_proj" in name:
                    noise[e, idx] = 0
                else:
                    noise[e][:, [2 * j for j in idx] + [2 * j + 1 for j in idx]] = 0
            elif (e == "shared" and ".shared_expert." in name) or f".experts.{e}." in name:
                if "down_proj" in name:
                    noise[:, idx] = 0
                else:
                    noise[idx] = 0
        sd[name] = (t + noise).contiguous()
    save_file(sd, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.mark.parametrize("model_type", ["qwen2_moe", "gpt_oss"])
def test_origin_ranks_unchanged_expert_neurons_lowest(model_type, tmp_path):
    """Parameter drift from base to instruct per expert neuron (both layouts, a shared expert): the neurons
    left unchanged rank lowest, against random neurons of the same experts."""
    from hedit.find.origin import run_origin

    base = save_tiny_model(tmp_path / "base", model_type)
    keep = {(1, 3): [2, 9], (2, 0): [5]} | ({(0, "shared"): [4]} if model_type == "qwen2_moe" else {})
    inst = _moved_except(base, tmp_path / "inst", keep)
    shape = experts_shape(_load(base))
    ns = NeuronSet(
        ModelInfo(model_type, shape.num_layers, shape.intermediate_size, num_experts=shape.num_experts),
        [Neuron(la, j, expert=e) for (la, e), idx in keep.items() for j in idx],
    )
    r = run_origin(base, inst, ns, tmp_path / "o", draws=300, progress=False)
    h = r["h_neurons"]
    assert all(p["drift"] < 1e-6 for p in r["per_neuron"]) and r["drift_all"]["mean"] > 1e-4  # float32 cosines
    n = sum(shape.width(*split_site(_site(s))) for s in shape.sites())
    assert max(p["rank"] for p in r["per_neuron"]) <= (len(ns.neurons) + 1) / (n - 1)  # the lowest ranks
    assert h["p_lower_than_random"] == pytest.approx(1 / 301)
    assert {(p["layer"], p["expert"]) for p in r["per_neuron"]} == set(keep)


def test_a_dense_layer_neuron_needs_no_num_experts(tmp_path):
    """In a mixture, a neuron without ``expert`` sits in a dense layer, as wide as the model's dense MLP
    (96 here, the experts 32): a set without ``model.num_experts`` is held to that width, not the experts'."""
    from safetensors.torch import load_file

    moe = save_tiny_model(tmp_path / "moe", "qwen3_moe")  # layer 0 dense (96), experts 32 wide
    ns = NeuronSet(ModelInfo("qwen3_moe", 3, 32), [Neuron(0, 50, alpha=0.0)])
    write_artifact(moe, ns, tmp_path / "e", target="down", progress=False)
    got = load_file(tmp_path / "e" / "model.safetensors")["model.layers.0.mlp.down_proj.weight"]
    want = load_file(moe / "model.safetensors")["model.layers.0.mlp.down_proj.weight"]
    assert torch.equal(got[:, 50], torch.zeros_like(got[:, 50])) and torch.equal(got[:, 49], want[:, 49])
    with pytest.raises(HeditError, match="neuron index 500 in layer 0 out of range: its width is 96"):
        write_artifact(moe, NeuronSet(ns.model, [Neuron(0, 500)]), tmp_path / "f", alpha=0.0, progress=False)
