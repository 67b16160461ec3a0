"""`hedit verify` in transformers: the exported artifact must behave exactly like the runtime intervention.

In float32, the source model with the intervention and the artifact (edited checkpoint, or base plus
adapter) run on a fixed set of prompts: greedy continuations from the reference, then the logits of
both over the same token sequences. Passes when the max absolute logit difference is within the
tolerance: by default ``max(TOLERANCE, RTOL * max|reference logit|)``, because float32 round-off in a
LoRA's ``W x - B A x`` grows with the size of the logits (on SmolLM2-135M it reaches 9.9e-5 for logits
up to ~25, at the bare 1e-4); a tolerance given by the caller is absolute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from hedit.check.common import (
    RTOL,
    TOLERANCE,
    VACUOUS,
    Checked,
    artifact_path,
    check_artifact,
    check_tolerance,
    compare_logits,
    greedy,
    logits,
    low_precision_tolerance,
    prompt_ids,
)
from hedit.edit.plan import make_plan
from hedit.engine.intervention import scale_neurons
from hedit.model.load import load_model
from hedit.neurons import NeuronSet


@dataclass
class VerifyResult(Checked):
    artifact: str
    max_abs_logit_diff: float  # inf when the artifact's logits are not all finite
    token_agreement: float  # fraction of the reference's greedy tokens that are also the artifact's argmax
    effect: float  # max abs logit difference between the source without and with the edit
    prompts: int
    new_tokens: int
    tolerance: float
    untied_disagreements: int = 0  # greedy tokens the artifact changes where the reference has no near-tie

    @property
    def passed(self) -> bool:
        return (
            math.isfinite(self.max_abs_logit_diff)
            and self.max_abs_logit_diff <= self.tolerance
            and self.untied_disagreements == 0
            and not self.vacuous
        )

    def summary(self) -> str:
        return (
            f"{'PASS' if self.passed else 'FAIL'} transformers: max abs logit diff {self.max_abs_logit_diff:.2e} "
            f"(tolerance {self.tolerance:g}), greedy-token agreement {self.token_agreement:.1%}, "
            f"edit effect {self.effect:.2e}{VACUOUS if self.vacuous else ''}"
        )


def verify(
    source: str | Path,
    neurons: str | Path | NeuronSet,
    alpha: float | None = None,
    edited: str | Path | None = None,
    adapter: str | Path | None = None,
    allow_negative: bool = False,
    new_tokens: int = 8,
    tolerance: float | None = None,
    trust_remote_code: bool = False,
    placement: dict | None = None,
    dtype: str = "float32",
) -> VerifyResult:
    """``placement``: load_model's ``device``/``device_map``/``max_memory``/``offload_folder``, for models
    larger than one device. ``dtype``: both models run in it (float32 by default, exact); in bfloat16 or
    float16 the folded weights and the intervention round differently, so the default tolerance is
    ``LOW_PRECISION_ULPS`` units in the last place of the largest reference logit."""
    place = placement or {}
    torch_dtype = getattr(torch, dtype)
    artifact_path(edited, adapter)
    check_tolerance(tolerance)
    plan = make_plan(source, neurons, alpha, allow_negative)
    artifact = check_artifact(plan, edited, adapter)
    source = plan.checkpoint.path
    base = load_model(source, torch_dtype, trust_remote_code, **place)
    prompts = prompt_ids(source, base.config.get_text_config().vocab_size, trust_remote_code)

    seqs, ref, plain = [], [], []
    with scale_neurons(base, plan.layers):
        for ids in prompts:
            seq = greedy(base, ids, new_tokens)
            seqs.append(seq)
            ref.append(logits(base, seq))
    for seq in seqs:
        plain.append(logits(base, seq))

    if adapter is not None:
        import warnings

        from peft import PeftModel

        with warnings.catch_warnings():  # deprecation chatter between peft and transformers versions
            warnings.simplefilter("ignore", FutureWarning)
            model = PeftModel.from_pretrained(base, str(adapter)).eval()
    else:
        del base
        model = load_model(edited, torch_dtype, trust_remote_code, **place)

    if tolerance is None:
        largest = max(r.float().abs().max().item() for r in ref)
        if torch_dtype == torch.float32:
            tolerance = max(TOLERANCE, RTOL * largest)
        else:
            tolerance = max(TOLERANCE, low_precision_tolerance(torch_dtype, largest))
    diff, agree, untied = 0.0, 0, 0
    for ids, seq, r in zip(prompts, seqs, ref):
        d, a, u = compare_logits(logits(model, seq), r, seq, len(ids), tolerance)
        diff, agree, untied = max(diff, d), agree + a, untied + u
    effect = max((p - r).abs().max().item() for p, r in zip(plain, ref))
    return VerifyResult(
        str(artifact), diff, agree / (new_tokens * len(prompts)), effect, len(prompts), new_tokens, tolerance, untied
    )
