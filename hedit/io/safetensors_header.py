"""Read safetensors headers without loading tensors, and read or write one tensor's bytes in place.

The format: 8 bytes little-endian header length N, N bytes of JSON, then the data buffer. Each
tensor's ``data_offsets`` are relative to the start of the data buffer.
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from hedit.errors import HeditError
from hedit.io.jsonfile import loads

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}
MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Header:
    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int


# Bytes per element of every safetensors dtype (quantized checkpoints store I8/U8/I32/F8 tensors).
ITEMSIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
}


def parse_header(raw: bytes, size: int, name: str) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    """Tensors, metadata and data start from a header's JSON bytes, for a file of ``size`` bytes.
    Every entry is checked: known dtype, whole-number shape, offsets that agree with shape and dtype,
    inside the file, no two tensors overlapping."""
    data = loads(raw, f"{name}: safetensors header")
    if not isinstance(data, dict):
        raise HeditError(f"{name} is not a safetensors file (header is not a JSON object)")
    data_start = 8 + len(raw)
    meta = data.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise HeditError(f"{name}: __metadata__ must map strings to strings")
    tensors = {}
    for tname, info in data.items():
        if tname == "__metadata__":
            continue
        where = f"{name}: tensor {tname!r}"
        if not isinstance(info, dict):
            raise HeditError(f"{where}: header entry is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in ITEMSIZE:
            raise HeditError(f"{where}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise HeditError(f"{where}: shape must be a list of whole numbers")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(_is_count(o) for o in offsets)
            and offsets[0] <= offsets[1]
        ):
            raise HeditError(f"{where}: data_offsets must be two whole numbers, begin <= end")
        t = TensorInfo(tname, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])
        if t.nbytes != math.prod(t.shape) * ITEMSIZE[dtype]:
            raise HeditError(f"{where}: {t.nbytes} bytes disagree with shape {list(t.shape)} of {dtype}")
        if t.end > size:
            raise HeditError(f"{where}: lies outside the file (truncated?)")
        tensors[tname] = t
    spans = sorted((t.start, t.end, t.name) for t in tensors.values() if t.nbytes)
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise HeditError(f"{name}: tensors {a!r} and {b!r} overlap")
    return tensors, meta, data_start


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def read_header(path: str | Path) -> Header:
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise HeditError(f"{path.name} is not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise HeditError(f"{path.name} is not a safetensors file (bad header length)")
            raw = f.read(n)
    except OSError as e:
        raise HeditError(f"cannot read {path}: {e.strerror}") from None
    tensors, meta, data_start = parse_header(raw, size, path.name)
    return Header(path, tensors, meta, data_start)


def torch_dtype(info: TensorInfo) -> torch.dtype:
    try:
        return DTYPES[info.dtype]
    except KeyError:
        raise HeditError(
            f"tensor {info.name} has dtype {info.dtype}; hedit edits only "
            f"{', '.join(DTYPES)} checkpoints (quantized weights cannot be scaled exactly)"
        ) from None


def read_bytes(fd: int, info: TensorInfo) -> bytearray:
    """One tensor's bytes, into a fresh, writable buffer."""
    buf = bytearray(info.nbytes)
    view = memoryview(buf)
    got = 0
    while got < info.nbytes:  # pread may return short reads for very large tensors
        n = os.preadv(fd, [view[got:]], info.start + got)
        if n <= 0:
            raise HeditError(f"unexpected end of file while reading {info.name}")
        got += n
    return buf


TORCH_ANY = {
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "BOOL": torch.bool,
} | DTYPES


def read_any(fd: int, info: TensorInfo) -> torch.Tensor:
    """Any tensor (quantized integers and FP8 too) as torch, in its own dtype."""
    dtype = TORCH_ANY.get(info.dtype)
    if dtype is None:
        raise HeditError(f"tensor {info.name} has dtype {info.dtype}, which hedit cannot read")
    buf = read_bytes(fd, info)
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=dtype)
    return torch.frombuffer(buf, dtype=dtype).reshape(info.shape)


def read_tensor(fd: int, info: TensorInfo) -> torch.Tensor:
    """Read one tensor with a single pread into a fresh, writable buffer."""
    dtype = torch_dtype(info)
    buf = read_bytes(fd, info)
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=dtype)
    return torch.frombuffer(buf, dtype=dtype).reshape(info.shape)


def read_slices(path: str | Path, info: TensorInfo, axis: int, index: list[int]) -> torch.Tensor:
    """Only rows (``axis`` 0) or columns (``axis`` 1) ``index`` of a 2-D tensor, in its dtype, as
    [len(index), columns] or [rows, len(index)]: memory-mapped, so only the pages holding them are read
    (a row is contiguous; a column touches one page per row)."""
    import numpy as np

    rows, cols = info.shape
    size = info.nbytes // max(1, rows * cols)
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=info.start, shape=(rows, cols * size))
    if axis == 0:
        picked = np.ascontiguousarray(raw[index])
        shape = (len(index), cols)
    else:
        byte_cols = (np.asarray(index)[:, None] * size + np.arange(size)).reshape(-1)
        picked = np.ascontiguousarray(raw[:, byte_cols])
        shape = (rows, len(index))
    del raw
    return torch.frombuffer(bytearray(picked.tobytes()), dtype=torch_dtype(info)).reshape(shape)


def write_tensor(fd: int, info: TensorInfo, tensor: torch.Tensor) -> None:
    """Overwrite one tensor's bytes in place; dtype and shape must be unchanged."""
    if tensor.dtype != torch_dtype(info) or tuple(tensor.shape) != info.shape:
        raise ValueError(f"{info.name}: dtype or shape changed")
    from hedit.io.files import pwrite_all

    pwrite_all(fd, tensor.contiguous().view(torch.uint8).numpy(), info.start)


def slot_info(info: TensorInfo, slot: int | None) -> TensorInfo:
    """The 2-D TensorInfo of expert ``slot`` inside a stacked [experts, a, b] tensor (itself when None)."""
    if slot is None:
        return info
    e, a, b = info.shape
    size = info.nbytes // (e * a * b)
    start = info.start + slot * a * b * size
    return dataclasses.replace(info, shape=(a, b), start=start, end=start + a * b * size)
