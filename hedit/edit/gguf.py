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
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hedit.edit.card import gguf_card
from hedit.edit.gguf_blocks import ELEMENT_TYPES, FLOATS, ROW_TYPES, requantize_elements, scale_rows
from hedit.edit.neurons import NeuronSet
from hedit.edit.output import artifact, neurons_path
from hedit.edit.plan import TARGETS, EditPlan, load_neurons
from hedit.errors import HeditError
from hedit.io.gguf_header import GgufHeader, GgufTensor, read_gguf_header
from hedit.progress import bar
from hedit.registry import Architecture, architecture_for_gguf


@dataclass
class TensorEdit:
    name: str
    type: str
    neurons: int
    changed_bytes: int  # bytes of the file that differ from the source in this tensor
    max_abs_error: float  # dequantized result against alpha times the dequantized source, over edited values


@dataclass
class GgufEditReport:
    out: str
    file: str  # the edited GGUF file itself (inside ``out`` when that is a folder)
    target: str
    tensors: list[TensorEdit]

    @property
    def max_abs_error(self) -> float:
        return max((t.max_abs_error for t in self.tensors), default=0.0)

    @property
    def types(self) -> list[str]:
        return sorted({t.type for t in self.tensors})

    @property
    def changed_bytes(self) -> int:
        return sum(t.changed_bytes for t in self.tensors)


def open_gguf(source: Path) -> GgufHeader:
    """The header of a GGUF file (metadata and tensor places), checked; a bad file is one HeditError."""
    return read_gguf_header(source)


def gguf_shape(header: GgufHeader) -> tuple[Architecture, int, int]:
    """(architecture, layers, intermediate size) from a GGUF file's metadata."""
    name = header.metadata.get("general.architecture")
    if not isinstance(name, str):
        raise HeditError("the GGUF file has no general.architecture")
    arch = architecture_for_gguf(name)
    layers, inter = header.metadata.get(f"{name}.block_count"), header.metadata.get(f"{name}.feed_forward_length")
    if isinstance(inter, list):
        raise HeditError(f"{name}: per-layer feed_forward_length is not supported")
    if type(layers) is not int or type(inter) is not int or layers <= 0 or inter <= 0:  # bool is no count
        raise HeditError(f"the GGUF file lacks {name}.block_count or {name}.feed_forward_length (positive integers)")
    _check_ffn_shapes(header, arch, name, layers, inter)
    return arch, layers, inter


def _check_ffn_shapes(header: GgufHeader, arch: Architecture, name: str, layers: int, inter: int) -> None:
    """Every MLP tensor has the shape the metadata implies (GGUF order, row length first): ffn_down
    [inter, embd], ffn_up [embd, inter] (twice inter when gate and up are fused); a tensor of another
    shape would make the edit touch the wrong bytes."""
    embd = header.metadata.get(f"{name}.embedding_length")
    embd = embd if type(embd) is int and embd > 0 else None
    rows = 2 * inter if arch.up_fused else inter
    for layer in range(layers):
        for which in ("down", "up") if arch.gated else ("down",):
            t = header.tensors.get(arch.gguf_tensor(layer, which))
            if t is None:
                continue
            want = (inter, embd) if which == "down" else (embd, rows)
            if len(t.shape) != 2 or any(w is not None and w != g for w, g in zip(want, t.shape)):
                shown = [w if w is not None else "embd" for w in want]
                raise HeditError(
                    f"{header.path}: {t.name} has shape {list(t.shape)}, but the metadata says {shown} "
                    f"({name}.feed_forward_length {inter}); not a file hedit can edit safely"
                )


def _known_names(header: GgufHeader) -> list[str]:
    out = []
    url = header.metadata.get("general.base_model.0.repo_url")
    if isinstance(url, str) and "/" in url:
        out.append("/".join(url.rstrip("/").split("/")[-2:]))
    for key in ("general.base_model.0.organization", "general.name"):
        v = header.metadata.get(key)
        if isinstance(v, str):
            out.append(v)
    return out


def _rows(path: Path, t: GgufTensor) -> np.ndarray:
    """The tensor's bytes as [rows, row bytes], memory-mapped (only what is indexed is read)."""
    return np.memmap(path, dtype=np.uint8, mode="r", offset=t.offset, shape=(t.rows, t.row_bytes))


