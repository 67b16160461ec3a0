"""Editing: the neuron-set file, edit plans, the scaling math, and the writers of edited artifacts
(safetensors checkpoints, PEFT adapters, GGUF files) that share one output shape (``output``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hedit.edit.checkpoint import edit_checkpoint


def edit_model(
    source: str | Path,
    neurons: Any,
    out: str | Path,
    alpha: float | None = None,
    overwrite: bool = False,
    allow_negative: bool = False,
    progress: bool = True,
    **kw: Any,
):
    """``hedit edit``: a ``.gguf`` source gives a GGUF (``hedit.edit.gguf.edit_gguf``, its report), anything
    else a safetensors checkpoint folder (``edit_checkpoint``, the output path)."""
    if str(source).endswith(".gguf"):
        from hedit.edit.gguf import edit_gguf

        return edit_gguf(source, neurons, out, alpha, overwrite, allow_negative, progress=progress, **kw)
    return edit_checkpoint(source, neurons, out, alpha, overwrite, allow_negative, progress=progress, **kw)


__all__ = ["edit_checkpoint", "edit_model"]
