"""Loading transformers models and tokenizers the way hedit needs them (no remote code unless asked)."""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import HeditError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(path: str | Path, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
               device: str = "cpu") -> torch.nn.Module:
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
    if p.is_dir() and not any((p / f).exists() for f in ("tokenizer.json", "tokenizer_config.json",
                                                          "tokenizer.model", "vocab.json")):
        return None
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
