"""`hedit edit MODEL.gguf`: the same edit on a GGUF file, written as a GGUF file.

The source is copied byte for byte, then the chosen neurons' bytes are rewritten in place (same type,
same size, same offset): metadata, tokenizer and every other tensor stay byte-identical.

- ``--target up`` (the default for block-quantized files, any gated MLP): row j of ``ffn_up`` computes
  neuron j, and every quantization block of a row lies inside the row with its own f16 scale, so only the
  scale bytes of the chosen rows change (``hedit.edit.gguf_blocks``): exact up to the rounding of each
  new f16 scale (alpha 0 and powers of two exactly), for every block type with such a scale.
- ``--target down`` (the default for F32/F16/BF16 files): column j of ``ffn_down``. Float types are scaled
  exactly; block types keep every scale and re-round only the chosen values (Q4_0, Q4_1, Q5_0, Q5_1,
  Q8_0, Q4_K, Q5_K, Q6_K), within half a quantization step where alpha times the value lies in the
  block's range; a value that would land more than one step from it (clipped) refuses the edit.

The error of every edited tensor against the exactly scaled dequantized weights (gguf-py's
dequantizers) is measured and recorded. ``--out x.gguf`` writes the file with ``x.gguf.hedit.json``
beside it; ``--out folder`` writes a pushable folder: the GGUF, ``hedit.json`` and a model card.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from hedit.edit.card import card
from hedit.edit.gguf_blocks import ELEMENT_TYPES, FLOATS, ROW_TYPES, requantize_elements, scale_rows
from hedit.edit.plan import EditPlan
from hedit.edit.writers import Patch, Patches, Report, TensorEdit, Writer, write_artifact
from hedit.errors import HeditError
from hedit.io.clone import clone_file
from hedit.io.files import pwrite_all
from hedit.io.gguf_header import GgufHeader, GgufTensor, gguf_shape, read_gguf_header  # noqa: F401 (re-exported)
from hedit.neurons import NeuronSet, split_site
from hedit.progress import bar

GgufEditReport = Report  # the report of a GGUF edit (before writers shared one report)


def open_gguf(source: Path) -> GgufHeader:
    """The header of a GGUF file (metadata and tensor places), checked; a bad file is one HeditError."""
    return read_gguf_header(source)


def _rows(path: Path, t: GgufTensor) -> np.ndarray:
    """The tensor's bytes as [rows, row bytes], memory-mapped (only what is indexed is read)."""
    return np.memmap(path, dtype=np.uint8, mode="r", offset=t.offset, shape=(t.rows, t.row_bytes))


ROW_RTOL = 2.0**-9  # a row edit's error bound: a few units of f16 rounding of the scales, relative


def _dequant(raw: np.ndarray, type_name: str) -> np.ndarray:
    from gguf import GGMLQuantizationType, quants

    return quants.dequantize(raw, GGMLQuantizationType[type_name]).astype(np.float32)


def _row_edit(
    path: Path, t: GgufTensor, rows: list[int], alphas: np.ndarray
) -> tuple[list[tuple[int, bytes]], TensorEdit]:
    """(offset, new bytes) writes for rows of an ffn_up tensor, and the measured edit."""
    type_name = t.type_name
    if type_name not in ROW_TYPES:
        raise HeditError(f"{t.name} is {type_name}, which has no per-block scale hedit can edit")
    old = np.array(_rows(path, t)[rows])
    new = scale_rows(old, type_name, alphas)
    want = alphas[:, None] * _dequant(old, type_name)
    err = float(np.abs(_dequant(new, type_name) - want).max())
    bound = ROW_RTOL * float(np.abs(want).max()) if want.size else 0.0
    if err > bound and type_name not in FLOATS:
        raise HeditError(
            f"{t.name} ({type_name}): the new f16 block scales cannot hold alpha {float(np.max(np.abs(alphas))):g} "
            f"(max abs error {err:.3g}, above hedit's bound of {ROW_RTOL:g} of the largest scaled value: scales "
            "that underflow or lose their precision); edit the float model, or a GGUF of a float type"
        )
    writes = [(t.offset + r * t.row_bytes, new[i].tobytes()) for i, r in enumerate(rows)]
    return writes, TensorEdit(t.name, type_name, len(rows), int((new != old).sum()), err)


