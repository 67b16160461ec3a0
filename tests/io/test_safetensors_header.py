import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hedit.errors import HeditError
from hedit.io.safetensors_header import read_header, read_tensor, write_tensor


@pytest.fixture
def sample(tmp_path):
    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.randn(4, 6).to(torch.bfloat16),
        "c": torch.arange(6, dtype=torch.float16).reshape(2, 3),
    }
    path = tmp_path / "x.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    return path, tensors


def test_header_and_tensor_bytes_match_the_safetensors_library(sample):
    import os

    path, tensors = sample
    h = read_header(path)
    assert h.metadata == {"format": "pt"}
    assert set(h.tensors) == set(tensors)
    fd = os.open(path, os.O_RDONLY)
    try:
        with safe_open(path, "pt") as f:
            for name, info in h.tensors.items():
                assert info.shape == tuple(tensors[name].shape)
                got = read_tensor(fd, info)
                assert got.dtype == tensors[name].dtype
                assert torch.equal(got, f.get_tensor(name))
    finally:
        os.close(fd)


def test_write_tensor_changes_only_that_tensor(sample, tmp_path):
    import os

    path, tensors = sample
    h = read_header(path)
    before = path.read_bytes()
    fd = os.open(path, os.O_RDWR)
    try:
        new = torch.full((4, 6), 2.5, dtype=torch.bfloat16)
        write_tensor(fd, h.tensors["b"], new)
        with pytest.raises(ValueError, match="dtype or shape"):
            write_tensor(fd, h.tensors["b"], new.float())
    finally:
        os.close(fd)
    after = path.read_bytes()
    info = h.tensors["b"]
    assert after[: info.start] == before[: info.start] and after[info.end :] == before[info.end :]
    with safe_open(path, "pt") as f:
        assert torch.equal(f.get_tensor("b"), new) and torch.equal(f.get_tensor("a"), tensors["a"])


def test_bad_files_are_clear_errors(tmp_path):
    p = tmp_path / "short.safetensors"
    p.write_bytes(b"abc")
    with pytest.raises(HeditError, match="too short"):
        read_header(p)
    p.write_bytes(struct.pack("<Q", 10**6) + b"{}")
    with pytest.raises(HeditError, match="bad header length"):
        read_header(p)
    p.write_bytes(struct.pack("<Q", 4) + b"nope")
    with pytest.raises(HeditError, match="header: not valid JSON"):
        read_header(p)


def test_truncated_file_is_detected(sample):
    path, _ = sample
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(HeditError, match="outside the file"):
        read_header(path)


def test_quantized_dtype_is_refused(tmp_path):
    import os

    path = tmp_path / "q.safetensors"
    save_file({"w": torch.zeros(2, 2, dtype=torch.int8)}, path)
    info = read_header(path).tensors["w"]
    fd = os.open(path, os.O_RDONLY)
    with pytest.raises(HeditError, match="dtype I8"):
        read_tensor(fd, info)
    os.close(fd)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_read_slices_reads_only_the_chosen_rows_or_columns(tmp_path, dtype):
    from safetensors.torch import save_file

    from hedit.io.safetensors_header import read_header, read_slices

    w = torch.randn(48, 80).to(dtype)
    save_file({"a": torch.ones(3), "w": w}, tmp_path / "m.safetensors")
    info = read_header(tmp_path / "m.safetensors").tensors["w"]
    assert torch.equal(read_slices(tmp_path / "m.safetensors", info, 0, [5, 0, 47]), w[[5, 0, 47]])
    assert torch.equal(read_slices(tmp_path / "m.safetensors", info, 1, [79, 3, 4]), w[:, [79, 3, 4]])
