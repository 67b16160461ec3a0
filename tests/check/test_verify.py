"""Runtime intervention == edited checkpoint == base + LoRA == base + IA3, in float32, on every architecture."""

import json

import pytest

from hedit.check.verify import verify
from hedit.edit.adapters import export_adapter
from hedit.edit.checkpoint import edit_checkpoint
from hedit.errors import HeditError
from hedit.registry import get_architecture

from conftest import ARCHS, neuron_set


@pytest.mark.parametrize("target", ["down", "up"])
@pytest.mark.parametrize("model_type", ARCHS)
def test_all_artifacts_equal_the_intervention(checkpoint, tmp_path, model_type, target):
    """Both targets (down_proj columns, up_proj rows; phi3's fused gate_up_proj too) in every artifact."""
    src = checkpoint(model_type)
    ns = neuron_set(model_type, per_layer=8, seed=1)
    if target == "up" and not get_architecture(model_type).gated:  # ungated MLPs: down only, said in one line
        with pytest.raises(HeditError, match=f"{model_type} has no gated MLP: --target up needs one"):
            edit_checkpoint(src, ns, tmp_path / "edited", alpha=0.0, progress=False, target=target)
        assert not (tmp_path / "edited").exists()
        return
    edit_checkpoint(src, ns, tmp_path / "edited", alpha=0.0, progress=False, target=target)
    export_adapter(src, ns, tmp_path / "lora", "lora", alpha=0.0, target=target)
    export_adapter(src, ns, tmp_path / "ia3", "ia3", alpha=0.0, target=target)
    assert json.loads((tmp_path / "edited" / "hedit.json").read_text())["target"] == target
    results = [
        verify(src, ns, 0.0, edited=tmp_path / "edited", new_tokens=4),
        verify(src, ns, 0.0, adapter=tmp_path / "lora", new_tokens=4),
        verify(src, ns, 0.0, adapter=tmp_path / "ia3", new_tokens=4),
    ]
    for r in results:
        assert r.passed and r.max_abs_logit_diff < 1e-4, r
        assert r.token_agreement == 1.0
        assert r.effect > 1e-2  # the edit changes the logits: equality is not vacuous


def test_bf16_source_compares_in_float32(checkpoint, tmp_path):
    src = checkpoint("llama", dtype=__import__("torch").bfloat16)
    ns = neuron_set("llama", per_layer=8)
    # alpha 0.5 is exact in bf16, so the folded weights carry no rounding
    edit_checkpoint(src, ns, tmp_path / "edited", alpha=0.5, progress=False)
    r = verify(src, ns, 0.5, edited=tmp_path / "edited", new_tokens=4)
    assert r.passed and r.max_abs_logit_diff < 1e-4 and r.effect > 1e-3


def test_a_wrong_artifact_fails(checkpoint, tmp_path):
    src = checkpoint("llama")
    ns = neuron_set("llama", per_layer=8)
    edit_checkpoint(src, ns, tmp_path / "edited", alpha=2.0, progress=False)
    r = verify(src, ns, 0.0, edited=tmp_path / "edited", new_tokens=4)
    assert not r.passed and r.max_abs_logit_diff > 1e-2


def test_needs_exactly_one_artifact(checkpoint, tmp_path):
    with pytest.raises(HeditError, match="exactly one of --edited or --adapter"):
        verify(checkpoint("llama"), neuron_set(), 0.0)
    with pytest.raises(HeditError, match="edited checkpoint not found"):
        verify(checkpoint("llama"), neuron_set(), 0.0, edited=tmp_path / "nope")


def _max_reference_logit(src, ns, alpha) -> float:
    import torch

    from hedit.check.common import greedy, logits, prompt_ids
    from hedit.edit.plan import make_plan
    from hedit.engine.intervention import scale_neurons
    from hedit.model.load import load_model

    plan = make_plan(src, ns, alpha)
    model = load_model(src, torch.float32)
    with scale_neurons(model, plan.layers):
        return max(
            logits(model, greedy(model, ids, 4)).abs().max().item() for ids in prompt_ids(src, model.config.vocab_size)
        )


