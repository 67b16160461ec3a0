"""Quantized safetensors checkpoints: how each format stores a projection, where its per-output-channel
scales live, and reference dequantizers (numpy, read from the formats' documented layouts and checked in
the tests against the formats' own libraries where those install).

Formats, by the tensors of one projection (W is [out, in]; an output channel of up_proj is one neuron):

- ``gptq`` (AutoGPTQ / optimum layout): ``qweight`` int32 [in/8, out] (4-bit values packed along the
  input), ``qzeros`` int32 [groups, out/8] (stored minus one), ``scales`` [groups, out], optional
  ``g_idx`` [in]. W[o, i] = scales[g, o] * (q[i, o] - (z[g, o] + 1)), g = g_idx[i] (default i // group).
- ``awq`` (AutoAWQ GEMM layout): ``qweight`` int32 [in, out/8] and ``qzeros`` int32 [groups, out/8]
  packed along the output in AWQ's order (0, 2, 4, 6, 1, 3, 5, 7), ``scales`` [groups, out].
  W[o, i] = scales[i // group, o] * (q[i, o] - z[i // group, o]).
- ``pack-quantized`` (compressed-tensors W4A16/W8A16): ``weight_packed`` int32 [out, in * bits / 32]
  packed along the input, values offset by 2^(bits-1); ``weight_scale`` [out, groups] (or [out, 1]);
  optional ``weight_zero_point``. W[o, i] = weight_scale[o, g] * (q[o, i] - zp[o, g]).
- ``fp8`` (compressed-tensors float-quantized, or transformers' FP8): ``weight`` F8_E4M3 [out, in] and
  ``weight_scale`` (or ``weight_scale_inv``): [out, 1] per channel, [] / [1] per tensor, or
  [ceil(out/b), ceil(in/b)] per block. W = weight * scale.

- ``mlx`` (mlx-lm's ``convert -q``): ``weight`` uint32 [out, in * bits / 32] (values packed along the
  input, little-endian), ``scales`` [out, in / group_size]; in the ``affine`` mode also ``biases`` of
  the same shape, W[o, i] = scales[o, g] * q[o, i] + biases[o, g] (scaling output channel o scales both);
  in ``mxfp4``/``mxfp8`` the scales are uint8 E8M0 exponents (2^(e - 127)), shared by a group of one
  row: a power of two is exact (added to the exponent), 0 zeroes the row's codes (0 is +0 in FP4 and FP8).
- ``mxfp4`` (gpt-oss's experts, transformers' ``Mxfp4Config``): per MoE layer, ``<name>_blocks`` uint8
  [E, out, in / 32, 16] (two E2M1 codes a byte, the even input in the low nibble) and ``<name>_scales``
  uint8 [E, out, in / 32] (E8M0: 2^(s - 127)); W_e[o, i] = FP4[code] * 2^(scale - 127). transformers
  then transposes to its [E, in, out] parameter. A scale is shared by 32 inputs of one output row, so a
  ``down_proj`` column (one neuron) is scaled in its codes alone: exact for alpha 0, and for any alpha
  that takes every code of the column to another E2M1 value (``fp4_scaled_codes``).

In all of them output channel o has scales of its own (``channel_scales``), so multiplying them by
alpha scales the channel exactly, up to the rounding of the new scale in its dtype. FP8 per-tensor and
per-block scales are shared by many channels: only alpha 0 is exact there (the row's FP8 bytes zeroed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hedit.errors import HeditError
from hedit.io.safetensors_header import TensorInfo

DOWN_COLUMNS = ("mxfp4",)  # quant methods that store each down_proj value's own code: a column carries the edit
FP4_E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # codes 0-7; code 8 + k is -FP4_E2M1[k]
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble k of an AWQ word holds output column 8c + AWQ_ORDER[k]
FP8 = ("F8_E4M3", "F8_E5M2")


@dataclass(frozen=True)
class ChannelScales:
    """How to scale output channel ``o`` of a quantized projection."""

    format: str
    scale: str  # suffix of the scale tensor ("scales", "weight_scale", ...)
    axis: int  # the scale tensor's axis that runs over output channels
    shared: bool = False  # one scale for many channels (FP8 per tensor / per block): only alpha 0 is exact
    weight: str = "weight"  # the quantized weight's suffix (zeroed rows for a shared scale and alpha 0)
    also: tuple[str, ...] = ()  # more per-channel tensors scaled with the scales (MLX affine biases)
    exponent: bool = False  # the scales are E8M0 exponents: powers of two add to them, 0 zeroes the row


def detect(tensors: dict[str, TensorInfo], quant_method: str | None, where: str) -> ChannelScales | None:
    """The format of one projection's tensors; None for an unquantized one (a float ``weight``)."""
    names = set(tensors)
    if quant_method == "mlx" and "scales" in names and getattr(tensors.get("weight"), "dtype", None) == "U32":
        if "biases" in names:
            return ChannelScales("mlx", "scales", 0, also=("biases",))
        if tensors["scales"].dtype != "U8":
            raise HeditError(f"{where}: MLX scales of dtype {tensors['scales'].dtype} without biases")
        return ChannelScales("mlx-e8m0", "scales", 0, exponent=True)
    if "qweight" in names and "scales" in names:
        fmt = "awq" if quant_method == "awq" else "gptq"
        return ChannelScales(fmt, "scales", 1, weight="qweight")
    if "weight_packed" in names and "weight_scale" in names:
        return ChannelScales("pack-quantized", "weight_scale", 0, weight="weight_packed")
    w = tensors.get("weight")
    if w is not None and w.dtype in FP8:
        scale = (
            "weight_scale" if "weight_scale" in names else "weight_scale_inv" if "weight_scale_inv" in names else None
        )
        if scale is None:
            raise HeditError(f"{where}: FP8 weight without weight_scale")
        s = tensors[scale].shape
        per_channel = len(s) >= 1 and s[0] == w.shape[0] and all(d == 1 for d in s[1:])
        return ChannelScales("fp8", scale, 0, shared=not per_channel)
    if w is not None and w.dtype in ("F32", "F16", "BF16"):
        return None
    raise HeditError(
        f"{where}: quantized layout not recognised (tensors: {', '.join(sorted(names))}); hedit edits "
        "GPTQ, AWQ, compressed-tensors pack-quantized, FP8 and MLX checkpoints"
    )