ROW_RTOL = 2.0**-9  # a row edit's error bound: a few units of f16 rounding of the scales, relative


def _resolve_target(target: str, arch: Architecture, tensors: dict, layers: list[int]) -> str:
    if target not in TARGETS:
        raise HeditError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    if target == "up" and not arch.gated:
        raise HeditError(f"{arch.model_type} has no gated MLP; --target up needs one")
    if target != "auto":
        return target
    down_types = {tensors[arch.gguf_tensor(layer, "down")].type_name for layer in layers}
    return "down" if down_types <= set(FLOATS) or not arch.gated else "up"


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
    path: Path, t: GgufTensor, cols: list[int], alphas: np.ndarray
) -> tuple[list[tuple[int, bytes]], TensorEdit]:
    """(offset, new bytes) writes for columns of an ffn_down tensor, and the measured edit."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    type_name = t.type_name
    if type_name not in ELEMENT_TYPES:
        raise HeditError(
            f"ffn_down is {type_name}, whose values hedit cannot re-round one by one (it can: "
            f"{', '.join(ELEMENT_TYPES)}); --target up is exact for every block type"
        )
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    raw = _rows(path, t)
    n_rows, row_bytes = raw.shape
    by_block: dict[int, list[tuple[int, float]]] = {}
    for c, a in zip(cols, alphas):
        by_block.setdefault(c // block, []).append((c % block, float(a)))
    writes, changed, err, clipped = [], 0, 0.0, 0
    base = t.offset
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


def edit_gguf(
    source: str | Path,
    neurons: str | Path | NeuronSet,
    out: str | Path,
    alpha: float | None = None,
    overwrite: bool = False,
    allow_negative: bool = False,
    progress: bool = True,
    target: str = "auto",
) -> GgufEditReport:
    source, out = Path(source), Path(out)
    header = open_gguf(source)
    arch, layers, inter = gguf_shape(header)
    ns = load_neurons(neurons)
    ns.check_model(arch.model_type, layers, inter)
    chosen = {layer: [(j, a) for j, a in pairs if a != 1.0] for layer, pairs in ns.plan(alpha, allow_negative).items()}
    chosen = {layer: pairs for layer, pairs in chosen.items() if pairs}  # alpha 1 changes nothing: bytes stay
    tensors = header.tensors
    for layer in ns.by_layer():
        for which in ("down", "up") if arch.gated else ("down",):
            if arch.gguf_tensor(layer, which) not in tensors and (which == "down" or target == "up"):
                raise HeditError(f"{source} has no tensor {arch.gguf_tensor(layer, which)}")
    target = _resolve_target(target, arch, tensors, list(ns.by_layer()))
    plan = EditPlan(
        source,
        arch,
        layers,
        inter,
        ns,
        ns.plan(alpha, allow_negative),
        alpha,
        [source],
        _known_names(header),
        target=target,
    )
    folder = out.suffix.lower() != ".gguf"
    edits: list[TensorEdit] = []
    with artifact(out, plan, "gguf", overwrite, neurons_path(neurons), folder=folder) as w:
        dst = w.path / source.name if folder else w.path
        shutil.copyfile(source, dst)
        fd = os.open(dst, os.O_WRONLY)
        try:
            with bar(len(chosen), "edit gguf", "layer", progress) as pbar:
                for layer, pairs in chosen.items():
                    t = tensors[arch.gguf_tensor(layer, target)]
                    idx = [arch.up_row(j, inter) if target == "up" else j for j, _ in pairs]
                    alphas = np.array([a for _, a in pairs], dtype=np.float32)
                    writes, rec = (_row_edit if target == "up" else _column_edit)(source, t, idx, alphas)
                    for offset, data in writes:
                        os.pwrite(fd, data, offset)
                    edits.append(rec)
                    pbar.update(1)
            os.fsync(fd)
        finally:
            os.close(fd)
        report = GgufEditReport(str(out), str(out / source.name) if folder else str(out), target, edits)
        w.info = {
            "format": "gguf",
            "target": target,
            "gguf_file": source.name if folder else out.name,
            "max_abs_error": report.max_abs_error,
            "changed_bytes": report.changed_bytes,
            "tensors": [asdict(e) for e in edits],
        }
        w.card = lambda plan, name, ev, plots: gguf_card(plan, name, source.name, ev, plots)
    return report
