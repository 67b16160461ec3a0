"""Quantizers for the GGUF K-quant types gguf-py can only read: Q4_K, Q5_K and Q6_K.

They write the exact block layouts that gguf-py's (and llama.cpp's) dequantizers read, with a plain
choice of scales (per sub-block min/max, then 6- or 8-bit sub-block scales against one fp16 scale per
256-value super-block) instead of llama.cpp's iterative search: a little more error per block, which
hedit measures and reports. hedit only requantizes the few blocks that hold edited neurons.
"""

from __future__ import annotations

import numpy as np

QK_K = 256


def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape, dtype=np.float32), where=b != 0)


def _scales_mins(x: np.ndarray, levels: int):
    """x: [n, 8, 32]. Returns fp16 d, dmin [n], 6-bit sc, m [n, 8] and integer q [n, 8, 32] in 0..levels,
    for the asymmetric form x ~ d*sc*q - dmin*m."""
    lo = np.minimum(x.min(axis=-1), 0.0)
    hi = x.max(axis=-1)
    scale = (hi - lo) / levels  # per sub-block step
    mins = -lo  # per sub-block offset, >= 0
    d = _f16(scale.max(axis=-1) / 63.0)
    dmin = _f16(mins.max(axis=-1) / 63.0)
    d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    sc = np.clip(np.rint(_safe_div(scale, d32)), 0, 63).astype(np.uint8)
    m = np.clip(np.rint(_safe_div(mins, dmin32)), 0, 63).astype(np.uint8)
    step = (d32 * sc)[..., None]
    off = (dmin32 * m)[..., None]
    q = np.clip(np.rint(_safe_div(x + off, step)), 0, levels).astype(np.uint8)
    return d, dmin, sc, m, q


def _pack_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and eight 6-bit mins into the 12-byte K-quant layout."""
    lo = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    mid = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    hi = (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)
    return np.concatenate([lo, mid, hi], axis=-1).astype(np.uint8)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """[n, 8, 32] 4-bit values -> [n, 128]: byte j*32+l holds sub-block 2j (low) and 2j+1 (high)."""
    return (q[:, 0::2, :] | (q[:, 1::2, :] << 4)).reshape(q.shape[0], -1).astype(np.uint8)


def _q4_k(blocks: np.ndarray) -> np.ndarray:
    d, dmin, sc, m, q = _scales_mins(blocks.reshape(-1, 8, 32), 15)
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2),
                           _pack_scales(sc, m), _nibbles(q)], axis=-1)


def _q5_k(blocks: np.ndarray) -> np.ndarray:
    d, dmin, sc, m, q = _scales_mins(blocks.reshape(-1, 8, 32), 31)
    qh = np.zeros((q.shape[0], 32), dtype=np.uint8)
    for i in range(8):
        qh |= ((q[:, i, :] >> 4) & 1) << i
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2),
                           _pack_scales(sc, m), qh, _nibbles(q & 0x0F)], axis=-1)


def _q6_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    x = blocks.reshape(n, 16, 16)
    scale = np.abs(x).max(axis=-1) / 31.0  # per 16 values
    d = _f16(scale.max(axis=-1) / 127.0)
    d32 = d.astype(np.float32)[:, None]
    sc = np.clip(np.rint(_safe_div(scale, d32)), -128, 127).astype(np.int8)
    step = (d32 * sc.astype(np.float32))[..., None]
    q = (np.clip(np.rint(_safe_div(x, step)), -32, 31) + 32).astype(np.uint8).reshape(n, 2, 4, 32)
    # element e = h*128 + s*32 + k: low 4 bits in ql[h*64 + (s%2)*32 + k] >> 4*(s//2), high 2 bits in
    # qh[h*32 + k] >> 2*s
    low, high = q & 0x0F, q >> 4
    ql = (low[:, :, 0:2, :] | (low[:, :, 2:4, :] << 4)).reshape(n, 128)
    qh = (high[:, :, 0, :] | (high[:, :, 1, :] << 2) | (high[:, :, 2, :] << 4) | (high[:, :, 3, :] << 6)).reshape(n, 64)
    return np.concatenate([ql, qh, sc.view(np.uint8), d.view(np.uint8).reshape(-1, 2)], axis=-1).astype(np.uint8)


QUANTIZERS = {"Q4_K": (_q4_k, 144), "Q5_K": (_q5_k, 176), "Q6_K": (_q6_k, 210)}


def quantize_k(x: np.ndarray, qtype_name: str) -> np.ndarray:
    """x: [rows, multiple of 256] float32 -> [rows, bytes] uint8 in the ``qtype_name`` layout."""
    fn, size = QUANTIZERS[qtype_name]
    rows, cols = x.shape
    if cols % QK_K:
        raise ValueError(f"{qtype_name} needs rows of a multiple of {QK_K} values, got {cols}")
    blocks = x.astype(np.float32).reshape(-1, QK_K)
    return fn(blocks).reshape(rows, cols // QK_K * size)
