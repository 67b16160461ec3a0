"""Exact IA3: a vector that is 1 everywhere and alpha at the chosen neurons, on each edited layer's
down_proj input (``down`` target, PEFT's feed-forward mode) or up_proj output (``up`` target)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from peft import IA3Config

from hedit.edit.adapters import Adapter, edited_indices, peft_key, target_modules
from hedit.edit.plan import EditPlan
from hedit.edit.scaling import input_scale


def build(plan: EditPlan, read: Callable[[int], torch.Tensor]) -> Adapter:
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
