"""`hedit edit` into a quantized safetensors checkpoint (the ``quantized`` writer): GPTQ, AWQ,
compressed-tensors pack-quantized and FP8 per channel keep their integer weights; output channel j of
each edited ``up_proj`` gets its own scales times alpha (``hedit.io.quant`` finds them), which is exact up
to the rounding of each new scale. FP8 with one scale shared by many channels holds only alpha 0, by
zeroing the rows. The stream (kernel copy, rewritten byte ranges) is the float checkpoint's."""

from __future__ import annotations

import torch

from hedit.edit.checkpoint import FloatCheckpoint, TensorOp
from hedit.edit.plan import EditPlan
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
            elif not fmt.shared:
                f, info = group[fmt.scale]
                if info.dtype not in SCALE_DTYPES:
                    raise HeditError(f"{info.name}: scales of dtype {info.dtype} are not supported")
                ops.append(TensorOp(f, info, fmt.axis, rows, alphas, layer, fmt.format, expert=expert))
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
    qc = plan.checkpoint.config.get("quantization_config") or {}
    bits = qc.get("bits") or qc.get("w_bit") or 4
    return float(2 ** int(bits) - 1) if op.format != "fp8" else 448.0
