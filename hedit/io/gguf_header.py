"""Read a GGUF file's header without loading it: the metadata hedit needs and every tensor's place.

The layout (GGUF v2/v3, little-endian): ``GGUF``, version u32, tensor count u64, key-value count u64; the
key-values (key string, value type u32, value; arrays as element type u32, count u64, elements); then per
tensor its name, dimension count u32, dimensions u64 (the row length first), type u32 and data offset
u64; the data begins at the next multiple of ``general.alignment`` (32 by default).

gguf-py's reader turns every metadata element into numpy objects (26 s for Gemma-3's 262k-token
vocabulary); this reader skips arrays it does not need and takes milliseconds. Every bound is checked:
a malformed or truncated file is one HeditError, never another exception.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hedit.errors import HeditError
from hedit.io.files import check_regular
from hedit.registry import Architecture, architecture_for_gguf

# value type -> struct format (scalars); 8 = string, 9 = array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
WANTED_ARRAYS = 64  # arrays up to this many elements are read (per-layer sizes); longer ones are skipped
MAX_DIMS = 8


@dataclass(frozen=True)
class GgufTensor:
    name: str
    type_name: str
    shape: tuple[int, ...]  # GGUF order: row length first
    offset: int  # absolute byte offset in the file
    n_bytes: int

    @property
    def rows(self) -> int:
        n = 1
        for d in self.shape[1:]:
            n *= d
        return n

    @property
    def row_bytes(self) -> int:
        return self.n_bytes // max(self.rows, 1)


@dataclass
class GgufHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, GgufTensor]
    data_start: int


class _Cursor:
    def __init__(self, buf, where: str):
        self.buf, self.pos, self.where = buf, 0, where

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise HeditError(f"{self.where} is not a readable GGUF file: truncated header")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            return self.buf[self.pos - n : self.pos].decode("utf-8", "replace")

    def skip_string(self) -> None:
        self.take(self.unpack("<Q"))

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise HeditError(f"{self.where} is not a readable GGUF file: unknown value type {vtype}")
        etype, count = self.unpack("<I"), self.unpack("<Q")
        if etype == _ARRAY:
            raise HeditError(f"{self.where} is not a readable GGUF file: nested arrays")
        if keep and count <= WANTED_ARRAYS:
            return [self.value(etype, True) for _ in range(count)]
        if etype in _SCALARS:
            self.take(count * struct.calcsize(_SCALARS[etype]))
        elif etype == _STRING:
            for _ in range(count):
                self.skip_string()
        else:
            raise HeditError(f"{self.where} is not a readable GGUF file: unknown array type {etype}")
        return None


def read_gguf_header(path: str | Path) -> GgufHeader:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    if not os.path.lexists(path):
        raise HeditError(f"source not found: {path}")
    check_regular(path)  # a FIFO, a device or a folder named .gguf is named as what it is, never opened to wait
    where = str(path)
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            if size < 24:
                raise HeditError(f"{where} is not a readable GGUF file: too short")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise HeditError(f"cannot read {where}: {e.strerror}") from None
    try:
        c = _Cursor(buf, where)
        if c.take(4) != b"GGUF":
            raise HeditError(f"{where} is not a readable GGUF file: no GGUF magic")
        version = c.unpack("<I")
        if version not in (2, 3):
            raise HeditError(f"{where}: GGUF version {version} is not supported (2 or 3)")
        n_tensors, n_kv = c.unpack("<Q"), c.unpack("<Q")
        if n_tensors > 1 << 24 or n_kv > 1 << 24:
            raise HeditError(f"{where} is not a readable GGUF file: implausible counts")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = c.string()
            metadata[key] = c.value(c.unpack("<I"), keep=True)
        infos = []
        for _ in range(n_tensors):
            name = c.string()
            n_dims = c.unpack("<I")
            if not 1 <= n_dims <= MAX_DIMS:
                raise HeditError(f"{where}: tensor {name!r} has {n_dims} dimensions")
            shape = tuple(c.unpack("<Q") for _ in range(n_dims))
            ttype, offset = c.unpack("<I"), c.unpack("<Q")
            infos.append((name, shape, ttype, offset))
        align = metadata.get("general.alignment", 32)
        if type(align) is not int or align <= 0 or align & (align - 1):
            raise HeditError(f"{where}: general.alignment {align!r} is not a power of two")
        data_start = -(-c.pos // align) * align
        tensors = {}
        for name, shape, ttype, offset in infos:
            try:
                qtype = GGMLQuantizationType(ttype)
            except ValueError:
                raise HeditError(f"{where}: tensor {name!r} has unknown type {ttype}") from None
            block, size = GGML_QUANT_SIZES[qtype]
            if shape[0] % block:
                raise HeditError(f"{where}: tensor {name!r} rows of {shape[0]} do not fill {qtype.name} blocks")
            count = 1
            for d in shape:
                count *= d
            n_bytes = count // block * size
            start = data_start + offset
            if offset % align:
                raise HeditError(f"{where}: tensor {name!r} data at offset {offset} is not aligned to {align} bytes")
            if start + n_bytes > size_of(buf):
                raise HeditError(f"{where}: tensor {name!r} lies outside the file (truncated?)")
            if name in tensors:
                raise HeditError(f"{where}: tensor {name!r} appears twice")
            tensors[name] = GgufTensor(name, qtype.name, shape, start, n_bytes)
        _check_layout(list(tensors.values()), where)
        return GgufHeader(path, version, metadata, tensors, data_start)
    finally:
        buf.close()


def _check_layout(tensors: list[GgufTensor], where: str) -> None:
    """No two tensors share bytes (an edit of one would change the other), and tensor data comes in the
    header's order, as gguf-py and llama.cpp write it; either is refused, as in safetensors."""
    by_offset = sorted(tensors, key=lambda t: (t.offset, t.n_bytes))
    for a, b in zip(by_offset, by_offset[1:]):
        if b.offset < a.offset + a.n_bytes and b.n_bytes and a.n_bytes:
            raise HeditError(
                f"{where}: tensors {a.name!r} and {b.name!r} share bytes ({a.offset}..{a.offset + a.n_bytes} and "
                f"{b.offset}..{b.offset + b.n_bytes}); not a GGUF file hedit can edit safely"
            )
    for a, b in zip(tensors, tensors[1:]):
        if b.offset < a.offset:
            raise HeditError(
                f"{where}: tensor data out of order ({b.name!r} lies before {a.name!r}, which the header lists "
                "first); not a GGUF file hedit can edit safely"
            )


