"""`hedit edit` into a quantized safetensors checkpoint (the ``quantized`` writer): GPTQ, AWQ,
compressed-tensors pack-quantized, FP8 per channel and MLX (affine: scales and biases; mxfp4/mxfp8: E8M0
exponents, powers of two and 0 only) keep their integer weights; output channel j of
each edited ``up_proj`` gets its own scales times alpha (``hedit.io.quant`` finds them), which is exact up
to the rounding of each new scale. FP8 with one scale shared by many channels holds only alpha 0, by
zeroing the rows. The stream (kernel copy, rewritten byte ranges) is the float checkpoint's."""

from __future__ import annotations

import math

import torch

from hedit.edit.checkpoint import FloatCheckpoint, TensorOp
from hedit.edit.plan import EditPlan
from hedit.edit.writers import Patch
from hedit.errors import HeditError
from hedit.io.quant import detect
from hedit.neurons import site_name, split_site

SCALE_DTYPES = ("F32", "F16", "BF16")


class QuantizedCheckpoint(FloatCheckpoint):
    name, kind = "quantized", "edit"
    experts = True  # a mixture's experts one tensor per expert (as quantizers write them), by their own scales

    def check(self, plan: EditPlan) -> None:
        super().check(plan)
        if plan.checkpoint.quant_method is None:
            raise HeditError(f"{plan.source} is not quantized; it is edited with the checkpoint writer")

    def ops(self, plan: EditPlan) -> list[TensorOp]:
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
        return (
            f"The checkpoint stays {plan.checkpoint.quant_method}-quantized: the edit is in the chosen channels' "
            "own scales, and every other tensor is byte-identical to the source."
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
