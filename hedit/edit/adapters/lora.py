"""Exact LoRA: B @ A = W[:, S] diag(alpha - 1), lora_alpha = r so PEFT's scale is 1."""

from __future__ import annotations

import json
from collections.abc import Callable

import torch
from peft import LoraConfig

from hedit.edit.adapters import (
    Adapter,
    AdapterWriter,
    edited_indices,
    expert_factor_shapes,
    peft_key,
    target_modules,
)
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


def vllm_expert_lora(arch) -> str | None:
    """Why vLLM cannot load this family's expert LoRA, or None: vLLM reads PEFT's 3-D expert factors in
    Linear order (lora_A [r x E, in]), which a family PEFT reads in storage order (``peft_order``) breaks."""
    if arch.moe is not None and arch.moe.peft_order == "storage":
        return (
            f"vLLM reads a mixture's 3-D LoRA factors in Linear order, and PEFT stores {arch.model_type}'s in its "
            "weights' own order, so this LoRA is for PEFT; to serve the edit in vLLM, use the checkpoint `hedit edit` "
            "writes"
        )
    return None


class Lora(AdapterWriter):
    name = "lora"
    experts = True  # expert neurons through PEFT's target_parameters (``build_experts``)

    def check(self, plan: EditPlan) -> None:
        super().check(plan)
        if plan.arch.moe is not None and plan.target != "down":
            raise HeditError("a LoRA of a mixture of experts carries down_proj columns: use --target down")

    def build(self, plan: EditPlan, read: Callable[[int, list[int]], tuple[torch.Tensor, int]]) -> Adapter:
        return build_experts(plan) if plan.arch.moe is not None else build(plan, read)

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
        why = vllm_expert_lora(plan.arch)
        if why:
            return f"vLLM: {why}.\n"
        if plan.arch.moe is not None:
            module = json.dumps({"name": "hedit", "path": out_name, "is_3d_lora_weight": True})
            return f"""vLLM, on a GPU ({need}). The experts' factors are in PEFT's 3-D layout, which vLLM's
fused-MoE LoRA layer loads with `--enable-mixed-moe-lora-format` and `is_3d_lora_weight`. Its CPU build cannot
serve a LoRA on a mixture (the layer runs Triton kernels): there, serve the checkpoint `hedit edit` writes.
```bash
vllm serve {plan.base_model} --enable-lora --enable-mixed-moe-lora-format --max-lora-rank {max_rank} \\
  --lora-modules '{module}'
```
"""
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


def build_experts(plan: EditPlan) -> Adapter:
    """The exact LoRA of a mixture of experts' edit, every target a PEFT parameter target
    (``target_parameters``): dense layers' and shared experts' down_proj weights, and each MoE layer's
    stacked expert weights. (PEFT rewrites ``target_modules`` named ``down_proj`` of these families to their
    experts' parameter, so Linear modules are named by their weight.) PEFT gives a stacked target rank r
    per expert: ``lora_A`` [r * experts, I] holds expert e's one-hot rows at e*r..e*r+r-1, ``lora_B``
    [hidden, r * experts] its scaled columns at k*experts + e, so that B_e @ A_e = W_e[:, S_e] diag(alpha - 1)
    for every expert at once. Each MoE layer's gate_up parameter is a target too, with zero factors: PEFT
    then stores the pair as ``experts.base_layer`` (gate_up) and ``experts`` (down), the 3-D layout vLLM's
    fused-MoE LoRA loads (it wants both), so one folder serves PEFT and vLLM alike."""
    from hedit.io.safetensors_header import read_slices, slot_info
    from hedit.neurons import split_site

    ckpt, arch, shape = plan.checkpoint, plan.arch, plan.checkpoint.experts
    rank = max(len(v) for v in plan.layers.values())
    vllm_max_lora_rank(rank)  # refused before any work when vLLM could not serve it
    tensors, params = {}, []
    experts_of: dict[int, list] = {}
    for site, pairs in plan.layers.items():
        layer, expert = split_site(site)
        loc = ckpt.locus(site, "down")
        idx, alphas = [j for j, _ in pairs], [a for _, a in pairs]
        info = slot_info(loc.info, loc.slot)
        picked = read_slices(ckpt.path / loc.file, info, loc.axis, idx)
        picked = picked.T if loc.axis == 0 else picked  # W[:, S]: [hidden, k]
        width = info.shape[loc.axis]
        a, b = lora_factors_of(picked, width, idx, alphas, rank)
        if isinstance(expert, int):
            experts_of.setdefault(layer, []).append((expert, a, b))
            continue
        path, _ = arch.site_module(layer, expert)
        params.append(f"{path}.weight")
        tensors[f"base_model.model.{path}.lora_A.weight"] = a
        tensors[f"base_model.model.{path}.lora_B.weight"] = b
    n, inter = shape.num_experts, shape.intermediate_size
    storage = arch.moe.peft_order == "storage"  # PEFT's delta in the tensors' [I, H] order: B A transposed
    for layer, parts in experts_of.items():
        path, _ = arch.site_module(layer, 0)
        hidden = parts[0][2].shape[0]
        shapes = expert_factor_shapes(arch, hidden, inter, rank * n)
        (a_shape, b_shape), (gu_a, gu_b) = shapes[""], shapes[".base_layer"]
        a_all, b_all = torch.zeros(a_shape), torch.zeros(b_shape)
        for e, a, b in parts:
            a, b = (b.T, a.T) if storage else (a, b)
            a_all[e * rank : (e + 1) * rank] = a
            b_all[:, torch.arange(rank) * n + e] = b
        params += [f"{path}.{arch.moe.param('up')}", f"{path}.{arch.moe.param('down')}"]
        tensors[f"base_model.model.{path}.base_layer.lora_A.weight"] = torch.zeros(gu_a)
        tensors[f"base_model.model.{path}.base_layer.lora_B.weight"] = torch.zeros(gu_b)
        tensors[f"base_model.model.{path}.lora_A.weight"] = a_all
        tensors[f"base_model.model.{path}.lora_B.weight"] = b_all
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        lora_dropout=0.0,
        bias="none",
        target_modules=[],
        target_parameters=params,
        task_type="CAUSAL_LM",
    )
    return Adapter(tensors, config, info={"lora_rank": rank, "expert_parameters": params})
