"""GGUF quantization blocks: where each type keeps its scales, and the two edits hedit makes on them.

**Rows (the ``up`` target).** In every block-quantized GGUF type a block lies inside one row, and every
value of the block is a product with the block's f16 scale ``d`` (and its offset ``dmin``/``m`` where the
type has one): ``value = d * f(q)`` or ``value = d * f(q) + m``. So multiplying those f16 fields by alpha
multiplies the row by alpha, exactly up to the rounding of the new f16 scale (alpha 0 and powers of two
exactly); every other byte stays as it is. ``ROW_SCALES`` lists, per type, the byte offsets of those
fields in a block (checked against gguf-py's block sizes). IQ1_M keeps its f16 scale in the top nibbles of
its four sub-block scale words; MXFP4 has a power-of-two (E8M0) scale, so only alpha 0 (zeroed values) and
powers of two are exact there, and other alphas are refused. F32/F16/BF16 rows are scaled value by value.

**Elements (the ``down`` target).** Neuron j is column j of ffn_down, one value in one block of every
row. The block's scales stay; only that value's quantized integer is re-rounded to the nearest integer
for alpha times its value (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K). Other types carry no
per-element integer hedit can re-round; for them the ``up`` target is exact.
"""

from __future__ import annotations

import numpy as np

from hedit.errors import HeditError
from hedit.io.quant import scale_fp4_nibbles

