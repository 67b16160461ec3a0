"""`tune --method fit`: per-neuron alphas learned through the runtime intervention's hooks.

A tiny llama gets a planted behaviour: neuron 5 of its last layer writes, through its down_proj column,
toward the compliant token and away from the faithful one, so that the model prefers the compliant
continuation unedited and the faithful one with that neuron silenced. The fit must find that alpha (0)
and leave a neuron whose column is orthogonal to the preference near 1; under a tight budget it must stop
at the bound. The held-out items never enter the fit, and a fitted set writes into every format exactly."""

from __future__ import annotations

import json

import pytest
import torch

from hedit.choose.fit import Capability, fit_scales, measure_kl
from hedit.choose.pairs import Pair, margins, split
from hedit.engine.intervention import scale_neurons
from hedit.errors import HeditError
from hedit.model.tiny import save_tiny_model, tiny_model
from hedit.neurons import Neuron, NeuronSet
from hedit.score.suites import Item

from conftest import add_tokenizer, neuron_set, run_cli

PLANT, IDLE, LAYER = 5, 9, 2
PROMPTS = [(3, 17, 40, 8), (11, 60, 2, 77, 9), (23, 5, 91), (44, 45, 46, 47)]


def _z(model, prompt: tuple[int, ...], layer: int) -> torch.Tensor:
    seen = {}
    h = model.model.layers[layer].mlp.down_proj.register_forward_pre_hook(lambda m, a: seen.update(z=a[0]))
    with torch.no_grad():
        model(torch.tensor([list(prompt)]))
    h.remove()
    return seen["z"][0, -1]


def planted():
    """(model, pairs, capability): silencing neuron PLANT flips every pair from compliant to faithful."""
    torch.manual_seed(0)
    model = tiny_model("llama").eval().requires_grad_(False)
    head = model.lm_head.weight
    mlp = model.model.layers[LAYER].mlp
    with torch.no_grad(), scale_neurons(model, {LAYER: [(PLANT, 0.0)]}):  # tokens f, c: f wins without the neuron
        last = torch.stack([model(torch.tensor([list(p)])).logits[0, -1] for p in PROMPTS])
    lp = torch.log_softmax(last, -1)
    worst = (lp[:, :, None] - lp[:, None, :]).min(0).values  # [f, c]: f's smallest lead over c on any prompt
    f, c = divmod(int(worst.argmax()), lp.shape[1])
    assert worst[f, c] > 0.3
    with torch.no_grad():  # z = silu(g) * g = g^2 sigmoid(g) > 0: the planted neuron fires on every prompt
        mlp.gate_proj.weight[PLANT] *= 3
        mlp.up_proj.weight[PLANT] = mlp.gate_proj.weight[PLANT]
    down = mlp.down_proj.weight
    direction = (head[c] - head[f]) / (head[c] - head[f]).norm()
    zs = torch.stack([_z(model, p, LAYER)[PLANT] for p in PROMPTS])
    sign = torch.sign(zs.mean())
    assert (torch.sign(zs) == sign).all(), "the planted neuron must fire the same way on every prompt"
    with torch.no_grad():
        down[:, PLANT] = 40.0 * sign * direction / zs.abs().min()
        down[:, IDLE] = 0.0  # irrelevant: no alpha of it changes any output (not even through the final norm)
    pairs = [Pair("misleading-context", f"i{k}", p, (f,), (c,)) for k, p in enumerate(PROMPTS)]
    with torch.no_grad():
        assert (margins(model, pairs) < 0).all()  # unedited: the compliant token wins
        with scale_neurons(model, {LAYER: [(PLANT, 0.0)]}):
            assert (margins(model, pairs) > 0).all()  # silenced: the faithful one
    neutral = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11], [12, 13, 14, 15]]
    from hedit.choose.fit import neutral_logprobs

    with torch.no_grad():
        ref = neutral_logprobs(model, neutral)
    return model, pairs, Capability(neutral, ref, [], 0.0)


def test_the_fit_finds_the_planted_alpha_and_leaves_an_irrelevant_neuron_near_1():
    model, pairs, cap = planted()
    r = fit_scales(model, {LAYER: [PLANT, IDLE]}, pairs, cap, max_kl=10.0, steps=60, lr=0.05, penalty=1e-3)
    got = dict(r.alphas[LAYER])
    assert abs(got[PLANT] - 0.0) < 0.1, got  # the planted behaviour: silencing flips the preference
    assert abs(got[IDLE] - 1.0) < 0.05, got  # no effect on the preference: left alone
    assert r.strength == 1.0 and r.kl <= 10.0
    with torch.no_grad(), scale_neurons(model, r.alphas):
        assert (margins(model, pairs) > 0).all()  # every pair now prefers the faithful continuation


