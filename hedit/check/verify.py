"""`hedit verify`: the exported artifact must behave exactly like the runtime intervention, checked in
one of the runtimes of ``RUNTIMES`` (transformers, vLLM or mlx-lm in its own environment, or ``structure``: the
artifact's bytes against the plan, no model loaded). This module only dispatches; each runtime is a
module of its own over ``hedit.check.common``."""

from __future__ import annotations

from pathlib import Path

from hedit.check.common import adapter_format
from hedit.check.runtime_hf import VerifyResult, verify
from hedit.check.runtime_vllm import LOGPROB_TOLERANCE, verify_vllm
from hedit.check.structure import verify_structure
from hedit.config import VerifyConfig
from hedit.errors import HeditError
from hedit.neurons import NeuronSet


def _transformers(source, neurons, alpha, edited, adapter, allow_negative, cfg, vllm_python, placement):
    return verify(
        source,
        neurons,
        alpha,
        edited,
        adapter,
        allow_negative,
        cfg.new_tokens,
        cfg.tolerance,
        placement=placement,
        dtype=cfg.dtype,
    )


def _vllm(source, neurons, alpha, edited, adapter, allow_negative, cfg, vllm_python, placement):
    tol = cfg.tolerance if cfg.tolerance is not None else LOGPROB_TOLERANCE
    return verify_vllm(source, neurons, alpha, edited, adapter, allow_negative, cfg.new_tokens, vllm_python, tol)


def _mlx(source, neurons, alpha, edited, adapter, allow_negative, cfg, vllm_python, placement):
    from hedit.check.runtime_mlx import MLX_TOLERANCE, verify_mlx

    tol = cfg.tolerance if cfg.tolerance is not None else MLX_TOLERANCE
    return verify_mlx(source, neurons, alpha, edited, adapter, allow_negative, cfg.new_tokens, tolerance=tol)


def _structure(source, neurons, alpha, edited, adapter, allow_negative, cfg, vllm_python, placement):
    return verify_structure(source, neurons, alpha, edited, adapter, allow_negative)


RUNTIMES = {"transformers": _transformers, "vllm": _vllm, "mlx": _mlx, "structure": _structure}


def verify_artifact(
    source: str | Path,
    neurons: str | Path | NeuronSet,
    alpha: float | None = None,
    edited: str | Path | None = None,
    adapter: str | Path | None = None,
    allow_negative: bool = False,
    cfg: VerifyConfig = VerifyConfig(),
    vllm_python: str | None = None,
    placement: dict | None = None,
):
    """``hedit verify``: the artifact in ``cfg.runtime`` (transformers, or vLLM in its own environment)
    against the runtime intervention; a result with ``passed``, ``to_dict()`` and ``summary()``."""
    kind = adapter_format(adapter) if adapter is not None else None
    if kind == "gguf-lora" and cfg.runtime != "structure":
        raise HeditError(
            f"{adapter} is a gguf-lora adapter: check it with --runtime structure (every factor and llama.cpp's "
            "scale metadata against the plan); llama.cpp itself runs it in tests/edit/test_gguf_lora.py"
        )
    if kind == "mlx-lora" and cfg.runtime not in ("mlx", "structure"):
        raise HeditError(
            f"{adapter} is an mlx-lm adapter (mlx-lora): check it with --runtime mlx (mlx-lm loads it) or "
            "--runtime structure"
        )
    return RUNTIMES[cfg.runtime](source, neurons, alpha, edited, adapter, allow_negative, cfg, vllm_python, placement)


__all__ = ["RUNTIMES", "VerifyResult", "verify", "verify_artifact", "verify_structure", "verify_vllm"]