# type -> (values per block, bytes per block, byte offsets of the f16 fields that multiply every value)
ROW_SCALES = {
    "Q4_0": (32, 18, (0,)),
    "Q4_1": (32, 20, (0, 2)),
    "Q5_0": (32, 22, (0,)),
    "Q5_1": (32, 24, (0, 2)),
    "Q8_0": (32, 34, (0,)),
    "Q2_K": (256, 84, (80, 82)),
    "Q3_K": (256, 110, (108,)),
    "Q4_K": (256, 144, (0, 2)),
    "Q5_K": (256, 176, (0, 2)),
    "Q6_K": (256, 210, (208,)),
    "IQ4_NL": (32, 18, (0,)),
    "IQ4_XS": (256, 136, (0,)),
    "IQ2_XXS": (256, 66, (0,)),
    "IQ2_XS": (256, 74, (0,)),
    "IQ2_S": (256, 82, (0,)),
    "IQ3_XXS": (256, 98, (0,)),
    "IQ3_S": (256, 110, (0,)),
    "IQ1_S": (256, 50, (0,)),
    "TQ1_0": (256, 54, (52,)),
    "TQ2_0": (256, 66, (64,)),
}
SPECIAL = {"IQ1_M": (256, 56), "MXFP4": (32, 17)}
FLOATS = ("F32", "F16", "BF16")
ROW_TYPES = (*FLOATS, *ROW_SCALES, *SPECIAL)
ELEMENT_TYPES = (*FLOATS, "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "MXFP4")


def _check_sizes() -> None:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    for name, (values, size, *_) in (ROW_SCALES | SPECIAL).items():
        if GGML_QUANT_SIZES[GGMLQuantizationType[name]] != (values, size):
            raise RuntimeError(f"gguf-py's {name} block is not {values} values in {size} bytes")


_check_sizes()


def _overflow(type_name: str, alphas: np.ndarray) -> HeditError:
    big = alphas.flat[int(np.argmax(np.abs(alphas)))]
    return HeditError(f"{type_name}: alpha {big:g} makes values that overflow; use a smaller alpha")


# ------------------------------------------------------------------------------------------ rows


def _float_rows(rows: np.ndarray, type_name: str, alphas: np.ndarray) -> np.ndarray:
    import torch

    dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[type_name]
    t = torch.from_numpy(np.ascontiguousarray(rows)).view(dtype)
    scaled = (t.to(torch.float32) * torch.from_numpy(alphas.astype(np.float32))[:, None]).to(dtype)
    if not bool(torch.isfinite(scaled).all()):
        raise _overflow(type_name, alphas)
    return scaled.view(torch.uint8).numpy()


def _scale_f16(fields: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        new = (fields.astype(np.float32) * alphas.reshape(-1, *([1] * (fields.ndim - 1)))).astype(np.float16)
    return new


def scale_rows(rows: np.ndarray, type_name: str, alphas: np.ndarray) -> np.ndarray:
    """``rows`` (uint8, [n, row bytes]) with row i multiplied by ``alphas[i]``, changing only scale bytes."""
    alphas = np.asarray(alphas, dtype=np.float32)
    if type_name in FLOATS:
        return _float_rows(rows, type_name, alphas)
    out = np.array(rows, dtype=np.uint8, copy=True)
    n = out.shape[0]
    if type_name in ROW_SCALES:
        _, size, offsets = ROW_SCALES[type_name]
        blocks = out.reshape(n, -1, size)
        for off in offsets:
            field = np.ascontiguousarray(blocks[:, :, off : off + 2]).view(np.float16)  # [n, blocks, 1]
            new = _scale_f16(field, alphas)
            if not np.isfinite(new).all():
                raise _overflow(type_name, alphas)
            blocks[:, :, off : off + 2] = new.view(np.uint8)
        return out
    if type_name == "IQ1_M":
        blocks = out.reshape(n, -1, 56)
        words = np.ascontiguousarray(blocks[:, :, 48:56]).view(np.uint16)  # [n, blocks, 4]
        shifts = np.array([0, 4, 8, 12], dtype=np.uint16)
        d = ((words >> np.uint16(12)) << shifts).sum(axis=-1).astype(np.uint16).view(np.float16)
        new = _scale_f16(d, alphas).view(np.uint16)
        if not np.isfinite(new.view(np.float16)).all():
            raise _overflow(type_name, alphas)
        nib = (new[..., None] >> shifts) & np.uint16(0xF)
        words = (words & np.uint16(0x0FFF)) | (nib << np.uint16(12))
        blocks[:, :, 48:56] = words.astype(np.uint16).view(np.uint8)
        return out
    if type_name == "MXFP4":
        return _mxfp4_rows(out.reshape(n, -1, 17), alphas).reshape(out.shape)
    raise HeditError(f"GGUF type {type_name} has no per-block scale hedit can edit")


def _mxfp4_rows(blocks: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    for i, a in enumerate(alphas):
        if a == 0:
            blocks[i, :, 1:] = 0  # E2M1 code 0 is +0: the row is exactly zero
            continue
        k = np.log2(abs(float(a)))
        if k != round(k):
            raise HeditError(
                f"MXFP4 scales are powers of two (E8M0): alpha {a:g} cannot be applied exactly; "
                "use 0, a power of two, or a GGUF of another type"
            )
        e = blocks[i, :, 0].astype(np.int32) + int(round(k))
        if (e < 1).any() or (e > 254).any():
            raise _overflow("MXFP4", np.array([a]))
        blocks[i, :, 0] = e.astype(np.uint8)
        if a < 0:
            blocks[i, :, 1:] ^= 0x88  # flip the sign bit of both E2M1 values in each byte
    return blocks


# ------------------------------------------------------------------------------------------ elements


def _legacy(type_name: str):
    """(offsets) for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0: d at 0, m at 2 (where present), qh, qs."""
    return {"Q4_0": (None, None, 2), "Q4_1": (2, None, 4), "Q5_0": (None, 2, 6), "Q5_1": (2, 4, 8)}[type_name]


def requantize_elements(
    blocks: np.ndarray, type_name: str, positions: np.ndarray, alphas: np.ndarray
) -> tuple[np.ndarray, int]:
    """``blocks`` (uint8, [n, block bytes], one block per row) with the value at ``positions[i]`` of every
    row replaced by the nearest representable value to ``alphas[i]`` times it, under the block's own
    scales; ``positions`` and ``alphas`` are per column edit: [m] (applied to all n rows). Also returns
    how many values clipped: alpha times them lies more than a step past the block's range, so the
    stored value is more than one quantization step from it."""
    out = np.array(blocks, dtype=np.uint8, copy=True)
    clips = [0]
    for pos, a in zip(positions, alphas):
        _requantize_one(out, type_name, int(pos), float(a), clips)
    return out, clips[0]


def _clip(x: np.ndarray, lo: int, hi: int, live: np.ndarray, clips: list[int]) -> np.ndarray:
    """The integer nearest ``x`` (alpha times a value, in units of its block's step) within [lo, hi];
    counts, where the block is live, the values that land more than one step from ``x`` (past the
    block's range: a clip, not a rounding)."""
    clips[0] += int((((x < lo - 1) | (x > hi + 1)) & live).sum())
    return np.clip(np.rint(x), lo, hi)


def _f16(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(np.float16).astype(np.float32).reshape(-1)


def _requantize_one(b: np.ndarray, t: str, k: int, a: float, clips: list[int]) -> None:
    """In place: value k of every block (row) of ``b`` re-rounded for alpha ``a``."""
    if t == "MXFP4":  # E8M0 byte, then 16 bytes: value k in the low nibble of byte k, k + 16 in the high one
        byte = 1 + k % 16
        # ggml's MXFP4 values are E2M1's doubled, in the same code order
        b[:, byte], bad = scale_fp4_nibbles(b[:, byte], 0 if k < 16 else 4, a)
        if bad is not None:
            raise HeditError(
                f"ffn_down is MXFP4: alpha {a:g} takes an FP4 value {bad:g} to {bad * a:g}, which E2M1 cannot hold, "
                "and the value shares its block's scale with 31 others; alpha 0 is exact for every neuron"
            )
        return
    if t in ("Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        d = _f16(b[:, 0:2])
        m_off, qh_off, qs_off = _legacy(t)
        m = _f16(b[:, m_off : m_off + 2]) if m_off is not None else None
        byte, shift = qs_off + (k % 16), (0 if k < 16 else 4)
        q = ((b[:, byte] >> shift) & 0x0F).astype(np.int32)
        hi_bits = 4 if qh_off is not None else 0
        if qh_off is not None:
            qh = np.ascontiguousarray(b[:, qh_off : qh_off + 4]).view(np.uint32).reshape(-1)
            q |= ((qh >> np.uint32(k)) & np.uint32(1)).astype(np.int32) << 4
        top = (1 << (4 + hi_bits // 4)) - 1
        if m is None:
            center = 8 if t == "Q4_0" else 16
            value = d * (q - center)
            qn = _clip(np.divide(a * value, d, out=np.zeros_like(d), where=d != 0) + center, 0, top, d != 0, clips)
        else:
            value = d * q + m
            qn = _clip(np.divide(a * value - m, d, out=np.zeros_like(d), where=d != 0), 0, top, d != 0, clips)
        qn = np.where(d == 0, q, qn).astype(np.int32)
        b[:, byte] = (b[:, byte] & np.uint8(0xF0 if shift == 0 else 0x0F)) | ((qn & 0x0F).astype(np.uint8) << shift)
        if qh_off is not None:
            qh = np.ascontiguousarray(b[:, qh_off : qh_off + 4]).view(np.uint32).reshape(-1)
            qh = (qh & ~np.uint32(1 << k)) | (((qn >> 4) & 1).astype(np.uint32) << np.uint32(k))
            b[:, qh_off : qh_off + 4] = qh.reshape(-1, 1).view(np.uint8)
        return
    if t == "Q8_0":
        d = _f16(b[:, 0:2])
        q = b[:, 2 + k].view(np.int8).astype(np.int32)
        qn = _clip(np.divide(a * d * q, d, out=np.zeros_like(d), where=d != 0), -128, 127, d != 0, clips)
        qn = np.where(d == 0, q, qn).astype(np.int8)
        b[:, 2 + k] = qn.view(np.uint8)
        return
    if t in ("Q4_K", "Q5_K"):
        from gguf.quants import Q4_K

        d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
        sc, mn = Q4_K.get_scale_min(b[:, 4:16].reshape(-1, 12))
        s = k // 32
        step = d * sc.reshape(-1, 8)[:, s].astype(np.float32)
        off = dmin * mn.reshape(-1, 8)[:, s].astype(np.float32)
        qs_off = 16 if t == "Q4_K" else 48
        byte, shift = qs_off + (s // 2) * 32 + (k % 32), (0 if s % 2 == 0 else 4)
        q = ((b[:, byte] >> shift) & 0x0F).astype(np.int32)
        top = 15
        if t == "Q5_K":
            hb = 16 + (k % 32)
            q |= ((b[:, hb] >> s) & 1).astype(np.int32) << 4
            top = 31
        value = step * q - off
        raw = np.divide(a * value + off, step, out=np.zeros_like(step), where=step != 0)
        qn = _clip(raw, 0, top, step != 0, clips)
        qn = np.where(step == 0, q, qn).astype(np.int32)
        b[:, byte] = (b[:, byte] & np.uint8(0xF0 if shift == 0 else 0x0F)) | ((qn & 0x0F).astype(np.uint8) << shift)
        if t == "Q5_K":
            b[:, hb] = (b[:, hb] & np.uint8(~(1 << s) & 0xFF)) | (((qn >> 4) & 1).astype(np.uint8) << s)
        return
    if t == "Q6_K":
        d = _f16(b[:, 208:210])
        sc = b[:, 192 + k // 16].view(np.int8).astype(np.float32)
        step = d * sc
        h, s, kk = k // 128, (k % 128) // 32, k % 32
        lb, lshift = h * 64 + (s % 2) * 32 + kk, 4 * (s // 2)
        hb, hshift = 128 + h * 32 + kk, 2 * s
        q = (((b[:, lb] >> lshift) & 0x0F) | (((b[:, hb] >> hshift) & 0x03) << 4)).astype(np.int32)
        value = step * (q - 32)
        qn = _clip(np.divide(a * value, step, out=np.zeros_like(step), where=step != 0) + 32, 0, 63, step != 0, clips)
        qn = np.where(step == 0, q, qn).astype(np.int32)
        b[:, lb] = (b[:, lb] & np.uint8(~(0x0F << lshift) & 0xFF)) | ((qn & 0x0F).astype(np.uint8) << lshift)
        b[:, hb] = (b[:, hb] & np.uint8(~(0x03 << hshift) & 0xFF)) | (((qn >> 4) & 0x03).astype(np.uint8) << hshift)
        return
    raise HeditError(
        f"ffn_down is {t}, whose values hedit cannot re-round one by one (it can: "
        f"{', '.join(ELEMENT_TYPES)}); use --target up, which is exact for every block type"
    )
