"""`hedit verify --runtime vllm`: load the artifact in vLLM (``hedit.engine.vllm``: its own environment,
float32) and compare its greedy tokens and their logprobs with the runtime intervention in transformers."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from hedit.check.common import (
    VACUOUS,
    Checked,
    artifact_path,
    check_artifact,
    check_tolerance,
    prompt_ids,
    reference_generation,
)
from hedit.edit.adapters import read_adapter
from hedit.edit.adapters.lora import vllm_expert_lora, vllm_max_lora_rank
from hedit.edit.plan import make_plan
from hedit.engine.vllm import TIMEOUT, VllmEngine, check_expert_loras, find_vllm_python
from hedit.errors import HeditError
from hedit.neurons import NeuronSet

LOGPROB_TOLERANCE = 1e-3
KV_CACHE = 256 << 20  # bytes: a few prompts of a few tokens


@dataclass
class VllmResult(Checked):
    artifact: str
    token_agreement: float
    max_abs_logprob_diff: float
    effect: float  # max abs logprob change the edit itself causes, for scale
    prompts: int
    new_tokens: int
    tolerance: float

    @property
    def passed(self) -> bool:
        return (
            self.token_agreement == 1.0
            and math.isfinite(self.max_abs_logprob_diff)
            and self.max_abs_logprob_diff <= self.tolerance
            and not self.vacuous
        )

    def summary(self) -> str:
        return (
            f"{'PASS' if self.passed else 'FAIL'} vllm: greedy-token agreement {self.token_agreement:.1%}, "
            f"max abs logprob diff {self.max_abs_logprob_diff:.2e} (tolerance {self.tolerance:g}), "
            f"edit effect {self.effect:.2e}{VACUOUS if self.vacuous else ''}"
        )


def verify_vllm(
    source: str | Path,
    neurons: str | Path | NeuronSet,
    alpha: float | None = None,
    edited: str | Path | None = None,
    adapter: str | Path | None = None,
    allow_negative: bool = False,
    new_tokens: int = 8,
    vllm_python: str | None = None,
    tolerance: float = LOGPROB_TOLERANCE,
    timeout: int = TIMEOUT,
) -> VllmResult:
    check_tolerance(tolerance)
    python = find_vllm_python(vllm_python)
    artifact_path(edited, adapter)
    plan = make_plan(source, neurons, alpha, allow_negative)
    artifact = check_artifact(plan, edited, adapter)
    rank = None
    if adapter is not None:
        cfg = read_adapter(artifact, plan.checkpoint)
        if cfg["peft_type"] != "LORA":
            raise HeditError(f"vLLM serves LoRA adapters, not {cfg['peft_type']}: {artifact}")
        rank = vllm_max_lora_rank(cfg["r"])
    experts = adapter is not None and plan.arch.moe is not None
    if experts:  # before the reference's work: vLLM would misread it, or its CPU build cannot start with it
        if vllm_expert_lora(plan.arch):
            raise HeditError(vllm_expert_lora(plan.arch))
        instead = (
            "verify the adapter with --runtime transformers or structure, or serve the checkpoint `hedit edit` writes"
        )
        check_expert_loras(vllm_device(), instead)
    source = plan.checkpoint.path
    prompts = prompt_ids(source, plan.checkpoint.arch.text_config_dict(plan.checkpoint.config)["vocab_size"])
    ref_tokens, ref_logprobs, effect = reference_generation(plan, prompts, new_tokens)

    model = Path(edited) if edited is not None else source
    lora = artifact if adapter is not None else None
    tokens, got_logprobs = greedy_logprobs(
        python, model, prompts, new_tokens, lora, rank, timeout=timeout, expert_loras=experts
    )
    total = sum(len(t) for t in ref_tokens)
    agree = sum(a == b for r, g in zip(ref_tokens, tokens) for a, b in zip(r, g))
    diffs = [abs(a - b) for r, g in zip(ref_logprobs, got_logprobs) for a, b in zip(r, g)]
    diff = max(diffs) if diffs and all(math.isfinite(d) for d in diffs) else math.inf
    return VllmResult(str(artifact), agree / total, diff, effect, len(prompts), new_tokens, tolerance)


def vllm_device() -> str:
    """Where verify's vLLM engine runs: $VLLM_TARGET_DEVICE (vLLM's own variable), else the CPU."""
    return os.environ.get("VLLM_TARGET_DEVICE", "cpu")


def greedy_logprobs(
    python: str,
    model: str | Path,
    prompts: list[list[int]],
    new_tokens: int,
    lora: str | Path | None = None,
    max_lora_rank: int | None = None,
    dtype: str = "float32",
    timeout: int = TIMEOUT,
    expert_loras: bool = False,
) -> tuple[list[list[int]], list[list[float]]]:
    """Greedy tokens (no end token stops them) and their logprobs from a vLLM engine (``hedit.engine.vllm``)
    on ``model``, under the LoRA ``lora`` when given (``expert_loras``: on a mixture's experts), in ``dtype``."""
    longest = max(len(p) for p in prompts) + new_tokens + 8
    with VllmEngine(
        python,
        model,
        dtype,
        0,
        longest,
        max_lora_rank,
        device=vllm_device(),
        kv_cache_bytes=KV_CACHE,
        timeout=timeout,
        expert_loras=expert_loras,
    ) as engine:
        lora = Path(lora).resolve() if lora is not None else None
        out = engine.request(prompts, new_tokens, lora=lora, ignore_eos=True, logprobs=True)
    return [rows[0] for rows in out["outputs"]], [rows[0] for rows in out["logprobs"]]


def sequence_logprobs(
    python: str, model: str | Path, seqs: list[list[int]], dtype: str = "float32", timeout: int = TIMEOUT
) -> list[list[float]]:
    """vLLM's logprob of every token of each sequence after its first, given the tokens before it
    (teacher-forced: the reference's own sequences, so a near-tie in low precision cannot send the two
    down different continuations), in ``dtype``."""
    longest = max(len(s) for s in seqs) + 8
    with VllmEngine(
        python, model, dtype, 0, longest, None, device=vllm_device(), kv_cache_bytes=KV_CACHE, timeout=timeout
    ) as e:
        out = e.request(seqs, 1, ignore_eos=True, prompt_logprobs=True)
    return [rows[1:] for rows in out["prompt_logprobs"]]
