"""Choosing and opening the generation engine for a job, by measurement (``benchmarks/bench_generate.py``).

The choice is made once per command (``choose_engine``), printed with its reason, and passed down as a
``Choice``; ``open_engine`` opens it. Measured on this project's 2-core CPU with SmolLM2-135M's shape
(``python benchmarks/bench_generate.py --jobs sample``, the README has the table): collect's job of
7,680 tokens took 108 s in hedit's decoder (float32, 77 tok/s, 9 s load) against 216 s in vLLM's CPU
build in float32 (48 tok/s, 55 s start-up) and 750 s in bfloat16 (11 tok/s, 51 s start-up); earlier runs
(issue 14) had vLLM bfloat16 1.8x faster, this one finds vLLM's worker bound to one of the two cores. So
on CPU vLLM neither starts fast enough for a small job nor generates fast enough to pay its start-up
back on a large one, and it serves a sweep's cells (one exact LoRA each) at 0.34-0.55x transformers
with hooks. On a CUDA GPU vLLM's continuous batching is the standard way to sample at scale. So
``auto`` is:

    device   job      engine
    cuda     any      vllm (when its environment is there), the model's dtype; sweeps in float32
    cpu      any      transformers (hedit's decoder), with the job's size and the measured figures as reason
    any      any      transformers when no vLLM environment is found

``$HEDIT_ENGINE`` (hf or vllm) or ``--engine vllm`` replaces ``auto`` (the test suite sets hf, and asks
for vLLM where it tests it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from hedit.config import EngineConfig
from hedit.errors import HeditError
from hedit.io.jsonfile import read_json

# From `python benchmarks/bench_generate.py --jobs sample` on this project's 2-core CPU (the README's
# table): vLLM's start-up, and its generation speed against hedit's decoder in float32 (best dtype).
VLLM_START_S = 51.0
VLLM_CPU_SPEED = 0.62


class Choice(NamedTuple):
    """Where a command generates: ``kind`` hf or vllm, vLLM's ``dtype``, ``why``, the vLLM ``python``."""

    kind: str
    dtype: str
    why: str
    python: str | None

    @property
    def engine_id(self) -> str | None:
        """What a journal records of an engine other than transformers (another engine, other replies)."""
        return f"vllm:{self.dtype}" if self.kind == "vllm" else None

    def describe(self) -> str:
        return f"engine: {self.kind}{f' ({self.dtype})' if self.kind == 'vllm' else ''}: {self.why}"


def choose_engine(job: str, cfg: EngineConfig, device: str = "cpu", tokens: int | None = None) -> Choice:
    """The engine for ``job`` ("sample" or "sweep"); ``tokens``: the most tokens the job generates
    (prompts x samples x new tokens), when known."""
    from hedit.engine.vllm import find_vllm_python

    asked = "asked for (--engine {})"
    if cfg.engine == "auto" and os.environ.get("HEDIT_ENGINE") in ("hf", "vllm"):  # a site's (or CI's) default
        cfg, asked = cfg.replace(engine=os.environ["HEDIT_ENGINE"]), "set by $HEDIT_ENGINE={}"
    if cfg.engine == "hf":
        return Choice("hf", "", asked.format("hf"), None)
    try:
        python = find_vllm_python(cfg.vllm_python)
    except HeditError:
        if cfg.engine == "vllm":
            raise
        return Choice("hf", "", "no vLLM environment found (`make vllm-env` builds one)", None)
    gpu = device.startswith("cuda")
    if cfg.engine == "auto" and not gpu and job == "sweep":
        return Choice("hf", "", "on CPU transformers with hooks serves sweep cells faster than vLLM's LoRA path", None)
    if cfg.engine == "auto" and not gpu:
        size = "a job of unknown size" if tokens is None else f"{tokens} tokens to generate"
        return Choice(
            "hf",
            "",
            f"{size}: on CPU vLLM took ~{VLLM_START_S:.0f} s to start and generated at {VLLM_CPU_SPEED:.2f}x hedit's "
            "decoder (benchmarks/bench_generate.py), so it never pays its start-up back",
            None,
        )
    dtype = cfg.engine_dtype
    if dtype == "auto":
        dtype = "float32" if job == "sweep" else ("auto" if gpu else "bfloat16")
    why = asked.format("vllm") if cfg.engine == "vllm" else "vLLM batches continuously on the GPU"
    return Choice("vllm", dtype, why, python)


def mix_adapters(device: str) -> bool:
    """Does a sweep on vLLM send all its cells' prompts together, each under its own adapter? On CUDA,
    where vLLM's multi-LoRA kernels batch mixed adapters. Not on CPU: vLLM's CPU build was no faster
    mixed (``benchmarks/bench_generate.py --jobs sweep``, float32: about 11 min with the 4 cells' adapters
    mixed against 9.3 min one after another)."""
    return device.startswith("cuda")


def eos_ids(model_path: Path, tokenizer) -> list[int]:
    """The end tokens of a checkpoint (generation_config.json, else config.json, and the tokenizer's)."""
    ids: set[int] = set()
    for name in ("generation_config.json", "config.json"):
        try:
            data = read_json(model_path / name)
        except HeditError:
            continue
        v = data.get("eos_token_id") if isinstance(data, dict) else None
        ids |= set(v if isinstance(v, list) else [v] if isinstance(v, int) else [])
        if ids:
            break
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def open_engine(
    choice: Choice,
    model_path: Path,
    tokenizer,
    cfg: EngineConfig,
    seed: int,
    max_model_len: int | None = None,
    device: str = "cpu",
    max_lora_rank: int | None = None,
    max_loras: int | None = None,
    expert_loras: bool = False,
):
    """An ``EngineModel`` over a fresh vLLM engine of ``choice`` (close it with ``.engine.close()``);
    ``max_loras`` adapters (sweep cells) may share its batches; ``expert_loras``: they carry a mixture's
    experts (GPU only)."""
    from hedit.engine.decoder import EngineModel
    from hedit.engine.vllm import VllmEngine

    kw = {"max_loras": max_loras} if max_loras is not None else {}  # else the engine's own default
    engine = VllmEngine(
        choice.python,
        model_path,
        choice.dtype,
        seed,
        max_model_len,
        max_lora_rank,
        cfg,
        device,
        **kw,
        expert_loras=expert_loras,
    )
    return EngineModel(engine, eos_ids(model_path, tokenizer), choice.engine_id, (max_loras or 1) > 1)
