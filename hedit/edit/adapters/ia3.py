"""Exact IA3: a vector that is 1 everywhere and alpha at the chosen neurons, on each edited layer's
down_proj input (``down`` target, PEFT's feed-forward mode) or up_proj output (``up`` target)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from peft import IA3Config

from hedit.edit.adapters import Adapter, AdapterWriter, edited_indices, peft_key, target_modules
from hedit.edit.plan import EditPlan
from hedit.edit.scaling import input_scale
from hedit.edit.writers import Report


class Ia3(AdapterWriter):
    name = "ia3"
    no_experts = (
        "cannot hold expert neurons: PEFT's IA3 scales nn.Linear modules, and transformers holds a "
        "mixture's experts as 3-D parameters, which PEFT targets in LoRA only (target_parameters)"
    )

    def build(self, plan: EditPlan, read: Callable[[int, list[int]], tuple[torch.Tensor, int]]) -> Adapter:
        return build(plan, read)

    def how(self, plan: EditPlan, report: Report) -> str:
        where = "`up_proj` output" if plan.target == "up" else "`down_proj` input"
        return (
            f"An IA3 adapter: a vector on each edited layer's {where} that is 1 everywhere and "
            "alpha at the chosen neurons. Base plus adapter equals the edited model."
        )

    def serve(self, plan: EditPlan, out_name: str, report: Report) -> str:
        return (
            "vLLM does not serve IA3 adapters: for vLLM use `hedit export-adapter --format lora` "
            "or the merged checkpoint from `hedit edit`.\n"
        )


def build(plan: EditPlan, read: Callable[[int, list[int]], tuple[torch.Tensor, int]]) -> Adapter:
    up = plan.target == "up"
    size = (2 if plan.arch.up_fused else 1) * plan.intermediate_size if up else plan.intermediate_size
    tensors = {}
    for layer, pairs in plan.layers.items():
        idx, alphas = edited_indices(plan, pairs)
        v = input_scale(size, idx, alphas)
        tensors[peft_key(plan, layer, "ia3_l")] = v.unsqueeze(1) if up else v.unsqueeze(0)
    modules = target_modules(plan)
    config = IA3Config(target_modules=modules, feedforward_modules=[] if up else modules, task_type="CAUSAL_LM")
    return Adapter(tensors, config)
