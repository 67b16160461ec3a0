"""`hedit edit` into a quantized safetensors checkpoint (the ``quantized`` writer): GPTQ, AWQ,
compressed-tensors pack-quantized, FP8 per channel and MLX (affine: scales and biases; mxfp4/mxfp8: E8M0
exponents, powers of two and 0 only) keep their integer weights; output channel j of
each edited ``up_proj`` gets its own scales times alpha (``hedit.io.quant`` finds them), which is exact up
to the rounding of each new scale. FP8 with one scale shared by many channels holds only alpha 0, by
zeroing the rows. gpt-oss's MXFP4 experts (no exact up row: its SwiGLU clamps up and adds 1) carry the
edit in the codes of the chosen ``down_proj`` columns, each expert's bytes rewritten apart: exact for
alpha 0 and for any alpha under which every code of the column has an E2M1 value to go to; others are
refused with the value that has none. The stream (kernel copy, rewritten byte ranges) is the float
checkpoint's."""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import torch

from hedit.edit.checkpoint import FloatCheckpoint, TensorOp
from hedit.edit.plan import EditPlan
from hedit.edit.writers import Patch
from hedit.errors import HeditError
from hedit.io.quant import detect, fp4_values, scale_fp4_nibbles
from hedit.neurons import site_name, split_site

SCALE_DTYPES = ("F32", "F16", "BF16")


class QuantizedCheckpoint(FloatCheckpoint):
    name, kind = "quantized", "edit"
    quantized = True
    experts = True  # a mixture's experts one tensor per expert (as quantizers write them), by their own scales

    def check(self, plan: EditPlan) -> None:
        super().check(plan)
        if plan.checkpoint.quant_method is None:
            raise HeditError(f"{plan.source} is not quantized; it is edited with the checkpoint writer")

    def ops(self, plan: EditPlan) -> list[TensorOp]:
        if plan.target == "down":  # only a format of hedit.io.quant.DOWN_COLUMNS gets here (resolve_target)
            return _mxfp4_down_ops(plan)
        ckpt, arch, ops = plan.checkpoint, plan.arch, []
        for site, pairs in plan.layers.items():
            layer, expert = split_site(site)
            alphas = [a for _, a in pairs]
            fused = arch.up_fused and expert is None
            width = plan.intermediate_size if ckpt.experts is None else ckpt.experts.width(layer, expert)
            rows = [arch.up_row(j, width) if fused else j for j, _ in pairs]
            group = ckpt.site_tensors(site, "up")
            fmt = detect({k: v[1] for k, v in group.items()}, ckpt.quant_method, f"{site_name(site)} up projection")
            if fmt is None:  # this projection was left unquantized
                f, info = group["weight"]
                ops.append(TensorOp(f, info, 0, rows, alphas, layer, expert=expert))
            elif fmt.exponent:
                ops += _exponent_ops(group, fmt, rows, alphas, layer, expert)
            elif not fmt.shared:
                f, info = group[fmt.scale]
                if info.dtype not in SCALE_DTYPES:
                    raise HeditError(f"{info.name}: scales of dtype {info.dtype} are not supported")
                ops.append(TensorOp(f, info, fmt.axis, rows, alphas, layer, fmt.format, expert=expert))
                for extra in fmt.also:  # MLX affine: the channel's biases scale with its scales
                    f, info = group[extra]
                    ops.append(TensorOp(f, info, fmt.axis, rows, alphas, layer, f"{fmt.format}-{extra}", expert=expert))
            else:
                if any(a != 0 for a in alphas):
                    raise HeditError(
                        f"{group[fmt.scale][1].name} is one scale shared by many output channels (FP8 per "
                        "tensor or per block): only alpha 0 can be applied exactly there (the rows are "
                        "zeroed); quantize per channel, or edit the unquantized model"
                    )
                f, info = group[fmt.weight]
                ops.append(TensorOp(f, info, 0, rows, alphas, layer, fmt.format, zero=True, expert=expert))
        return ops

    def _patches(self, plan: EditPlan, ops: list[TensorOp]):
        if not any(op.format == MXFP4 for op in ops):
            yield from super()._patches(plan, ops)
            return
        for op in ops:  # every op of a --target down plan is an expert's MXFP4 codes
            yield _mxfp4_patch(plan, op)

    def _row_patches(self, plan: EditPlan, op: TensorOp, path):
        if op.format != EXPONENT:
            yield from super()._row_patches(plan, op, path)
            return
        order = sorted(range(len(op.index)), key=lambda i: op.index[i])
        index, alphas = [op.index[i] for i in order], [op.alphas[i] for i in order]
        import numpy as np

        rows_, cols = op.info.shape
        mm = np.memmap(path, dtype=np.uint8, mode="r", offset=op.info.start, shape=(rows_, cols))
        raw = torch.from_numpy(np.array(mm[index])).to(torch.int32)  # uint8 E8M0 exponents, no torch dtype
        del mm
        shift = torch.tensor([round(math.log2(a)) for a in alphas], dtype=torch.int32).unsqueeze(1)
        new = raw + shift
        if bool(((new < 0) | (new > 254)).any()):  # 255 is E8M0's NaN
            raise HeditError(f"{op.info.name}: an alpha of {alphas} takes an E8M0 scale out of its range")
        new = new.to(torch.uint8)
        op.changed_bytes = int((raw.to(torch.uint8) != new).sum())
        row = op.info.nbytes // op.info.shape[0]
        for i, r in enumerate(index):
            yield Patch(op.file, op.info.start + r * row, new[i].numpy().tobytes())

    def error(self, plan: EditPlan, op: TensorOp, old: torch.Tensor, new: torch.Tensor) -> float:
        """For a channel's scales, a bound on the dequantized weights' error: |new scale - alpha scale|
        times the format's largest |q - z|."""
        err = super().error(plan, op, old, new)
        return err * _integer_range(plan, op) if op.format != "float" and err else err

    def how(self, plan: EditPlan) -> str:
        where = (
            "the chosen down_proj columns' own FP4 codes"
            if plan.target == "down"
            else "the chosen channels' own scales"
        )
        return (
            f"The checkpoint stays {plan.checkpoint.quant_method}-quantized: the edit is in {where}, and every "
            "other tensor is byte-identical to the source."
        )


