"""Exact IA3: a vector on each edited down_proj's input, 1 everywhere and alpha at the chosen neurons."""

from __future__ import annotations

from typing import Callable

import torch
from peft import IA3Config

from hedit.edit.plan import EditPlan
from hedit.edit.scaling import input_scale
from hedit.edit.adapters import Adapter, peft_key, target_modules


def build(plan: EditPlan, read: Callable[[int], torch.Tensor]) -> Adapter:
    inter = plan.checkpoint.intermediate_size
    tensors = {}
    for layer, pairs in plan.layers.items():
        cols, alphas = (list(x) for x in zip(*pairs))
        tensors[peft_key(plan, layer, "ia3_l")] = input_scale(inter, cols, alphas).unsqueeze(0)
    modules = target_modules(plan)
    config = IA3Config(target_modules=modules, feedforward_modules=modules, task_type="CAUSAL_LM")
    return Adapter(tensors, config)
