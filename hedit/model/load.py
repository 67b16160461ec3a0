"""Loading transformers models and tokenizers the way hedit needs them (no remote code unless asked)."""

from __future__ import annotations

from pathlib import Path

import torch

from hedit.errors import HeditError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_device(device: str) -> str:
    """``device`` if torch can run on it here, else a HeditError that says why (before any work starts)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise HeditError(f"unknown device {device!r} (cpu, cuda, cuda:1, mps, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise HeditError(f"device {device!r}: torch sees no CUDA GPU on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise HeditError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise HeditError(f"device {device!r}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise HeditError(f"device {device!r}: hedit runs on cpu, cuda or mps")
    return device


def load_model(
    path: str | Path, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False, device: str = "cpu"
) -> torch.nn.Module:
    check_device(device)
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except (OSError, ValueError) as e:
        raise HeditError(f"cannot load model {path}: {str(e).splitlines()[0]}") from None
    return model.to(device).eval()


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """The checkpoint's tokenizer, or None when the folder has none."""
    from transformers import AutoTokenizer

    p = Path(path)
    if p.is_dir() and not any(
        (p / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    ):
        return None
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
