"""`hedit edit`: fold alpha into down_proj columns of a safetensors checkpoint, streaming.

The model is never loaded. Each weight file is copied by the kernel, then only the down_proj tensors
that hold chosen neurons are read from the source, scaled in float32, cast back and written over their
bytes in the copy. Everything else, headers included, stays byte-identical; memory is bounded by the
largest edited tensor. The SHA-256 of each source file (for ``hedit.json``) is computed by background
threads while the kernel copies, unless it is already known.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hedit.edit.card import edited_card
from hedit.edit.output import artifact, neurons_path
from hedit.io.checkpoint import INDEX
from hedit.io.safetensors_header import read_tensor, write_tensor
from hedit.edit.neurons import NeuronSet
from hedit.edit.plan import EditPlan, make_plan
from hedit.progress import bar
from hedit.edit.scaling import scale_columns_


def copy_aux_files(plan: EditPlan, dst: Path) -> None:
    """Config, generation config, tokenizer files and chat template, copied as they are."""
    for p in plan.checkpoint.aux_files():
        shutil.copyfile(p, dst / p.name)


def edit_checkpoint(source: str | Path, neurons: str | Path | NeuronSet, out: str | Path,
                    alpha: float | None = None, overwrite: bool = False, allow_negative: bool = False,
                    progress: bool = True) -> Path:
    """Write an edited copy of ``source`` to ``out``; returns ``out``."""
    plan = make_plan(source, neurons, alpha, allow_negative)
    ckpt = plan.checkpoint
    by_file: dict[str, list[int]] = {}
    for layer in plan.layers:
        by_file.setdefault(ckpt.down_proj[layer][0], []).append(layer)
    with artifact(out, plan, "edit", overwrite, neurons_path(neurons)) as w:
        total = sum((ckpt.path / f).stat().st_size for f in ckpt.weight_files)
        with bar(total, "edit", "B", progress) as pbar:
            for f in ckpt.weight_files:
                src = ckpt.path / f
                shutil.copyfile(src, w.path / f)  # kernel copy
                _scale_in_place(plan, src, w.path / f, by_file.get(f, []))
                pbar.update(src.stat().st_size)
        if (ckpt.path / INDEX).is_file():
            shutil.copyfile(ckpt.path / INDEX, w.path / INDEX)
        copy_aux_files(plan, w.path)
        w.card = edited_card
    return Path(out)


def _scale_in_place(plan: EditPlan, src: Path, dst: Path, layers: list[int]) -> None:
    if not layers:
        return
    sfd = os.open(src, os.O_RDONLY)
    try:
        dfd = os.open(dst, os.O_WRONLY)
        try:
            for layer in layers:
                info = plan.checkpoint.down_proj[layer][1]
                weight = read_tensor(sfd, info)
                cols, alphas = zip(*plan.layers[layer])
                write_tensor(dfd, info, scale_columns_(weight, list(cols), list(alphas), info.name))
                del weight
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