def _column_edit(
    path: Path, t: GgufTensor, cols: list[int], alphas: np.ndarray, rows: slice = slice(None)
) -> tuple[list[tuple[int, bytes]], TensorEdit]:
    """(offset, new bytes) writes for columns of an ffn_down tensor (of its ``rows`` only: one expert's in a
    stacked ffn_down_exps), and the measured edit."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    type_name = t.type_name
    if type_name not in ELEMENT_TYPES:
        raise HeditError(
            f"ffn_down is {type_name}, whose values hedit cannot re-round one by one (it can: "
            f"{', '.join(ELEMENT_TYPES)}); --target up is exact for every block type"
        )
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    first = rows.start or 0
    raw = _rows(path, t)[rows]
    n_rows, row_bytes = raw.shape
    by_block: dict[int, list[tuple[int, float]]] = {}
    for c, a in zip(cols, alphas):
        by_block.setdefault(c // block, []).append((c % block, float(a)))
    writes, changed, err, clipped = [], 0, 0.0, 0
    base = t.offset + first * row_bytes
    for b, edits in sorted(by_block.items()):
        old = np.ascontiguousarray(raw[:, b * size : (b + 1) * size])
        pos = np.array([p for p, _ in edits])
        al = np.array([a for _, a in edits], dtype=np.float32)
        if type_name in FLOATS:
            new = _float_columns(old, type_name, pos, al)
        else:
            new, n = requantize_elements(old, type_name, pos, al)
            clipped += n
        want = _dequant(old, type_name)
        want[:, pos] *= al
        got = _dequant(new, type_name)
        err = max(err, float(np.abs(got[:, pos] - want[:, pos]).max()))
        if not np.array_equal(np.delete(got, pos, axis=1), np.delete(_dequant(old, type_name), pos, axis=1)):
            raise RuntimeError(f"{t.name}: values other than the chosen ones changed")  # a bug, never input
        changed += int((new != old).sum())
        writes += [(base + r * row_bytes + b * size, new[r].tobytes()) for r in range(n_rows)]
    if clipped:
        big = float(np.max(np.abs(alphas)))
        raise HeditError(
            f"{t.name} ({type_name}): {clipped} values clip at alpha {big:g} under their blocks' fixed scales "
            f"(max abs error {err:.3g}; hedit's bound is one quantization step); --target up scales the "
            "blocks' own scales and holds this alpha"
        )
    return writes, TensorEdit(t.name, type_name, len(cols), changed, err)


def _float_columns(old: np.ndarray, type_name: str, pos: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Float values (one per element): the chosen columns scaled exactly, cast back."""
    width = {"F32": 4, "F16": 2, "BF16": 2}[type_name]
    cols = old.reshape(old.shape[0], -1, width)  # [rows, values, bytes]
    out = cols.copy()
    picked = np.ascontiguousarray(cols[:, pos, :]).transpose(1, 0, 2).reshape(len(pos), -1)  # [cols, rows*bytes]
    scaled = scale_rows(picked, type_name, alphas).reshape(len(pos), old.shape[0], width).transpose(1, 0, 2)
    out[:, pos, :] = scaled
    return out.reshape(old.shape)


