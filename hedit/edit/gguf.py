"""`hedit edit MODEL.gguf`: the same edit on a GGUF file, written as a GGUF file.

The source is copied byte for byte, then each layer's ``ffn_down`` tensor that holds chosen neurons
is rewritten in place (same type, same size, same offset): metadata, tokenizer and every other tensor
stay byte-identical. In GGUF, ffn_down is stored [hidden rows x intermediate columns] with
quantization blocks running along a row, so neuron j is column j.

- F32, F16, BF16: the column is scaled in float32 and cast back, exactly as the safetensors edit.
- Block-quantized types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, and the K-quants Q4_K, Q5_K, Q6_K): only the
  blocks that hold a chosen column (32 values, or 256 for K-quants) are dequantized, scaled and
  quantized again to the same type (gguf-py's reference quantizers; ``hedit.edit.gguf_quants`` for the
  K-quants, which gguf-py only reads); every other block keeps its bytes. The requantization error
  against the exactly scaled values is measured per tensor and reported.
- Other types (Q2_K, Q3_K, the IQ types, ...) are refused with a clear error.

Provenance goes to ``<out>.hedit.json`` beside the file (adding GGUF metadata would move every tensor).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hedit import __version__
from hedit.errors import HeditError
from hedit.io.atomic import SIDECAR, atomic_file, atomic_write_text, check_target
from hedit.edit.gguf_quants import QUANTIZERS, quantize_k
from hedit.edit.neurons import NeuronSet
from hedit.progress import bar
from hedit.registry import Architecture, architecture_for_gguf

EXACT_TYPES = ("F32", "F16", "BF16")
REQUANTIZABLE = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", *QUANTIZERS)


@dataclass
class TensorEdit:
    name: str
    type: str
    neurons: int
    requantized_blocks: int  # 0 for F32/F16/BF16
    max_abs_error: float  # against the exactly scaled values (0 for F32/F16/BF16 up to the cast)


@dataclass
class GgufEditReport:
    out: str
    tensors: list[TensorEdit]

    @property
    def max_abs_error(self) -> float:
        return max((t.max_abs_error for t in self.tensors), default=0.0)

    @property
    def requantized(self) -> list[str]:
        return sorted({t.type for t in self.tensors if t.type not in EXACT_TYPES})


def _field(reader, key: str):
    f = reader.fields.get(key)
    if f is None:
        return None
    value = f.contents()
    return value


def gguf_shape(reader) -> tuple[Architecture, int, int]:
    """(architecture, layers, intermediate size) from a GGUF file's metadata."""
    name = _field(reader, "general.architecture")
    if not isinstance(name, str):
        raise HeditError("the GGUF file has no general.architecture")
    arch = architecture_for_gguf(name)
    layers, inter = _field(reader, f"{name}.block_count"), _field(reader, f"{name}.feed_forward_length")
    if isinstance(inter, list):
        raise HeditError(f"{name}: per-layer feed_forward_length is not supported")
    if not isinstance(layers, int) or not isinstance(inter, int):
        raise HeditError(f"the GGUF file lacks {name}.block_count or {name}.feed_forward_length")
    return arch, layers, inter


def _scaled_exact(raw: np.ndarray, qtype, scale: np.ndarray) -> tuple[np.ndarray, float]:
    from gguf import quants

    vals = quants.dequantize(raw, qtype).astype(np.float32)
    with np.errstate(over="ignore"):
        out = quants.quantize(vals * scale, qtype)
    _check_finite(quants.dequantize(out, qtype), qtype.name, scale)
    return out, 0.0


def _check_finite(values: np.ndarray, type_name: str, scale: np.ndarray) -> None:
    if not np.isfinite(values).all():
        big = scale[np.argmax(np.abs(scale))]
        raise HeditError(f"ffn_down ({type_name}): alpha {big:g} makes values that overflow; use a smaller alpha")