def test_the_budget_holds():
    model, pairs, cap = planted()
    free = fit_scales(model, {LAYER: [PLANT, IDLE]}, pairs, cap, max_kl=10.0, steps=60, penalty=1e-3)
    bound = free.kl / 4  # a budget the unconstrained fit exceeds
    assert bound > 0
    r = fit_scales(model, {LAYER: [PLANT, IDLE]}, pairs, cap, max_kl=bound, steps=60, penalty=1e-3)
    assert r.kl <= bound * (1 + 1e-6) and measure_kl(model, cap, r.alphas) <= bound * (1 + 1e-6)
    a = dict(r.alphas[LAYER])[PLANT]
    assert 0.0 < a < 1.0  # moved toward the planted alpha, stopped at the bound
    assert r.kl > bound / 4  # and used the budget: not stopped far short of it


def test_alphas_stay_in_range_unless_negative_is_allowed():
    model, pairs, cap = planted()
    r = fit_scales(model, {LAYER: [PLANT]}, pairs, cap, max_kl=100.0, steps=80, lr=0.2, penalty=0.0)
    assert dict(r.alphas[LAYER])[PLANT] >= 0.0
    neg = fit_scales(model, {LAYER: [PLANT]}, pairs, cap, 100.0, 80, 0.2, penalty=0.0, allow_negative=True)
    assert dict(neg.alphas[LAYER])[PLANT] < 0.0  # past silencing: the neuron's write reversed


def test_split_is_by_item_seeded_and_stable():
    items = [Item(f"q{i}", "?") for i in range(40)]
    fit, held = split("s", items, 0.5, seed=3)
    assert {i.id for i in fit}.isdisjoint({i.id for i in held}) and len(fit) + len(held) == 40
    assert 10 < len(held) < 30
    fit2, held2 = split("s", items[:25], 0.5, seed=3)  # an item's side does not depend on the others
    assert {i.id for i in held2} == {i.id for i in held if int(i.id[1:]) < 25}
    assert split("s", items, 0.5, seed=4)[1] != held


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    src = add_tokenizer(save_tiny_model(root / "m", "llama"), fill=2000)
    neuron_set("llama", per_layer=3).save(root / "n.json")
    return root, src


def test_tune_fit_never_fits_on_held_out_items_and_writes_a_fitted_set(tiny, tmp_path, monkeypatch):
    import hedit.choose.tune_fit as tf

    root, src = tiny
    seen = []
    real = tf.fit_scales
    monkeypatch.setattr(tf, "fit_scales", lambda m, s, pairs, *a, **k: seen.append(pairs) or real(m, s, pairs, *a, **k))
    r = run_cli(
        "tune", src, "--neurons", root / "n.json", "--method", "fit", "--work", tmp_path / "fit", "--out",
        tmp_path / "f.json", "--limit", "8", "--steps", "3", "--controls", "1", "--max-new-tokens", "4",
        "--suites", "misleading-context,false-premise", "--quiet",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "fit" / "fit.json").read_text())
    held = {i for ids in report["split"]["heldout_items"].values() for i in ids}
    fit_ids = {i for ids in report["split"]["fit_items"].values() for i in ids}
    assert held and fit_ids and held.isdisjoint(fit_ids)
    assert len(seen) == 2 and all(p.item in fit_ids and p.item not in held for pairs in seen for p in pairs)
    ns = NeuronSet.load(tmp_path / "f.json")
    sources = {n.source for n in ns.neurons}
    assert sources == {"probe", "attribution"} and all(n.alpha is not None for n in ns.neurons)
    assert len([n for n in ns.neurons if n.source == "attribution"]) == len(NeuronSet.load(root / "n.json").neurons)
    assert ns.provenance["fit"]["split"] == report["split"] and (tmp_path / "fit" / "fit.png").stat().st_size > 5000
    assert set(report["heldout"]["misleading-context"]) == {"none", "fit", "uniform", "control-0"}
    assert report["budget"]["kl"] <= report["budget"]["max_kl"]
    assert "fitted" in r.output and "held out" in r.output
    # the edit's card carries the fit: alphas by source, the held-out effect, and fit.png as evidence
    e = run_cli("edit", src, "--neurons", tmp_path / "f.json", "--out", tmp_path / "e", "--quiet")
    assert e.exit_code == 0, e.output
    card = (tmp_path / "e" / "README.md").read_text()
    assert "**Fitted alphas**" in card and "held-out items" in card and "evidence/fit.png" in card
    assert (tmp_path / "e" / "evidence" / "fit.png").is_file()
    assert "heldout_items" not in (tmp_path / "e" / "hedit.json").read_text()  # the item lists stay in fit.json