def _integer_range(plan: EditPlan, op: TensorOp) -> float:
    """The largest |q - zero point| a quantized value of ``op``'s projection can take."""
    if op.format == "mlx-biases":  # a bias adds once to every value of its group
        return 1.0
    qc = plan.checkpoint.config.get("quantization_config") or {}
    bits = qc.get("bits") or qc.get("w_bit") or 4
    return float(2 ** int(bits) - 1) if op.format != "fp8" else 448.0


EXPONENT = "e8m0"


def _exponent_ops(group, fmt, rows: list[int], alphas: list[float], layer: int, expert) -> list[TensorOp]:
    """MLX mxfp4/mxfp8 channels: a power-of-two alpha adds to the row's E8M0 exponents; alpha 0 zeroes the
    row's codes (0 is +0 there); any other alpha cannot be applied exactly."""
    bad = [a for a in alphas if a != 0 and not (a > 0 and math.log2(a).is_integer())]
    if bad:
        raise HeditError(
            f"{group[fmt.scale][1].name}: MLX mxfp4/mxfp8 scales are powers of two (E8M0), so only alpha 0 or a "
            f"power of two (0.5, 2, ...) is exact there, got {bad[0]:g}"
        )
    ops = []
    zero = [(r, a) for r, a in zip(rows, alphas) if a == 0]
    scaled = [(r, a) for r, a in zip(rows, alphas) if a not in (0, 1)]
    if zero:
        f, info = group[fmt.weight]
        ops.append(
            TensorOp(f, info, 0, [r for r, _ in zero], [0.0] * len(zero), layer, fmt.format, True, expert=expert)
        )
    if scaled:
        f, info = group[fmt.scale]
        ops.append(TensorOp(f, info, 0, [r for r, _ in scaled], [a for _, a in scaled], layer, EXPONENT, expert=expert))
    return ops


MXFP4 = "mxfp4"