# ------------------------------------------------------------------------------------------ layouts

BITS = {"gptq": (2, 3, 4, 8), "awq": (2, 3, 4, 8), "mlx": (2, 3, 4, 5, 6, 8)}
MAX_GROUP = 1 << 16


def quant_params(value: Any, where: str, fmt: str, bits_keys=("bits",), group_keys=("group_size",)) -> tuple[int, int]:
    """(bits, group size) from a quantization config ``value`` (a dict), checked before any arithmetic:
    ``bits`` one of the widths ``fmt`` stores, the group size -1 (one group) or 1 to 65536. A string, a
    bool, a float or a width of 3000 or 1e10 (whose 2 ** bits would run for minutes) is one HeditError."""
    if not isinstance(value, dict):
        raise HeditError(f"{where} must be an object, got {type(value).__name__}")
    bits = next((value[k] for k in bits_keys if k in value), 4)
    group = next((value[k] for k in group_keys if k in value), -1)
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BITS[fmt]:
        shown = repr(bits)[:40]
        raise HeditError(f"{where}: bits must be one of {', '.join(map(str, BITS[fmt]))} for {fmt}, got {shown}")
    if isinstance(group, bool) or not isinstance(group, int) or not (group == -1 or 1 <= group <= MAX_GROUP):
        raise HeditError(f"{where}: group_size must be -1 or an integer from 1 to {MAX_GROUP}, got {repr(group)[:40]}")
    return bits, group


