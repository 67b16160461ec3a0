"""Read safetensors headers without loading tensors, and read or write one tensor's bytes in place.

The format: 8 bytes little-endian header length N, N bytes of JSON, then the data buffer. Each
tensor's ``data_offsets`` are relative to the start of the data buffer.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import HeditError

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
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


def read_header(path: str | Path) -> Header:
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise HeditError(f"{path.name} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise HeditError(f"{path.name} is not a safetensors file (bad header length)")
        try:
            raw = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HeditError(f"{path.name} is not a safetensors file (header is not JSON)") from None
    data_start = 8 + n
    tensors = {}
    for name, info in raw.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = info["data_offsets"]
            t = TensorInfo(name, info["dtype"], tuple(info["shape"]), data_start + begin, data_start + end)
        except (KeyError, TypeError, ValueError):
            raise HeditError(f"{path.name}: malformed header entry for tensor {name!r}") from None
        if not (data_start <= t.start <= t.end <= size):
            raise HeditError(f"{path.name}: tensor {name!r} lies outside the file (truncated?)")
        tensors[name] = t
    return Header(path, tensors, raw.get("__metadata__") or {}, data_start)


def torch_dtype(info: TensorInfo) -> torch.dtype:
    try:
        return DTYPES[info.dtype]
    except KeyError:
        raise HeditError(
            f"tensor {info.name} has dtype {info.dtype}; hedit edits only "
            f"{', '.join(DTYPES)} checkpoints (quantized weights cannot be scaled exactly)"
        ) from None


def read_tensor(fd: int, info: TensorInfo) -> torch.Tensor:
    """Read one tensor with a single pread into a fresh, writable buffer."""
    dtype = torch_dtype(info)
    buf = bytearray(info.nbytes)
    view = memoryview(buf)
    got = 0
    while got < info.nbytes:  # pread may return short reads for very large tensors
        n = os.preadv(fd, [view[got:]], info.start + got)
        if n <= 0:
            raise HeditError(f"unexpected end of file while reading {info.name}")
        got += n
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=dtype)
    return torch.frombuffer(buf, dtype=dtype).reshape(info.shape)


def write_tensor(fd: int, info: TensorInfo, tensor: torch.Tensor) -> None:
    """Overwrite one tensor's bytes in place; dtype and shape must be unchanged."""
    if tensor.dtype != torch_dtype(info) or tuple(tensor.shape) != info.shape:
        raise ValueError(f"{info.name}: dtype or shape changed")
    data = memoryview(tensor.contiguous().view(torch.uint8).numpy()).cast("B")
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], info.start + done)
