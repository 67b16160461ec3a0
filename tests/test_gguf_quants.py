"""hedit's K-quant quantizers against gguf-py's dequantizers (the layouts llama.cpp reads)."""

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from hedit.edit.gguf_quants import QUANTIZERS, quantize_k

LEVELS = {"Q4_K": 15, "Q5_K": 31, "Q6_K": 62}


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_round_trip_error_is_within_one_step_per_sub_block(name):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 1024)) * rng.uniform(0.01, 1.0, (4, 1))).astype(np.float32)
    q = quantize_k(x, name)
    assert q.dtype == np.uint8 and q.shape == (4, 4 * QUANTIZERS[name][1])
    back = gguf.quants.dequantize(q, T[name])
    sub = 16 if name == "Q6_K" else 32
    groups = x.reshape(4, -1, sub)
    step = (np.maximum(groups.max(-1), 0) - np.minimum(groups.min(-1), 0)) / LEVELS[name]
    err = np.abs(back - x).reshape(4, -1, sub).max(-1)
    assert (err <= step * 1.15 + 1e-6).all()  # half a step of rounding, plus the 6/8-bit scale rounding


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_zeros_and_constant_signs(name):
    z = np.zeros((2, 256), dtype=np.float32)
    assert np.array_equal(gguf.quants.dequantize(quantize_k(z, name), T[name]), z)
    pos = np.full((1, 256), 0.5, dtype=np.float32)
    assert np.abs(gguf.quants.dequantize(quantize_k(pos, name), T[name]) - pos).max() < 0.01


def test_rows_must_be_whole_super_blocks():
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize_k(np.zeros((1, 100), dtype=np.float32), "Q4_K")
