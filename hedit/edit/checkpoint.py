"""`hedit edit`: fold alpha into a safetensors checkpoint, streaming.

Which tensors carry the edit (``hedit.edit.plan``): ``down`` scales column j of each edited layer's
``down_proj.weight``; ``up`` scales row j of ``up_proj.weight`` (in a gated MLP the activation is linear
in it), or, in a quantized checkpoint (GPTQ, AWQ, compressed-tensors pack-quantized, FP8 per channel),
output channel j's own scales, which is exact up to the rounding of each new scale (``hedit.io.quant``).

The model is never loaded. Each weight file is copied by the kernel, then only the tensors that hold
chosen neurons are read from the source, scaled in float32, cast back and written over their bytes in
the copy. Everything else, headers included, stays byte-identical; memory is bounded by the largest
edited tensor. The error of every edited tensor against the exactly scaled (dequantized) weights is
measured and recorded in ``hedit.json``. The SHA-256 of each source file is computed by background
threads while the kernel copies, unless it is already known.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hedit.edit.card import edited_card
from hedit.edit.neurons import NeuronSet
from hedit.edit.output import artifact, neurons_path
from hedit.edit.plan import EditPlan, make_plan
from hedit.edit.scaling import scale_along_
from hedit.errors import HeditError
from hedit.io.checkpoint import INDEX
from hedit.io.quant import detect
from hedit.io.safetensors_header import TensorInfo, read_tensor, write_tensor
from hedit.progress import bar


@dataclass
class TensorOp:
    """One tensor of the checkpoint to change: rows (axis 0) or columns (axis 1) ``index`` times ``alphas``;
    ``zero``: the rows' bytes set to zero instead (FP8 with a shared scale, alpha 0)."""

    file: str
    info: TensorInfo
    axis: int
    index: list[int]
    alphas: list[float]
    layer: int
    format: str = "float"
    zero: bool = False
    max_abs_error: float = field(default=0.0)


def tensor_ops(plan: EditPlan) -> list[TensorOp]:
    """The tensors an edit plan changes, each checked to be one hedit can change exactly."""
    ckpt, arch, ops = plan.checkpoint, plan.arch, []
    for layer, pairs in plan.layers.items():
        idx, alphas = [j for j, _ in pairs], [a for _, a in pairs]
        if plan.target == "down":
            f, info = ckpt.down_proj[layer]
            ops.append(TensorOp(f, info, 1, idx, alphas, layer))
            continue
        group = ckpt.tensors(layer, "up")
        rows = [arch.up_row(j, plan.intermediate_size) for j in idx]
        fmt = detect({k: v[1] for k, v in group.items()}, ckpt.quant_method, f"layer {layer} {arch.up_proj}")
        if fmt is None:
            f, info = group["weight"]
            ops.append(TensorOp(f, info, 0, rows, alphas, layer))
        elif not fmt.shared:
            f, info = group[fmt.scale]
            if info.dtype not in ("F32", "F16", "BF16"):
                raise HeditError(f"{info.name}: scales of dtype {info.dtype} are not supported")
            ops.append(TensorOp(f, info, fmt.axis, rows, alphas, layer, fmt.format))
        else:
            if any(a != 0 for a in alphas):
                raise HeditError(
                    f"{group[fmt.scale][1].name} is one scale shared by many output channels (FP8 per "
                    "tensor or per block): only alpha 0 can be applied exactly there (the rows are "
                    "zeroed); quantize per channel, or edit the unquantized model"
                )
            f, info = group[fmt.weight]
            ops.append(TensorOp(f, info, 0, rows, alphas, layer, fmt.format, zero=True))
    return ops


def copy_aux_files(plan: EditPlan, dst: Path) -> None:
    """Config, generation config, tokenizer files and chat template, copied as they are."""
    for p in plan.checkpoint.aux_files():
        shutil.copyfile(p, dst / p.name)


