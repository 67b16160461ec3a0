import pytest
import torch

from hedit.errors import HeditError
from hedit.models import load_model, load_tokenizer


def test_load_model_float32_eval(checkpoint):
    m = load_model(checkpoint("llama", dtype=torch.bfloat16), torch.float32)
    assert not m.training and next(m.parameters()).dtype == torch.float32


def test_no_tokenizer_is_none_and_bad_path_is_an_error(checkpoint, tmp_path):
    assert load_tokenizer(checkpoint("llama")) is None
    with pytest.raises(HeditError, match="cannot load model"):
        load_model(tmp_path)
