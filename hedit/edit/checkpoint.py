"""`hedit edit` into a safetensors checkpoint (the ``checkpoint`` writer; ``quantized`` shares its stream).

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

import collections
import dataclasses
import itertools
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from hedit.edit.card import card
from hedit.edit.plan import EditPlan
from hedit.edit.scaling import scale_along_, scale_rows_
from hedit.edit.writers import Patch, Patches, PatchStream, Report, TensorEdit, Writer, write_artifact
from hedit.errors import HeditError
from hedit.io.checkpoint import INDEX
from hedit.io.clone import clone_file
from hedit.io.files import pwrite_all
from hedit.io.safetensors_header import TensorInfo, read_slices, read_tensor
from hedit.neurons import NeuronSet, split_site
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
    changed_bytes: int = 0  # bytes of the file that differ from the source in this tensor
    expert: int | str | None = None  # mixture of experts: the expert whose neurons these are
    slot: int | None = None  # columns of one expert's matrix inside a stacked [experts, a, b] tensor
    scales: TensorInfo | None = None  # MXFP4: the E8M0 scales of ``info``'s blocks, read beside them


def locus_op(locus, neurons: list[int], alphas: list[float], layer: int, expert=None) -> TensorOp:
    """The TensorOp of neurons at a ``hedit.io.checkpoint.Locus``. Rows of a stacked tensor's expert are
    rows of the tensor seen as [experts * a, b], so they are patched row by row like any other rows."""
    info, index = locus.info, locus.index(neurons)
    if locus.slot is not None and locus.axis == 0:
        e, a, b = info.shape
        flat = dataclasses.replace(info, shape=(e * a, b))
        return TensorOp(locus.file, flat, 0, [locus.slot * a + r for r in index], alphas, layer, expert=expert)
    return TensorOp(locus.file, info, locus.axis, index, alphas, layer, expert=expert, slot=locus.slot)


class FloatCheckpoint(Writer):
    """A float safetensors checkpoint: each weight file copied by the kernel, then the edited tensors'
    bytes rewritten in the copy (``expected``'s patches)."""

    name, kind = "checkpoint", "edit"
    experts = True  # edits expert neurons of a mixture of experts, in both layouts
    quantized = False  # takes quantized sources (the ``quantized`` writer)

    def check(self, plan: EditPlan) -> None:
        if plan.checkpoint is None:
            raise HeditError(f"{plan.source} is a GGUF file; it is edited into a GGUF file")
        if plan.checkpoint.quant_method is not None and not self.quantized:
            raise HeditError(
                f"{plan.source} is quantized ({plan.checkpoint.quant_method}); it is edited with the quantized "
                "writer (hedit edit without --format)"
            )

    def ops(self, plan: EditPlan) -> list[TensorOp]:
        """The tensors the plan changes: down_proj columns, or up_proj rows (after the gate rows when
        fused), at each site (``Checkpoint.locus``: a layer's MLP, an expert in either layout)."""
        ckpt, ops = plan.checkpoint, []
        for site, pairs in plan.layers.items():
            layer, expert = split_site(site)
            idx, alphas = [j for j, _ in pairs], [a for _, a in pairs]
            ops.append(locus_op(ckpt.locus(site, plan.target), idx, alphas, layer, expert))
        return ops

    def expected(self, plan: EditPlan, ops: list[TensorOp] | None = None) -> Patches:
        ckpt = plan.checkpoint
        ops = self.ops(plan) if ops is None else ops
        order = {f: i for i, f in enumerate(ckpt.weight_files)}
        ops = sorted(ops, key=lambda op: (order[op.file], op.info.start))
        return Patches(list(ckpt.weight_files), self._patches(plan, ops), self.copied(plan))

    def copied(self, plan: EditPlan) -> list[str]:
        """Config, generation config, tokenizer files, chat template and the shard index, as they are."""
        ckpt = plan.checkpoint
        return [p.name for p in ckpt.aux_files()] + ([INDEX] if (ckpt.path / INDEX).is_file() else [])

    def _patches(self, plan: EditPlan, ops: list[TensorOp]):
        """Rows (up_proj rows, quantized channels' scales, zeroed FP8 rows): only those rows are read and
        each is one patch, so an edit rewrites only the rows' bytes. Columns (down_proj): one element per
        row, so the tensor is read and written whole."""
        for (file, _), group in itertools.groupby(ops, key=lambda op: (op.file, op.info.start)):
            group = list(group)
            path = plan.checkpoint.path / file
            rows = [op for op in group if op.axis == 0]
            for op in rows:
                yield from self._row_patches(plan, op, path)
            columns = [op for op in group if op.axis != 0]
            if not columns:
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                t = read_tensor(fd, columns[0].info)
            finally:
                os.close(fd)
            for op in columns:  # a stacked tensor's experts share it: each scales its own slot
                raw = _picked(t, op).contiguous()  # a copy (indexing copies): the scaling below is in place
                scale_along_(t if op.slot is None else t[op.slot], op.axis, op.index, op.alphas, op.info.name)
                picked = _picked(t, op)
                op.max_abs_error = self.error(plan, op, raw.to(torch.float32), picked)
                op.changed_bytes = int((raw.view(torch.uint8) != picked.contiguous().view(torch.uint8)).sum())
                del raw, picked
            yield Patch(file, columns[0].info.start, memoryview(t.contiguous().view(torch.uint8).numpy()).cast("B"))
            del t

    def _row_patches(self, plan: EditPlan, op: TensorOp, path: Path):
        info = op.info if len(op.info.shape) == 2 else dataclasses.replace(op.info, shape=(op.info.shape[0], 1))
        order = sorted(range(len(op.index)), key=lambda i: op.index[i])  # patches go by offset
        index, alphas = [op.index[i] for i in order], [op.alphas[i] for i in order]
        row = info.nbytes // info.shape[0]
        if op.zero:  # FP8 with a shared scale, alpha 0: the rows' bytes zeroed (no dtype to read them in)
            fd = os.open(path, os.O_RDONLY)
            try:
                old = [os.pread(fd, row, info.start + r * row) for r in index]
            finally:
                os.close(fd)
            op.changed_bytes = sum(len(b) - b.count(0) for b in old)
            for r in index:
                yield Patch(op.file, info.start + r * row, bytes(row))
            return
        raw = read_slices(path, info, 0, index)  # [rows, values]
        new = scale_rows_(raw.clone(), list(range(len(index))), alphas, op.info.name)
        op.max_abs_error = self.error(plan, dataclasses.replace(op, alphas=alphas), raw.to(torch.float32), new)
        old_bytes, new_bytes = raw.view(torch.uint8), new.contiguous().view(torch.uint8)
        op.changed_bytes = int((old_bytes != new_bytes).sum())
        for i, r in enumerate(index):
            yield Patch(op.file, info.start + r * row, new_bytes[i].numpy().tobytes())

    def error(self, plan: EditPlan, op: TensorOp, old: torch.Tensor, new: torch.Tensor) -> float:
        """Max abs difference of the edited values from alpha times the source's; 0 means exact."""
        a = torch.tensor(op.alphas, dtype=torch.float32).unsqueeze(1)
        diff = (new.to(torch.float32) - old * a).abs()
        return float(diff.max()) if diff.numel() else 0.0

    def write(self, plan: EditPlan, dst: Path, progress: bool, name: str) -> Report:
        ckpt = plan.checkpoint
        ops = self.ops(plan)
        exp = self.expected(plan, ops)
        stream = PatchStream(exp.patches)
        copies = collections.Counter()
        total = sum((ckpt.path / f).stat().st_size for f in exp.files)
        with bar(total, "edit", "B", progress) as pbar:
            for f in exp.files:
                src = ckpt.path / f
                copies[clone_file(src, dst / f)] += 1  # a clone shares the source's blocks; else a kernel copy
                _apply(dst / f, stream.of(f))
                pbar.update(src.stat().st_size)
        for aux in exp.copied:
            clone_file(ckpt.path / aux, dst / aux)
        info = {
            "format": ckpt.quant_method or "float",
            "tensors": [
                {
                    k: v
                    for k, v in asdict(op).items()
                    if k in ("layer", "format", "zero", "max_abs_error", "changed_bytes")
                    or (k == "expert" and v is not None)
                }
                | {"name": op.info.name, "dtype": op.info.dtype, "channels": len(op.index)}
                for op in ops
            ],
            "max_abs_error": max((op.max_abs_error for op in ops), default=0.0),
            "weight_files_copied_by": dict(sorted(copies.items())),
        }
        tensors = [
            TensorEdit(op.info.name, op.info.dtype, len(op.index), op.changed_bytes, op.max_abs_error) for op in ops
        ]
        return Report("", "", self.name, plan.target, tensors, info)

    def card(self, plan: EditPlan, out_name: str, ev: dict[str, Any], plots: list[str], report: Report) -> str:
        auto = plan.arch.auto_class
        use = f"""transformers:
```python
from transformers import {auto}, AutoTokenizer
model = {auto}.from_pretrained("{out_name}")
tokenizer = AutoTokenizer.from_pretrained("{out_name}")
```
vLLM:
```bash
vllm serve {out_name}
```
"""
        return card(plan, "transformers", ["hedit", "h-neurons"], out_name, self.how(plan), use, ev, plots)

    def how(self, plan: EditPlan) -> str:
        return "Every other tensor is byte-identical to the source."


def _apply(path: Path, patches) -> None:
    """Write ``patches`` (an iterable, consumed one at a time) over the copy ``path``."""
    fd = None
    try:
        for q in patches:
            fd = os.open(path, os.O_WRONLY) if fd is None else fd
            pwrite_all(fd, q.data, q.offset)
            del q  # released before the next patch is made
    finally:
        if fd is not None:
            os.close(fd)


def _picked(t: torch.Tensor, op: TensorOp) -> torch.Tensor:
    """The edited rows or columns of ``t`` (of its expert ``op.slot``), as [edited, values]."""
    t = t[op.slot] if op.slot is not None else t
    t = t.unsqueeze(1) if t.dim() == 1 else t
    idx = torch.tensor(op.index)
    return t[idx] if op.axis == 0 else t[:, idx].T


def edited_card(plan: EditPlan, out_name: str, ev: dict[str, Any] | None = None, plots: list[str] = ()) -> str:
    """The card of an edited checkpoint (the ``checkpoint`` writer's)."""
    return FloatCheckpoint().card(plan, out_name, ev or {}, list(plots), Report("", "", "checkpoint", plan.target))


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
    """Write an edited copy of the safetensors checkpoint ``source`` (float or quantized) to ``out``;
    returns ``out`` (``hedit.edit.writers.write_artifact`` gives the full report)."""
    if str(source).endswith(".gguf"):
        raise HeditError(f"{source} is a GGUF file: edit it with hedit.edit.edit_model (or edit_gguf)")
    write_artifact(source, neurons, out, None, alpha, overwrite, allow_negative, progress, target)
    return Path(out)