def edit_checkpoint(
    source: str | Path,
    neurons: str | Path | NeuronSet,
    out: str | Path,
    alpha: float | None = None,
    overwrite: bool = False,
    allow_negative: bool = False,
    progress: bool = True,
    target: str = "auto",
) -> Path:
    """Write an edited copy of ``source`` to ``out``; returns ``out``."""
    plan = make_plan(source, neurons, alpha, allow_negative, target)
    ckpt = plan.checkpoint
    ops = tensor_ops(plan)
    by_file: dict[str, list[TensorOp]] = {}
    for op in ops:
        by_file.setdefault(op.file, []).append(op)
    with artifact(out, plan, "edit", overwrite, neurons_path(neurons)) as w:
        total = sum((ckpt.path / f).stat().st_size for f in ckpt.weight_files)
        with bar(total, "edit", "B", progress) as pbar:
            for f in ckpt.weight_files:
                src = ckpt.path / f
                shutil.copyfile(src, w.path / f)  # kernel copy
                _apply(plan, src, w.path / f, by_file.get(f, []))
                pbar.update(src.stat().st_size)
        if (ckpt.path / INDEX).is_file():
            shutil.copyfile(ckpt.path / INDEX, w.path / INDEX)
        copy_aux_files(plan, w.path)
        w.info = {
            "format": ckpt.quant_method or "float",
            "tensors": [
                {k: v for k, v in asdict(op).items() if k in ("layer", "format", "zero", "max_abs_error")}
                | {"name": op.info.name, "dtype": op.info.dtype, "channels": len(op.index)}
                for op in ops
            ],
            "max_abs_error": max((op.max_abs_error for op in ops), default=0.0),
        }
        w.card = edited_card
    return Path(out)


def _apply(plan: EditPlan, src: Path, dst: Path, ops: list[TensorOp]) -> None:
    if not ops:
        return
    sfd = os.open(src, os.O_RDONLY)
    try:
        dfd = os.open(dst, os.O_WRONLY)
        try:
            for op in ops:
                if op.zero:
                    _zero_rows(dfd, op)
                    continue
                t = read_tensor(sfd, op.info)
                old = _picked(t, op).to(torch.float32)  # a copy: the scaling below is in place
                new = scale_along_(t, op.axis, op.index, op.alphas, op.info.name)
                op.max_abs_error = _scale_error(plan, op, old, _picked(new, op))
                write_tensor(dfd, op.info, new)
                del t, old
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _zero_rows(fd: int, op: TensorOp) -> None:
    row_bytes = op.info.nbytes // op.info.shape[0]
    for r in op.index:
        os.pwrite(fd, bytes(row_bytes), op.info.start + r * row_bytes)


def _picked(t: torch.Tensor, op: TensorOp) -> torch.Tensor:
    """The edited rows or columns of ``t``, as [edited, values]."""
    t = t.unsqueeze(1) if t.dim() == 1 else t
    idx = torch.tensor(op.index)
    return t[idx] if op.axis == 0 else t[:, idx].T


def _scale_error(plan: EditPlan, op: TensorOp, old: torch.Tensor, new: torch.Tensor) -> float:
    """Max abs difference of the edited values from alpha times the source's: of the weights themselves,
    or, for a quantized channel's scales, a bound on the dequantized weights' (|new scale - alpha scale|
    times the format's largest |q - z|). 0 means exact."""
    a = torch.tensor(op.alphas, dtype=torch.float32).unsqueeze(1)
    diff = (new.to(torch.float32) - old * a).abs()
    err = float(diff.max()) if diff.numel() else 0.0
    if op.format != "float" and err:
        err *= _integer_range(plan, op)
    return err


def _integer_range(plan: EditPlan, op: TensorOp) -> float:
    """The largest |q - zero point| a quantized value of ``op``'s projection can take."""
    qc = plan.checkpoint.config.get("quantization_config") or {}
    bits = qc.get("bits") or qc.get("w_bit") or 4
    return float(2 ** int(bits) - 1) if op.format != "fp8" else 448.0