class Gguf(Writer):
    """A GGUF file: the source copied byte for byte, then the chosen rows' scales (``up``) or columns'
    values (``down``) rewritten in place; ``--out x.gguf`` a single file, else a folder with a card."""

    name, kind, single_file = "gguf", "gguf", True
    experts = True  # a mixture's ffn_up_exps / ffn_up_shexp rows (--target up)

    def check(self, plan: EditPlan) -> None:
        if plan.gguf is None:
            raise HeditError(f"{plan.source} is not a GGUF file; hedit writes GGUF from GGUF sources")

    def edits(self, plan: EditPlan):
        """(tensor, (offset, new bytes) writes, measured edit) per edited tensor; alpha 1 changes no byte.
        A mixture's routed experts of a layer share one stacked ffn_up_exps, whose rows are the experts'
        rows one after another: expert e's neuron j is row e * I + j."""
        arch, inter, tensors = plan.arch, plan.intermediate_size, plan.gguf.tensors
        grouped: dict[tuple[str, int | None], tuple[list[int], list[float]]] = {}
        for site, pairs in plan.layers.items():
            layer, expert = split_site(site)
            pairs = [(j, a) for j, a in pairs if a != 1.0]
            if not pairs:
                continue
            name = arch.gguf_tensor(layer, plan.target, expert)
            routed = isinstance(expert, int)
            if plan.target == "up":
                idx = [expert * inter + j if routed else arch.up_row(j, inter) for j, _ in pairs]
            else:  # columns; a routed expert's only within its own rows of ffn_down_exps
                idx = [j for j, _ in pairs]
            cols, alphas = grouped.setdefault((name, expert if routed and plan.target == "down" else None), ([], []))
            cols += idx
            alphas += [a for _, a in pairs]
        by_name: dict[str, list] = {}
        for name, expert in sorted(grouped, key=lambda k: (tensors[k[0]].offset, k[1] or 0)):
            t, (idx, al) = tensors[name], grouped[(name, expert)]
            order = np.argsort(idx, kind="stable")
            idx, alphas = [idx[i] for i in order], np.array([al[i] for i in order], dtype=np.float32)
            if plan.target == "up":
                writes, rec = _row_edit(plan.source, t, idx, alphas)
            else:
                per = t.shape[1] if expert is not None else t.rows  # GGUF order: [I, hidden, experts]
                span = slice(expert * per, (expert + 1) * per) if expert is not None else slice(None)
                writes, rec = _column_edit(plan.source, t, idx, alphas, span)
            by_name.setdefault(name, []).append((writes, rec))
        for name, parts in by_name.items():  # one record per tensor, whichever experts it holds
            recs = [r for _, r in parts]
            rec = TensorEdit(
                name,
                recs[0].type,
                sum(r.neurons for r in recs),
                sum(r.changed_bytes for r in recs),
                max(r.max_abs_error for r in recs),
            )
            yield tensors[name], [w for ws, _ in parts for w in ws], rec

    def expected(self, plan: EditPlan, records: list[TensorEdit] | None = None) -> Patches:
        def patches():
            for _, writes, rec in self.edits(plan):
                if records is not None:
                    records.append(rec)
                yield from (Patch(plan.source.name, offset, data) for offset, data in sorted(writes))

        return Patches([plan.source.name], patches())

    def write(self, plan: EditPlan, dst: Path, progress: bool, name: str) -> Report:
        folder = dst.is_dir()
        path = dst / plan.source.name if folder else dst
        copied_by = clone_file(plan.source, path)  # a clone shares the source's blocks; else a kernel copy
        records: list[TensorEdit] = []
        fd = os.open(path, os.O_WRONLY)
        try:
            with bar(len(_tensor_names(plan)), "edit gguf", "tensor", progress) as pbar:
                done = 0
                for patch in self.expected(plan, records).patches:
                    pwrite_all(fd, patch.data, patch.offset)
                    if len(records) > done:
                        pbar.update(len(records) - done)
                        done = len(records)
            os.fsync(fd)
        finally:
            os.close(fd)
        report = Report("", plan.source.name if folder else "", self.name, plan.target, records)
        report.info = {
            "format": "gguf",
            "target": plan.target,
            "gguf_file": plan.source.name if folder else name,
            "max_abs_error": report.max_abs_error,
            "changed_bytes": report.changed_bytes,
            "tensors": [asdict(e) for e in records],
            "copied_by": copied_by,
        }
        return report

    def card(self, plan: EditPlan, out_name: str, ev: dict[str, Any], plots: list[str], report: Report) -> str:
        gguf_name = plan.source.name
        use = f"""llama.cpp:
```bash
llama-cli -m {gguf_name} -p "..."
```
transformers:
```python
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained("{out_name}", gguf_file="{gguf_name}")
```
"""
        how = (
            "In the GGUF file only the edited tensors' bytes changed (their blocks' scales for the up target); "
            "metadata, tokenizer and every other tensor are byte-identical to the source."
        )
        return card(plan, "gguf", ["hedit", "h-neurons", "gguf"], out_name, how, use, ev, plots)


def _tensor_names(plan: EditPlan) -> set[str]:
    from hedit.neurons import split_site

    return {plan.arch.gguf_tensor(split_site(s)[0], plan.target, split_site(s)[1]) for s in plan.layers}


def edit_gguf(
    source: str | Path,
    neurons: str | Path | NeuronSet,
    out: str | Path,
    alpha: float | None = None,
    overwrite: bool = False,
    allow_negative: bool = False,
    progress: bool = True,
    target: str = "auto",
) -> Report:
    """Write the edit of the GGUF file ``source`` to ``out`` (``x.gguf``, or a folder); its report."""
    if not str(source).endswith(".gguf"):
        raise HeditError(f"{source} is not a .gguf file")
    return write_artifact(source, neurons, out, "gguf", alpha, overwrite, allow_negative, progress, target)