def _mxfp4_down_ops(plan: EditPlan) -> list[TensorOp]:
    """One op per edited expert: its slab [out, in / 32, 16] of the layer's ``down_proj_blocks`` (``info``
    narrowed to those bytes), neuron j its column's nibbles (``hedit.io.quant``, mxfp4)."""
    ckpt, moe, ops = plan.checkpoint, plan.arch.moe, []
    for site, pairs in plan.layers.items():
        layer, expert = split_site(site)
        if ckpt.experts is None or not isinstance(expert, int):
            raise HeditError(f"{site_name(site)}: {ckpt.quant_method} holds routed experts only")
        names = [f"{n}_blocks" for n in moe.stacked["down"]]
        f, info = ckpt.inside_tensor(layer, names, f"MXFP4 down projection ({' or '.join(names)})")
        _, sinfo = ckpt.inside_tensor(layer, [f"{n}_scales" for n in moe.stacked["down"]], "MXFP4 scales")
        e, width = ckpt.experts.num_experts, ckpt.experts.width(layer, expert)
        shape = info.shape
        if len(shape) != 4 or info.dtype != "U8" or shape[0] != e or shape[2] * 32 != width or shape[3] != 16:
            raise HeditError(
                f"{info.name} has shape {list(shape)} ({info.dtype}), expected U8 [{e}, hidden, {width // 32}, 16] "
                "(MXFP4 blocks of the experts' down projection, config.json)"
            )
        if sinfo.dtype != "U8" or tuple(sinfo.shape) != tuple(shape[:3]):
            got = f"{list(sinfo.shape)} ({sinfo.dtype})"
            raise HeditError(f"{sinfo.name} has shape {got}, expected U8 {list(shape[:3])} (the blocks' scales)")
        slab = info.nbytes // e
        start = info.start + expert * slab
        part = dataclasses.replace(info, shape=tuple(shape[1:]), start=start, end=start + slab)
        per = slab // 16  # one E8M0 scale per 16-byte block
        scales = dataclasses.replace(sinfo, start=sinfo.start + expert * per, end=sinfo.start + (expert + 1) * per)
        idx, alphas = [j for j, _ in pairs], [a for _, a in pairs]
        ops.append(TensorOp(f, part, 1, idx, alphas, layer, MXFP4, expert=expert, scales=scales))
    return ops


def _mxfp4_patch(plan: EditPlan, op: TensorOp) -> Patch:
    """The expert's slab with each chosen column's codes mapped to alpha times their value; refused in one
    line when a code has no E2M1 value to go to (the column shares its scales with 31 other neurons)."""
    rows, groups, _ = op.info.shape
    path = plan.checkpoint.path / op.file
    fd = os.open(path, os.O_RDONLY)
    try:
        old = np.frombuffer(os.pread(fd, op.info.nbytes, op.info.start), dtype=np.uint8).reshape(rows, groups, 16)
        scales = np.frombuffer(os.pread(fd, op.scales.nbytes, op.scales.start), dtype=np.uint8).reshape(rows, groups)
    finally:
        os.close(fd)
    new, vals, err = old.copy(), fp4_values(), 0.0
    for j, a in zip(op.index, op.alphas):
        g, b = j // 32, (j % 32) // 2
        new[:, g, b], bad = scale_fp4_nibbles(new[:, g, b], 4 * (j % 2), a)
        if bad is not None:
            raise HeditError(
                f"{op.info.name}: expert {op.expert} neuron {j}: alpha {a:g} takes an FP4 value {bad:g} to "
                f"{bad * a:g}, which E2M1 cannot hold, and the column shares its scales with 31 other neurons; "
                "alpha 0 is exact for every neuron (or edit a dequantized copy)"
            )
        lo, hi = _nibble(old[:, g, b], j % 2), _nibble(new[:, g, b], j % 2)
        diff = np.ldexp(np.abs(vals[hi] - np.float32(a) * vals[lo]), scales[:, g].astype(np.int32) - 127)
        err = max(err, float(diff.max()))
    op.max_abs_error = err  # against alpha times the dequantized column (the scales stay as they are)
    op.changed_bytes = int((old != new).sum())
    return Patch(op.file, op.info.start, new.tobytes())


def _nibble(b: np.ndarray, high: int) -> np.ndarray:
    return (b >> (4 * high)) & 0x0F