def test_a_fitted_set_writes_into_every_format_and_verifies(tiny, tmp_path):
    """Per-neuron alphas from a fit (arbitrary floats, some above 1) into a checkpoint, LoRA, IA3 and
    gguf-lora from the float model, a GGUF file and an MLX affine checkpoint: each verified."""
    from gguf import GGMLQuantizationType as T

    from builders import mlx_affine, write_gguf

    root, src = tiny
    base = NeuronSet.load(root / "n.json")
    fitted = NeuronSet(
        base.model,
        [Neuron(n.layer, n.index, alpha=0.3 + 0.17 * k, source="probe") for k, n in enumerate(base.neurons)],
    )
    nf = tmp_path / "fitted.json"
    fitted.save(nf)
    for fmt, runtimes in (("lora", ("transformers", "structure")), ("ia3", ("transformers", "structure")),
                          ("gguf-lora", ("structure",))):  # fmt: skip
        r = run_cli("export-adapter", src, "--neurons", nf, "--format", fmt, "--out", tmp_path / fmt)
        assert r.exit_code == 0, r.output
        for rt in runtimes:
            v = run_cli("verify", src, "--neurons", nf, "--adapter", tmp_path / fmt, "--runtime", rt)
            assert v.exit_code == 0 and "PASS" in v.output, (fmt, rt, v.output)
    assert run_cli("edit", src, "--neurons", nf, "--out", tmp_path / "e", "--quiet").exit_code == 0
    for rt in ("transformers", "structure"):
        v = run_cli("verify", src, "--neurons", nf, "--edited", tmp_path / "e", "--runtime", rt)
        assert v.exit_code == 0 and "PASS" in v.output, (rt, v.output)
    g = write_gguf(tmp_path / "m.gguf", T.Q8_0)
    from builders import neurons as gguf_neurons

    gset = gguf_neurons([(0, 1), (1, 3), (1, 7)])
    gset = NeuronSet(gset.model, [Neuron(n.layer, n.index, alpha=a) for n, a in zip(gset.neurons, (0.2, 1.6, 0.75))])
    gset.save(tmp_path / "g.json")
    assert run_cli("edit", g, "--neurons", tmp_path / "g.json", "--out", tmp_path / "g.gguf", "--quiet").exit_code == 0
    v = run_cli(
        "verify", g, "--neurons", tmp_path / "g.json", "--edited", tmp_path / "g.gguf", "--runtime", "structure"
    )
    assert v.exit_code == 0 and "PASS" in v.output, v.output
    mlx = mlx_affine(save_tiny_model(tmp_path / "float", "llama"), tmp_path / "mlx")
    assert run_cli("edit", mlx, "--neurons", nf, "--out", tmp_path / "me", "--quiet").exit_code == 0
    v = run_cli("verify", mlx, "--neurons", nf, "--edited", tmp_path / "me", "--runtime", "structure")
    assert v.exit_code == 0 and "PASS" in v.output, v.output