def _scaled_blocks(raw: np.ndarray, qtype, scale: np.ndarray, columns: list[int]) -> tuple[np.ndarray, int, float]:
    """Requantize only the blocks holding ``columns``; returns (new raw rows, blocks, max abs error)."""
    from gguf import GGML_QUANT_SIZES, quants

    block, size = GGML_QUANT_SIZES[qtype]
    out = raw.copy()
    err = 0.0
    blocks = sorted({c // block for c in columns})
    for b in blocks:
        cols = slice(b * size, (b + 1) * size)
        with np.errstate(over="ignore"):
            ideal = quants.dequantize(raw[:, cols], qtype).astype(np.float32) * scale[b * block:(b + 1) * block]
        _check_finite(ideal, qtype.name, scale)
        try:
            q = quants.quantize(ideal, qtype)
        except NotImplementedError:
            if qtype.name not in QUANTIZERS:
                raise HeditError(f"ffn_down is {qtype.name}, which hedit cannot quantize again (it can: "
                                 f"{', '.join(REQUANTIZABLE)}); convert the model to F16 or Q8_0 first "
                                 "(llama.cpp's llama-quantize), edit, then requantize") from None
            q = quantize_k(ideal, qtype.name)
        err = max(err, float(np.abs(quants.dequantize(q, qtype) - ideal).max()))
        out[:, cols] = q
    return out, len(blocks), err


def edit_gguf(source: str | Path, neurons: str | Path | NeuronSet, out: str | Path, alpha: float | None = None,
              overwrite: bool = False, allow_negative: bool = False, progress: bool = True) -> GgufEditReport:
    from gguf import GGUFReader

    source, out = Path(source), Path(out)
    if not source.is_file():
        raise HeditError(f"source not found: {source}")
    if out.suffix != ".gguf":
        raise HeditError(f"a GGUF source needs a .gguf output, got {out}")
    check_target(out, [source], overwrite)
    try:
        reader = GGUFReader(str(source))
    except (ValueError, OSError) as e:
        raise HeditError(f"{source} is not a readable GGUF file: {e}") from None
    arch, layers, inter = gguf_shape(reader)
    ns = neurons if isinstance(neurons, NeuronSet) else NeuronSet.load(neurons)
    ns.check_model(arch.model_type, layers, inter)
    if not ns.neurons:
        raise HeditError("the neurons file lists no neurons; nothing to edit")
    plan = {layer: [(j, a) for j, a in pairs if a != 1.0] for layer, pairs in ns.plan(alpha, allow_negative).items()}
    plan = {layer: pairs for layer, pairs in plan.items() if pairs}  # alpha 1 changes nothing: leave those bytes
    tensors = {t.name: t for t in reader.tensors}
    for layer in plan:
        name = arch.gguf_down_proj.format(layer=layer)
        if name not in tensors:
            raise HeditError(f"{source} has no tensor {name}")

    edits = []
    with atomic_file(out, overwrite, [source]) as tmp:
        shutil.copyfile(source, tmp)
        with open(tmp, "r+b") as f, bar(len(plan), "edit gguf", "layer", progress) as pbar:
            for layer, pairs in plan.items():
                t = tensors[arch.gguf_down_proj.format(layer=layer)]
                raw = np.asarray(t.data)
                scale = np.ones(inter, dtype=np.float32)
                for j, a in pairs:
                    scale[j] = a
                if t.tensor_type.name in EXACT_TYPES:
                    new, err = _scaled_exact(raw, t.tensor_type, scale)
                    blocks = 0
                else:
                    new, blocks, err = _scaled_blocks(raw, t.tensor_type, scale, [j for j, _ in pairs])
                data = np.ascontiguousarray(new).tobytes()
                if len(data) != t.n_bytes:
                    raise HeditError(f"{t.name}: rewritten tensor has {len(data)} bytes, expected {t.n_bytes}")
                os.pwrite(f.fileno(), data, int(t.data_offset))
                edits.append(TensorEdit(t.name, t.tensor_type.name, len(pairs), blocks, err))
                pbar.update(1)
            f.flush()
            os.fsync(f.fileno())
    report = GgufEditReport(str(out), edits)
    sidecar = {"hedit_version": __version__, "kind": "gguf-edit", "source": str(source.resolve()),
               "model_type": arch.model_type, "alpha": alpha, "neurons": len(ns.neurons),
               "max_abs_requantization_error": report.max_abs_error, "tensors": [asdict(e) for e in edits]}
    atomic_write_text(f"{out}{SIDECAR}", json.dumps(sidecar, indent=2) + "\n")
    return report
