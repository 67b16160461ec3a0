"""Editing: edit plans (``plan``), the scaling math (``scaling``), and the writers of edited artifacts,
one registered shape each (``writers``: checkpoint, quantized, gguf, lora, ia3), over one output shape
(``output``) and one model-card frame (``card``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hedit.edit.checkpoint import edit_checkpoint
from hedit.edit.writers import WRITERS, Report, get_writer, write_artifact


def edit_model(
    source: str | Path,
    neurons: Any,
    out: str | Path,
    alpha: float | None = None,
    overwrite: bool = False,
    allow_negative: bool = False,
    progress: bool = True,
    target: str = "auto",
):
    """``hedit edit``: the source in its own format (``write_artifact``): a ``.gguf`` source gives a GGUF
    (its report), anything else a safetensors checkpoint folder (the output path)."""
    report = write_artifact(source, neurons, out, None, alpha, overwrite, allow_negative, progress, target)
    return report if str(source).endswith(".gguf") else Path(out)


__all__ = ["WRITERS", "Report", "edit_checkpoint", "edit_model", "get_writer", "write_artifact"]