def test_strength_moves_each_alpha_along_its_own_direction(tiny, tmp_path):
    root, src = tiny
    base = NeuronSet.load(root / "n.json")
    fitted = NeuronSet(base.model, [Neuron(n.layer, n.index, alpha=0.2 + 0.2 * k) for k, n in enumerate(base.neurons)])
    fitted.save(tmp_path / "f.json")
    half = fitted.at_strength(0.5)
    assert [n.alpha for n in half.neurons] == pytest.approx([1 + 0.5 * (n.alpha - 1) for n in fitted.neurons])
    assert all(n.alpha == 1.0 for n in fitted.at_strength(0.0).neurons)
    r = run_cli("edit", src, "--neurons", tmp_path / "f.json", "--strength", "0.5", "--out", tmp_path / "e", "--quiet")
    assert r.exit_code == 0, r.output
    half.save(tmp_path / "half.json")
    v = run_cli(
        "verify", src, "--neurons", tmp_path / "half.json", "--edited", tmp_path / "e", "--runtime", "structure"
    )
    assert v.exit_code == 0 and "PASS" in v.output, v.output
    v = run_cli("verify", src, "--neurons", tmp_path / "f.json", "--strength", "0.5", "--edited", tmp_path / "e",
                "--runtime", "structure")  # fmt: skip
    assert v.exit_code == 0 and "PASS" in v.output, v.output
    wrong = run_cli(
        "verify", src, "--neurons", tmp_path / "f.json", "--edited", tmp_path / "e", "--runtime", "structure"
    )
    assert wrong.exit_code != 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--strength", "11"], "strength 11 is out of range"),
        (["--strength", "nan"], "strength"),
    ],
)
def test_bad_strength_is_one_line(tiny, tmp_path, argv, message):
    root, src = tiny
    base = NeuronSet.load(root / "n.json")
    NeuronSet(base.model, [Neuron(n.layer, n.index, alpha=0.5) for n in base.neurons]).save(tmp_path / "f.json")
    r = run_cli("edit", src, "--neurons", tmp_path / "f.json", *argv, "--out", tmp_path / "e", "--quiet")
    assert r.exit_code != 0 and message in r.output and not (tmp_path / "e").exists()
    plain = run_cli(
        "edit", src, "--neurons", root / "n.json", "--strength", "0.5", "--out", tmp_path / "e", "--alpha", "0"
    )
    assert plain.exit_code != 0 and "this set has none" in plain.output


def test_bad_fit_inputs_are_one_line(tiny, tmp_path):
    root, src = tiny
    (tmp_path / "mc.jsonl").write_text(json.dumps({"question": "Q?", "context": "C.", "context_answers": ["x"]}) + "\n")
    base = ["tune", src, "--neurons", root / "n.json", "--method", "fit", "--work", tmp_path / "w", "--quiet"]
    cases = [
        (["--suites", "misleading-context", "--suite-file", f"misleading-context={tmp_path / 'mc.jsonl'}"],
         "items have no 'answers'"),
        (["--candidates", "stable"], "no stability frequencies"),
        (["--holdout", "0.95"], "holdout must be at most 0.9"),
        (["--k", "0"], "k must be at least 1"),
    ]  # fmt: skip
    for extra, message in cases:
        r = run_cli(*base, *extra)
        assert r.exit_code != 0 and message in r.output, (extra, r.output)
        assert len([ln for ln in r.output.splitlines() if ln.startswith("hedit: error")]) == 1
    with pytest.raises(HeditError, match="give --k"):
        from hedit.choose.tune_fit import tune_fit
        from hedit.config import TuneConfig

        tune_fit(str(src), root / "n.json", tmp_path / "w2", TuneConfig(method="fit", limit=4, max_fit_neurons=10),
                 progress=False, log=lambda m: None)  # fmt: skip


def test_an_unreachable_budget_names_the_closest():
    """A budget no edit meets (KL 0: only no edit at all) is one line naming the closest step and its KL."""
    model, pairs, cap = planted()
    with pytest.raises(
        HeditError, match=r"no edit of these neurons meets the budget KL <= 0: the closest, .* costs KL"
    ):
        fit_scales(model, {LAYER: [PLANT]}, pairs, cap, max_kl=0.0, steps=5, penalty=1e-3)


def test_continuation_logprobs_in_a_left_padded_batch_equal_each_sequence_alone():
    """The batch keeps only the last positions for the output head: each row's mean continuation
    log-probability equals the unpadded sequence's, computed alone over every position."""
    from hedit.choose.pairs import continuation_logprob

    model = tiny_model("llama")
    seqs = [((3, 4, 5, 6), (7, 8)), ((9, 10), (11,)), ((12, 13, 14, 15, 16, 17), (18, 19, 20))]
    with torch.no_grad():
        got = continuation_logprob(model, seqs)
    for (p, c), g in zip(seqs, got):
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([list(p) + list(c)])).logits[0].float(), -1)
        want = torch.stack([lp[len(p) - 1 + i, t] for i, t in enumerate(c)]).mean()
        assert abs(float(g) - float(want)) < 1e-5
