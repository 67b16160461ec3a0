"""Exact LoRA: B @ A = W[:, S] diag(alpha - 1), lora_alpha = r so PEFT's scale is 1."""

from __future__ import annotations

from collections.abc import Callable

import torch
from peft import LoraConfig

from hedit.edit.adapters import Adapter, AdapterWriter, edited_indices, peft_key, target_modules
from hedit.edit.plan import EditPlan
from hedit.edit.scaling import lora_factors_of
from hedit.edit.writers import Report
from hedit.errors import HeditError

# The max_lora_rank values vLLM accepts (this format's runtime rule).
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


class Lora(AdapterWriter):
    name = "lora"

    def build(self, plan: EditPlan, read: Callable[[int, list[int]], tuple[torch.Tensor, int]]) -> Adapter:
        return build(plan, read)

    def rules(self, report: Report) -> dict:
        return {"vllm_max_lora_rank": vllm_max_lora_rank(report.info["lora_rank"])}

    def how(self, plan: EditPlan, report: Report) -> str:
        module = "up_proj" if plan.target == "up" else "down_proj"
        what = "row" if plan.target == "up" else "column"
        return (
            f"A LoRA of rank {report.info['lora_rank']} on `{module}` whose product B @ A adds (alpha - 1) times "
            f"each chosen {what} exactly (one factor selects the chosen neurons, the other holds their scaled "
            "weights; `lora_alpha` = r, so the scale is 1). Base plus adapter equals the edited model."
        )

    def serve(self, plan: EditPlan, out_name: str, report: Report) -> str:
        rank, max_rank = report.info["lora_rank"], report.info["vllm_max_lora_rank"]
        need = f"`--max-lora-rank` must be at least {rank}; {max_rank} is the smallest value vLLM accepts"
        return f"""vLLM ({need}):
```bash
vllm serve {plan.base_model} --enable-lora --lora-modules hedit={out_name} --max-lora-rank {max_rank}
```
"""


def build(plan: EditPlan, read: Callable[[int, list[int]], tuple[torch.Tensor, int]]) -> Adapter:
    rank = max(len(v) for v in plan.layers.values())
    vllm_max_lora_rank(rank)  # refused before any work when vLLM could not serve it
    tensors = {}
    for layer, pairs in plan.layers.items():
        idx, alphas = edited_indices(plan, pairs)
        picked, full = read(layer, idx)  # only the chosen rows (up) or columns (down), and the axis' length
        if plan.target == "up":  # rows: the transpose of the column factors
            b_t, a_t = lora_factors_of(picked.T, full, idx, alphas, rank)
            a, b = a_t.T.contiguous(), b_t.T.contiguous()
        else:
            a, b = lora_factors_of(picked, full, idx, alphas, rank)
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
    return Adapter(tensors, config, info={"lora_rank": rank})