def size_of(buf) -> int:
    return len(buf)


def gguf_experts(header: GgufHeader, arch: Architecture, layers: int):
    """The ``ExpertsShape`` of a mixture-of-experts GGUF file, from llama.cpp's metadata keys
    (``expert_count``, ``expert_feed_forward_length``, ``leading_dense_block_count``,
    ``expert_shared_feed_forward_length`` or ``expert_shared_count``); None for a dense model."""
    from hedit.registry import ExpertsShape

    if arch.moe is None:
        return None
    name, md = arch.gguf_arch, header.metadata

    def count(key, default=None):
        v = md.get(f"{name}.{key}", default)
        if v is not None and (type(v) is not int or v < 0):
            raise HeditError(f"the GGUF file's {name}.{key} must be a non-negative integer, got {v!r}")
        return v

    experts, inter = count("expert_count"), count("expert_feed_forward_length")
    if not experts or not inter:
        raise HeditError(f"the GGUF file lacks {name}.expert_count or {name}.expert_feed_forward_length")
    dense = frozenset(range(min(count("leading_dense_block_count", 0), layers)))
    shared = count("expert_shared_feed_forward_length") or inter * (count("expert_shared_count", 0) or 0)
    return ExpertsShape(layers, inter, experts, dense, count("feed_forward_length", inter) or inter, shared)


def gguf_shape(header: GgufHeader) -> tuple[Architecture, int, int]:
    """(architecture, layers, intermediate size) from a GGUF file's metadata; a mixture of experts' is one
    expert's (``gguf_experts`` tells the rest)."""
    name = header.metadata.get("general.architecture")
    if not isinstance(name, str):
        raise HeditError("the GGUF file has no general.architecture")
    experts = header.metadata.get(f"{name}.expert_count")
    arch = architecture_for_gguf(name, experts=type(experts) is int and experts > 0)
    if arch.moe is not None:
        layers = header.metadata.get(f"{name}.block_count")
        if type(layers) is not int or layers <= 0:
            raise HeditError(f"the GGUF file lacks {name}.block_count (a positive integer)")
        shape = gguf_experts(header, arch, layers)
        _check_expert_shapes(header, arch, shape)
        return arch, layers, shape.intermediate_size
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


def _check_expert_shapes(header: GgufHeader, arch: Architecture, shape) -> None:
    """A mixture's MLP tensors have the shapes the metadata implies (GGUF order): ``ffn_up_exps``
    [embd, I, experts], ``ffn_down_exps`` [I, embd, experts], shared and dense ones 2-D."""
    embd = header.metadata.get(f"{arch.gguf_arch}.embedding_length")
    embd = embd if type(embd) is int and embd > 0 else None
    for layer, expert in shape.sites():
        if isinstance(expert, int) and expert > 0:
            continue
        width = shape.width(layer, expert)
        for which in ("down", "up"):
            t = header.tensors.get(arch.gguf_tensor(layer, which, expert))
            if t is None:
                continue
            want = (width, embd) if which == "down" else (embd, width)
            if isinstance(expert, int):
                want = (*want, shape.num_experts)
            if len(t.shape) != len(want) or any(w is not None and w != g for w, g in zip(want, t.shape)):
                raise HeditError(
                    f"{header.path}: {t.name} has shape {list(t.shape)}, but the metadata says "
                    f"{[w if w is not None else 'embd' for w in want]}; not a file hedit can edit safely"
                )


def known_names(header: GgufHeader) -> list[str]:
    out = []
    url = header.metadata.get("general.base_model.0.repo_url")
    if isinstance(url, str) and "/" in url:
        out.append("/".join(url.rstrip("/").split("/")[-2:]))
    for key in ("general.base_model.0.organization", "general.name"):
        v = header.metadata.get(key)
        if isinstance(v, str):
            out.append(v)
    return out
