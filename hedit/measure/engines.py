"""Choosing and opening the generation engine for a job, by measurement (``benchmarks/bench_generate.py``).

Measured on this project's 2-core CPU with the embedded model (the README has the table): vLLM's CPU
build samples 1.8x faster than transformers in bfloat16 (0.8x in float32), and serves a sweep's cells
(one exact LoRA each) at 0.4-0.55x transformers with hooks (0.34x since transformers decodes all cells
in the same batches). On a CUDA GPU vLLM's continuous batching is
the standard way to sample at scale. So ``auto`` is:

    device   job      engine
    cuda     any      vllm (when its environment is there), the model's dtype; sweeps in float32
    cpu      sample   vllm in bfloat16 (when its environment is there)
    cpu      sweep    transformers
    any      any      transformers when no vLLM environment is found

and every choice is printed with its reason. ``$HEDIT_ENGINE`` (hf or vllm) replaces ``auto`` for a
site (the test suite sets hf, and asks for vLLM where it tests it).
"""

from __future__ import annotations

import os
from pathlib import Path

from hedit.config import EngineConfig
from hedit.errors import HeditError
from hedit.io.jsonfile import read_json


def choose_engine(job: str, cfg: EngineConfig, device: str = "cpu") -> tuple[str, str, str, str | None]:
    """(engine, vLLM dtype, why, vLLM python) for ``job`` ("sample" or "sweep")."""
    from hedit.check.runtime_vllm import find_vllm_python

    asked = "asked for (--engine {})"
    if cfg.engine == "auto" and os.environ.get("HEDIT_ENGINE") in ("hf", "vllm"):  # a site's (or CI's) default
        cfg, asked = cfg.replace(engine=os.environ["HEDIT_ENGINE"]), "set by $HEDIT_ENGINE={}"
    if cfg.engine == "hf":
        return "hf", "", asked.format("hf"), None
    try:
        python = find_vllm_python(cfg.vllm_python)
    except HeditError:
        if cfg.engine == "vllm":
            raise
        return "hf", "", "no vLLM environment found (`make vllm-env` builds one)", None
    gpu = device.startswith("cuda")
    if cfg.engine == "auto" and not gpu and job == "sweep":
        return "hf", "", "on CPU transformers with hooks serves sweep cells faster than vLLM's LoRA path", None
    dtype = cfg.engine_dtype
    if dtype == "auto":
        dtype = "float32" if job == "sweep" else ("auto" if gpu else "bfloat16")
    why = (
        asked.format("vllm")
        if cfg.engine == "vllm"
        else (
            "vLLM batches continuously on the GPU" if gpu else "vLLM samples 1.8x faster than transformers in bfloat16"
        )
    )
    return "vllm", dtype, why, python


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
    model_path: Path,
    tokenizer,
    cfg: EngineConfig,
    dtype: str,
    python: str,
    seed: int,
    max_model_len: int,
    device: str = "cpu",
    lora_rank: int | None = None,
    max_loras: int = 1,
):
    """An ``EngineModel`` over a fresh vLLM engine (close it with ``.engine.close()``); ``max_loras``
    adapters (sweep cells) may share its batches."""
    from hedit.check.runtime_vllm import VllmEngine
    from hedit.measure.generate import EngineModel

    engine = VllmEngine(
        python,
        model_path,
        dtype,
        seed,
        max_model_len,
        lora_rank,
        cfg.tensor_parallel_size,
        cfg.pipeline_parallel_size,
        device,
        cfg.distributed_executor_backend,
        max_loras=max_loras,
    )
    return EngineModel(engine, eos_ids(model_path, tokenizer), f"vllm:{dtype}", max_loras > 1)


def describe(engine: str, dtype: str, why: str) -> str:
    return f"engine: {engine}{f' ({dtype})' if engine == 'vllm' else ''}: {why}"
