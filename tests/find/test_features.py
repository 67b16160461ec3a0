import numpy as np
import pytest
import torch

from hedit.engine.intervention import down_proj_module
from hedit.errors import HeditError
from hedit.find.features import CettHooks, Item, batch_features, extract, items, open_features
from hedit.model.tiny import tiny_model

from conftest import ARCHS, INTER, LAYERS


def reference_cett(model, ids: list[int], positions: list[int]) -> torch.Tensor:
    """Direct float64 computation from the weights: capture z, y = W z, CETT, mean over positions."""
    m = model.double()
    zs = {}
    handles = [
        down_proj_module(m, layer).register_forward_hook(
            lambda mod, args, out, layer=layer: zs.__setitem__(layer, args[0][0])
        )
        for layer in range(LAYERS)
    ]
    with torch.no_grad():
        m(torch.tensor([ids]))
    for h in handles:
        h.remove()
    out = []
    for layer in range(LAYERS):
        w = down_proj_module(m, layer).weight  # [hidden, inter]
        z = zs[layer]  # [T, inter]
        y = z @ w.T
        cett = z.abs() * w.norm(dim=0) / y.norm(dim=-1, keepdim=True)
        out.append(cett[positions].mean(0))
    m.float()
    return torch.cat(out).detach()


@pytest.mark.parametrize("model_type", ARCHS)
def test_cett_matches_float64_reference(model_type):
    model = tiny_model(model_type)
    seqs = [list(range(3, 12)), [5, 9, 2, 40, 41]]  # different lengths: left padding in the batch
    batch = [Item(s, {"answer": [len(s) - 2, len(s) - 1], "other": list(range(len(s) - 2))}, {}) for s in seqs]
    hooks = CettHooks(model)
    got = batch_features(model, hooks, batch, ("answer", "other"), pad_id=0)
    hooks.remove()
    assert got.shape == (2, 2, LAYERS * INTER)
    # the float32 forward through a Gated DeltaNet's chunked recurrence (Qwen3.5) drifts up to 1.3e-4 from
    # float64 before any CETT is computed (measured); every other family holds 1e-4
    recurrent = "linear_attention" in (getattr(model.config.get_text_config(), "layer_types", None) or ())
    rtol = 5e-4 if recurrent else 1e-4
    for b, it in enumerate(batch):
        for r, region in enumerate(("answer", "other")):
            ref = reference_cett(model, it.ids, it.masks[region])
            assert torch.allclose(got[r, b].double(), ref, rtol=rtol, atol=1e-7), (model_type, b, region)


def test_left_padding_does_not_change_a_row():
    model = tiny_model("qwen2")
    short = Item([7, 8, 9], {"answer": [2], "other": [0, 1]}, {})
    long = Item(list(range(20, 40)), {"answer": [19], "other": list(range(19))}, {})
    hooks = CettHooks(model)
    alone = batch_features(model, hooks, [short], ("answer", "other"), 0)[:, 0]
    padded = batch_features(model, hooks, [long, short], ("answer", "other"), 0)[:, 1]
    hooks.remove()
    assert torch.allclose(alone, padded, rtol=1e-4, atol=1e-6)
    assert not down_proj_module(model, 0)._forward_hooks


def record(qid, cls, label, prompt, response, text, aliases=("Juliet",)):
    return {
        "question_id": qid,
        "aliases": list(aliases),
        "class": cls,
        "split": "train",
        "prompt_ids": prompt,
        "samples": [{"response": text, "response_ids": response, "label": label}],
    }


def test_extract_writes_a_memmap_and_row_index(tmp_path):
    from hedit.model.load import load_model, load_tokenizer
    from hedit.model.tiny import save_tiny_model

    from conftest import add_tokenizer

    path = add_tokenizer(save_tiny_model(tmp_path / "m", "llama"))
    model, tok = load_model(path), load_tokenizer(path)
    enc = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    recs = [
        record("a", "correct", "correct", enc("capital of France"), enc("Juliet ."), "Juliet ."),
        record("b", "hallucinated", "incorrect", enc("capital of France"), enc("Water boils"), "Water boils"),
    ]
    its = items(tok, recs, ("answer", "other"), 1)
    assert its[0].masks["answer"] == [len(recs[0]["prompt_ids"])]  # just "Juliet", not the "."
    assert its[1].masks["answer"] == [3, 4]  # "Water boils": nothing echoed from a question, both kept
    out = extract(model, tok, recs, tmp_path / "feat", "tiny", progress=False)
    meta, rows, mat = open_features(out)
    assert meta["rows"] == 4 and meta["columns"] == LAYERS * INTER and meta["model_type"] == "llama"
    assert [(r["question_id"], r["region"], r["class"]) for r in rows] == [
        ("a", "answer", "correct"),
        ("a", "other", "correct"),
        ("b", "answer", "hallucinated"),
        ("b", "other", "hallucinated"),
    ]
    ref = reference_cett(model, its[1].ids, its[1].masks["answer"])
    assert np.allclose(mat[2], ref.numpy(), rtol=1e-4, atol=1e-7)
    assert (mat >= 0).all() and np.isfinite(mat).all()
    with pytest.raises(HeditError, match="not a hedit features folder"):
        open_features(tmp_path)


def test_check_features_model_names_both_shapes():
    from hedit.errors import HeditError
    from hedit.find.features import check_features_model

    meta = {"model_type": "llama", "num_layers": 3, "intermediate_size": 96}
    check_features_model(meta, ("llama", 3, 96), "features in f")
    with pytest.raises(HeditError, match=r"^features in f come from another model: llama 3x96, not qwen3 3x96$"):
        check_features_model(meta, ("qwen3", 3, 96), "features in f")