def check_layout(
    fmt: ChannelScales, tensors: dict[str, TensorInfo], bits: int, group: int, where: str, in_dim: int | None = None
) -> None:
    """The packed weight, scales, zeros and biases of one projection agree with each other and with
    ``bits`` and ``group`` (the config's): else one HeditError naming the tensor, before anything is read
    or written; where they agree on other settings for the module's input width ``in_dim`` (as mlx-lm
    infers them), the error names those. An edit through scales that disagree with their weight would
    silently scale the wrong channels."""

    def shape(name: str) -> tuple[int, ...]:
        info = tensors.get(name)
        if info is None:
            raise HeditError(f"{where}: no {name} tensor beside the {fmt.format} weight")
        return tuple(info.shape)

    def bad(name: str, want: str) -> HeditError:
        return HeditError(
            f"{where}: {name} has shape {list(shape(name))}, but {bits}-bit values in groups of {group} "
            f"(config.json) need {want}"
        )

    per = 32 // bits if 32 % bits == 0 else None
    if fmt.format in ("gptq", "awq"):
        q, s = shape("qweight"), shape("scales")
        if len(q) != 2 or len(s) != 2:
            raise HeditError(f"{where}: qweight and scales must be 2-D, got {list(q)} and {list(s)}")
        n_in, n_out = (q[0] * per, q[1]) if fmt.format == "gptq" and per else (q[0], q[1] * (per or 0))
        groups = 1 if group == -1 else n_in // group if per else s[0]
        if per and s != (groups, n_out):
            raise bad("scales", f"[{groups}, {n_out}] beside qweight {list(q)}")
        if "qzeros" in tensors and per and shape("qzeros") != (groups, n_out // per):
            raise bad("qzeros", f"[{groups}, {n_out // per}]")
    elif fmt.format == "mlx":
        w, s = shape("weight"), shape("scales")
        if len(w) != 2 or not per:
            raise HeditError(f"{where}: an MLX weight of shape {list(w)} at {bits} bits is not a layout hedit reads")
        n_in = w[1] * per
        if group == -1 or n_in % group or s != (w[0], n_in // group):
            stored = _mlx_stored(w, s, in_dim)
            if stored is not None:  # the tensors are consistent, with other settings than the config's
                raise HeditError(
                    f"{where}: config.json's quantization says {bits}-bit values in groups of {group}, but the "
                    f"tensors hold {stored[0]}-bit values in groups of {stored[1]} (weight {list(w)}, scales "
                    f"{list(s)}); fix the config to match them"
                )
            raise bad("scales", f"[{w[0]}, {n_in // max(group, 1)}] beside weight {list(w)}")
        if shape("biases") != s:
            raise bad("biases", f"the scales' shape {list(s)}")
    elif fmt.format == "mlx-e8m0":
        w, s = shape("weight"), shape("scales")
        if len(w) != 2 or len(s) != 2 or s[0] != w[0] or s[1] * group != w[1] * per:
            raise bad("scales", f"[{w[0]}, {w[1] * (per or 0) // max(group, 1)}] beside weight {list(w)}")


def _mlx_stored(w: tuple[int, ...], s: tuple[int, ...], in_dim: int | None) -> tuple[int, int] | None:
    """(bits, group) that an MLX weight and its scales hold for a module ``in_dim`` wide (mlx-lm's own
    ``infer_quant_config`` arithmetic), or None when ``in_dim`` is unknown or they fit no layout."""
    if in_dim is None or len(s) != 2 or s[0] != w[0] or not s[1] or in_dim % s[1] or (w[1] * 32) % in_dim:
        return None
    bits, group = (w[1] * 32) // in_dim, in_dim // s[1]
    return (bits, group) if bits in (2, 4, 8) and group in (32, 64, 128) else None


# ------------------------------------------------------------------------------------------ dequantizers


def _unpack_rows(packed: np.ndarray, bits: int = 4) -> np.ndarray:
    """int32 words packed along axis 0 ([n, c] -> [n * 32/bits, c]), value k of a word at bits k*bits."""
    per = 32 // bits
    words = packed.astype(np.uint32)
    vals = (words[:, None, :] >> (np.arange(per, dtype=np.uint32)[None, :, None] * bits)) & ((1 << bits) - 1)
    return vals.reshape(-1, packed.shape[1]).astype(np.int32)


def _unpack_cols(packed: np.ndarray, bits: int = 4, order: tuple[int, ...] | None = None) -> np.ndarray:
    """int32 words packed along axis 1 ([r, n] -> [r, n * 32/bits]); ``order``: which column each slot holds."""
    per = 32 // bits
    words = packed.astype(np.uint32)
    vals = (words[:, :, None] >> (np.arange(per, dtype=np.uint32) * bits)) & ((1 << bits) - 1)  # [r, n, slot]
    if order is not None:
        out = np.empty_like(vals)
        out[:, :, list(order)] = vals
        vals = out
    return vals.reshape(packed.shape[0], -1).astype(np.int32)


def dequant_gptq(
    qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, g_idx: np.ndarray | None = None, bits: int = 4
) -> np.ndarray:
    q = _unpack_rows(qweight, bits)  # [in, out]
    z = _unpack_cols(qzeros, bits) + 1  # [groups, out]
    in_features = q.shape[0]
    if g_idx is None:
        g_idx = np.arange(in_features) // (in_features // scales.shape[0])
    return (scales.astype(np.float32)[g_idx] * (q - z[g_idx])).T  # [out, in]


def dequant_awq(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, bits: int = 4) -> np.ndarray:
    q = _unpack_cols(qweight, bits, AWQ_ORDER)  # [in, out]
    z = _unpack_cols(qzeros, bits, AWQ_ORDER)  # [groups, out]
    g = np.arange(q.shape[0]) // (q.shape[0] // scales.shape[0])
    return (scales.astype(np.float32)[g] * (q - z[g])).T


def dequant_packed(
    weight_packed: np.ndarray, weight_scale: np.ndarray, zero_point: np.ndarray | None = None, bits: int = 4
) -> np.ndarray:
    q = _unpack_cols(weight_packed, bits) - (1 << (bits - 1))  # [out, in], signed
    groups = weight_scale.shape[1]
    g = np.arange(q.shape[1]) // (q.shape[1] // groups)
    zp = 0 if zero_point is None else zero_point.astype(np.int32)[:, g]
    return weight_scale.astype(np.float32)[:, g] * (q - zp)


def dequant_fp8(weight_f32: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``weight_f32``: the FP8 weight already converted to float32."""
    s = scale.astype(np.float32)
    if s.size == 1:
        return weight_f32 * s.reshape(())
    if s.shape[0] == weight_f32.shape[0] and s.size == weight_f32.shape[0]:
        return weight_f32 * s.reshape(-1, 1)
    bo = -(-weight_f32.shape[0] // s.shape[0])
    bi = -(-weight_f32.shape[1] // s.shape[1])
    return weight_f32 * np.repeat(np.repeat(s, bo, axis=0), bi, axis=1)[: weight_f32.shape[0], : weight_f32.shape[1]]


def dequant_mlx(weight: np.ndarray, scales: np.ndarray, biases: np.ndarray | None, bits: int, group: int) -> np.ndarray:
    """MLX affine dequantization (float32): W[o, i] = scales[o, g] * q[o, i] + biases[o, g], q the ``bits``-bit
    values packed little-endian in each uint32 of a row."""
    per = 32 // bits
    w = weight.astype(np.uint32)
    q = np.stack([(w >> (bits * k)) & ((1 << bits) - 1) for k in range(per)], axis=-1).reshape(w.shape[0], -1)
    s = np.repeat(scales.astype(np.float32), group, axis=1)
    b = np.repeat(biases.astype(np.float32), group, axis=1) if biases is not None else 0.0
    return s * q.astype(np.float32) + b


def fp4_values() -> np.ndarray:
    """The 16 E2M1 values by code (float32)."""
    mags = np.array(FP4_E2M1, dtype=np.float32)
    return np.concatenate([mags, -mags])


def fp4_scaled_codes(alpha: float) -> np.ndarray:
    """int16 [16]: the code whose value is alpha times code c's, -1 where E2M1 holds no such value (a code
    of value 0 keeps its code)."""
    vals, out = fp4_values(), np.full(16, -1, dtype=np.int16)
    for c, v in enumerate(vals):
        want = float(v) * alpha
        if want == 0:
            out[c] = c if v == 0 else 0
        else:
            hit = np.flatnonzero(vals == np.float32(want))
            out[c] = hit[0] if hit.size and float(vals[hit[0]]) == want else -1
    return out


def scale_fp4_nibbles(b: np.ndarray, shift: int, alpha: float) -> tuple[np.ndarray, float | None]:
    """``b`` (uint8) with the E2M1 code at bit ``shift`` (0 or 4) of each byte mapped to the code of alpha
    times its value, the other nibble kept; and the first value E2M1 has no such code for (None: exact)."""
    codes = (b >> shift) & 0x0F
    to = fp4_scaled_codes(alpha)[codes]
    if (to < 0).any():
        return b, float(fp4_values()[codes[int(np.argmax(to < 0))]])
    return (b & np.uint8(0xF0 if shift == 0 else 0x0F)) | (to.astype(np.uint8) << shift), None


def dequant_mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """MXFP4 (float32): ``blocks`` uint8 [..., rows, groups, 16] and E8M0 ``scales`` uint8 [..., rows,
    groups] to [..., rows, groups * 32], the even input of each byte in its low nibble."""
    vals = fp4_values()
    codes = np.stack([blocks & 0x0F, blocks >> 4], axis=-1).reshape(*blocks.shape[:-1], 32)
    out = np.ldexp(vals[codes], scales.astype(np.int32)[..., None] - 127)
    return out.reshape(*blocks.shape[:-2], -1).astype(np.float32)