def test_default_tolerance_grows_with_the_logits(checkpoint, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    src = checkpoint("llama", tie=False)
    ns = neuron_set("llama", per_layer=8)
    export_adapter(src, ns, tmp_path / "lora", "lora", alpha=0.0)
    small = verify(src, ns, 0.0, adapter=tmp_path / "lora", new_tokens=4)
    assert _max_reference_logit(src, ns, 0.0) * 1e-5 < 1e-4 and small.tolerance == 1e-4

    # the same model with logits 1e5 times larger: the bound follows them, an explicit one does not
    big = tmp_path / "big"
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight.mul_(1e5)
    model.save_pretrained(big)
    export_adapter(big, ns, tmp_path / "lora-big", "lora", alpha=0.0)
    r = verify(big, ns, 0.0, adapter=tmp_path / "lora-big", new_tokens=4)
    top = _max_reference_logit(big, ns, 0.0)
    assert top > 1e2 and r.tolerance == pytest.approx(1e-5 * top, rel=1e-6)
    assert r.passed and r.max_abs_logit_diff > 1e-4  # round-off at this scale passes only the relative bound
    fixed = verify(big, ns, 0.0, adapter=tmp_path / "lora-big", new_tokens=4, tolerance=1e-4)
    assert fixed.tolerance == 1e-4 and not fixed.passed


def test_an_artifact_that_makes_nan_fails(checkpoint, tmp_path):
    """Reproduces the landed bug: NaN in model.norm.weight passed with 0% token agreement."""
    import os

    import torch

    from hedit.io.safetensors_header import read_header, write_tensor

    src = checkpoint("llama")
    ns = neuron_set("llama", per_layer=8)
    edit_checkpoint(src, ns, tmp_path / "edited", alpha=0.0, progress=False)
    f = tmp_path / "edited" / "model.safetensors"
    info = read_header(f).tensors["model.norm.weight"]
    fd = os.open(f, os.O_WRONLY)
    write_tensor(fd, info, torch.full(info.shape, float("nan")))
    os.close(fd)
    r = verify(src, ns, 0.0, edited=tmp_path / "edited", new_tokens=4)
    assert not r.passed and r.max_abs_logit_diff == float("inf") and r.untied_disagreements > 0
    assert r.to_dict()["passed"] is False


def test_greedy_disagreements_fail_unless_the_reference_is_tied():
    import torch

    from hedit.check.common import compare_logits

    ref = torch.tensor([[0.0, 5.0, 1.0], [0.0, 1.0, 1.0 + 1e-5], [3.0, 0.0, 0.0]])
    seq = [9, 1, 2, 0]  # prompt [9]; greedy tokens 1, 2, 0 are the reference's argmax
    assert compare_logits(ref.clone(), ref, seq, 1, 1e-4) == (0.0, 3, 0)
    tied = ref.clone()
    tied[1, 1] += 2e-5  # flips a near-tie of the reference: allowed
    assert compare_logits(tied, ref, seq, 1, 1e-4)[1:] == (2, 0)
    wrong = ref.clone()
    wrong[0, 2] = 9.0  # a clear winner changes: an untied disagreement even under a loose tolerance
    assert compare_logits(wrong, ref, seq, 1, 1.0) == (8.0, 2, 1)
    assert compare_logits(wrong, ref, seq, 1, 10.0)[2] == 0  # within 2 x tolerance: a tie at that scale


def test_artifacts_of_another_model_and_bad_tolerances_are_refused(checkpoint, tmp_path):
    from hedit.model.tiny import save_tiny_model

    src = checkpoint("llama")
    ns = neuron_set("llama", per_layer=2)
    wide = save_tiny_model(tmp_path / "wide", "llama", intermediate_size=128)
    export_adapter(wide, neuron_set("llama", per_layer=2, inter=128), tmp_path / "lora-wide", "lora", alpha=0.0)
    export_adapter(
        checkpoint("mistral"), neuron_set("mistral", per_layer=2), tmp_path / "lora-mistral", "lora", alpha=0.0
    )
    export_adapter(src, ns, tmp_path / "ia3", "ia3", alpha=0.0)
    with pytest.raises(HeditError, match="was not made for this model: .*lora_A.weight has shape"):
        verify(src, ns, 0.0, adapter=tmp_path / "lora-wide")
    with pytest.raises(HeditError, match="was made from a mistral model, not llama"):
        verify(src, ns, 0.0, adapter=tmp_path / "lora-mistral")
    with pytest.raises(HeditError, match="is a checkpoint: pass it with --edited"):
        verify(src, ns, 0.0, adapter=src)
    with pytest.raises(HeditError, match="is an adapter; pass it with --adapter"):
        verify(src, ns, 0.0, edited=tmp_path / "ia3")
    with pytest.raises(HeditError, match="is not an edit of"):
        verify(src, ns, 0.0, edited=checkpoint("llama", tie=True))
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(HeditError, match="--tolerance must be a finite number >= 0"):
            verify(src, ns, 0.0, adapter=tmp_path / "ia3", tolerance=bad)


def test_verify_in_bfloat16_halves_memory_and_still_catches_a_wrong_edit(checkpoint, tmp_path):
    """--dtype bfloat16: both models run in bf16; the default tolerance follows bf16 rounding (8 units in the
    last place of the largest logit), which a right edit meets with room (its own rounding is 2x below
    the bound at most) and a wrong one does not (by far)."""
    from hedit.check.verify import verify_artifact
    from hedit.config import VerifyConfig

    src = checkpoint("llama")
    ns = neuron_set("llama", per_layer=8)
    edit_checkpoint(src, ns, tmp_path / "e03", alpha=0.3, progress=False)
    export_adapter(src, ns, tmp_path / "lora", "lora", alpha=0.3)
    edit_checkpoint(src, ns, tmp_path / "e2", alpha=2.0, progress=False)
    cfg = VerifyConfig(dtype="bfloat16", new_tokens=4)
    for kw in ({"edited": tmp_path / "e03"}, {"adapter": tmp_path / "lora"}):
        r = verify_artifact(src, ns, 0.3, cfg=cfg, **kw)
        assert r.passed, r
        ref = verify(src, ns, 0.3, new_tokens=4, **kw)  # float32: exact, so bf16's diff is its rounding
        assert ref.max_abs_logit_diff < 1e-4 < r.max_abs_logit_diff <= r.tolerance / 2  # 2x room at least
        assert r.tolerance > 1e-4  # bf16 units: above float32's floor
    wrong = verify_artifact(src, ns, 0.3, edited=tmp_path / "e2", cfg=cfg)
    assert not wrong.passed and wrong.max_abs_logit_diff > 10 * wrong.tolerance
    from conftest import run_cli

    ns.save(tmp_path / "n.json")
    res = run_cli(
        "verify",
        src,
        "--neurons",
        tmp_path / "n.json",
        "--alpha",
        "0.3",
        "--edited",
        tmp_path / "e03",
        "--dtype",
        "bfloat16",
        "--new-tokens",
        "4",
    )
    assert res.exit_code == 0 and "PASS transformers" in res.output, res.output
