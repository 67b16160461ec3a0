"""Exact LoRA: B @ A = W[:, S] diag(alpha - 1), lora_alpha = r so PEFT's scale is 1."""

from __future__ import annotations

from collections.abc import Callable

import torch
from peft import LoraConfig

from hedit.edit.adapters import Adapter, edited_indices, peft_key, target_modules
from hedit.edit.plan import EditPlan
from hedit.edit.scaling import lora_factors
from hedit.errors import HeditError

# The max_lora_rank values vLLM accepts.
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that admits an adapter of ``rank``."""
    for r in VLLM_RANKS:
        if r >= rank:
            return r
    raise HeditError(
        f"the LoRA would need rank {rank} (the most neurons in one layer), above vLLM's limit of "
        f"{VLLM_RANKS[-1]}; use `hedit edit` to write a merged checkpoint instead"
    )


def build(plan: EditPlan, read: Callable[[int], torch.Tensor]) -> Adapter:
    rank = max(len(v) for v in plan.layers.values())
    max_rank = vllm_max_lora_rank(rank)
    tensors = {}
    for layer, pairs in plan.layers.items():
        idx, alphas = edited_indices(plan, pairs)
        if plan.target == "up":  # rows: the transpose of the column factors
            b_t, a_t = lora_factors(read(layer).T, idx, alphas, rank)
            a, b = a_t.T.contiguous(), b_t.T.contiguous()
        else:
            a, b = lora_factors(read(layer), idx, alphas, rank)
        tensors[peft_key(plan, layer, "lora_A.weight")] = a
        tensors[peft_key(plan, layer, "lora_B.weight")] = b
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        lora_dropout=0.0,
        bias="none",
        target_modules=target_modules(plan),
        task_type="CAUSAL_LM",
    )
    return Adapter(
        tensors,
        config,
        card={"rank": rank, "max_lora_rank": max_rank},
        info={"lora_rank": rank, "vllm_max_lora_rank": max_rank},
    )
