import pytest
import torch

from hedit.errors import HeditError
from hedit.model.load import load_model, load_tokenizer


def test_load_model_float32_eval(checkpoint):
    m = load_model(checkpoint("llama", dtype=torch.bfloat16), torch.float32)
    assert not m.training and next(m.parameters()).dtype == torch.float32


def test_no_tokenizer_is_none_and_bad_path_is_an_error(checkpoint, tmp_path):
    assert load_tokenizer(checkpoint("llama")) is None
    with pytest.raises(HeditError, match="cannot load model"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    "device, message",
    [
        ("banana", "unknown device 'banana'"),
        ("cuda:x", "unknown device 'cuda:x'"),
        ("meta", "hedit runs on cpu, cuda or mps"),
    ],
)
def test_bad_device_names(checkpoint, device, message):
    from hedit.model.load import check_device

    with pytest.raises(HeditError, match=message):
        check_device(device)
    with pytest.raises(HeditError, match=message):  # before anything is loaded
        load_model(checkpoint("llama"), device=device)


def test_cuda_checked_against_what_torch_sees(monkeypatch):
    from hedit.model.load import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HeditError, match="device 'cuda': torch sees no CUDA GPU"):
        check_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda") == "cuda" and check_device("cuda:1") == "cuda:1"
    with pytest.raises(HeditError, match=r"device 'cuda:2': only 2 CUDA GPU\(s\) here"):
        check_device("cuda:2")
    assert check_device("cpu") == "cpu"
