"""`hedit export-adapter --format mlx-lora`: an mlx-lm LoRA adapter (``adapters.safetensors`` and
``adapter_config.json``, loaded with ``mlx_lm generate --adapter-path`` or ``mlx_lm.load(...,
adapter_path=)``) over the unmodified MLX checkpoint (4- or 8-bit affine) or float checkpoint.

mlx-lm's adapter contract (``mlx_lm.tuner.utils.load_adapters``): ``adapter_config.json`` names
``fine_tune_type`` "lora", ``num_layers`` (the last N blocks get LoRA layers) and ``lora_parameters``
(``rank``, ``scale``, ``dropout``, ``keys``: module paths inside a block); every LoRA layer holds
``lora_a`` [in, rank] and ``lora_b`` [rank, out] (x @ lora_a @ lora_b, the transpose of PEFT's factors) of
exactly that one rank, and adds ``scale * (x @ lora_a @ lora_b)`` to the base layer's output. The
adapter file must hold a tensor of that shape for every name it carries.

So hedit writes one LoRA layer per block on the edited projection, rank = the most neurons in one block:
with ``down``, ``lora_a`` selects activation j and ``lora_b`` holds (alpha_j - 1) W_down[:, j]; with
``up``, ``lora_a`` holds W_up[j, :] and ``lora_b`` puts (alpha_j - 1) on output j. Blocks with fewer
neurons are padded with zero pairs, blocks with none hold zeros (which add exactly 0, where mlx-lm's own
initialisation would be random A and zero B). The weights come from the source dequantized
(``hedit.io.quant.dequant_mlx``), so on that MLX checkpoint the adapter adds what scaling the dequantized
column or row does. ``scale`` is 1; the edit is linear in (alpha - 1), so ``scale`` S in the config
applies alpha' = 1 + S (alpha - 1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from hedit.edit.card import card
from hedit.edit.plan import EditPlan
from hedit.edit.writers import Built, Report, TensorEdit, Writer
from hedit.errors import HeditError
from hedit.io.safetensors_header import read_slices

CONFIG, WEIGHTS = "adapter_config.json", "adapters.safetensors"
SCALE = 1.0
ROWS = 1024  # rows dequantized at once when reading columns of a quantized projection


def scale_to_alpha(scale: float, alpha: float) -> float:
    """The alpha an adapter written at ``alpha`` applies with ``lora_parameters.scale`` = ``scale``."""
    return 1.0 + scale * (alpha - 1.0)


def _mlx_params(plan: EditPlan, layer: int) -> tuple[int, int]:
    """(bits, group_size) of a layer's edited projection in an MLX affine checkpoint (per-module overrides
    under ``quantization``, as mlx-lm writes them)."""
    q = plan.checkpoint.config["quantization"]
    own = q.get(plan.arch.module_path(layer, plan.target))
    own = own if isinstance(own, dict) else q
    return int(own["bits"]), int(own["group_size"])


def _read(plan: EditPlan, layer: int, axis: int, index: list[int]) -> np.ndarray:
    """Rows (axis 0) or columns (axis 1) of a layer's edited projection [out, in], float32: read alone
    from a float checkpoint; from an MLX one, rows read with their scales and biases, columns gathered
    from the dequantized weight ``ROWS`` rows at a time."""
    from hedit.io.quant import dequant_mlx

    ckpt = plan.checkpoint
    group = ckpt.tensors(layer, plan.target)
    f, info = group["weight"]
    if ckpt.quant_method is None:
        return read_slices(ckpt.path / f, info, axis, index).float().numpy()
    bits, size = _mlx_params(plan, layer)
    parts = [(ckpt.path / group[k][0], group[k][1]) for k in ("weight", "scales", "biases")]
    if axis == 0:
        return dequant_mlx(*(_rows(f, t, index) for f, t in parts), bits, size)
    out = np.empty((info.shape[0], len(index)), dtype=np.float32)
    for r0 in range(0, info.shape[0], ROWS):
        rows = slice(r0, min(r0 + ROWS, info.shape[0]))
        out[rows] = dequant_mlx(*(_rows(f, t, rows) for f, t in parts), bits, size)[:, index]
    return out


_NP = {"U32": np.uint32, "F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def _rows(path: Path, info, rows) -> np.ndarray:
    """Rows of a 2-D tensor of an MLX checkpoint (uint32 words, float scales and biases) as numpy, read
    through a memory map; bfloat16 widened to float32."""
    if info.dtype not in _NP:
        raise HeditError(f"tensor {info.name} has dtype {info.dtype}, not one of an MLX affine checkpoint")
    dtype = np.dtype(_NP[info.dtype])
    raw = np.memmap(path, dtype=dtype, mode="r", offset=info.start, shape=tuple(info.shape))
    picked = np.array(raw[rows])
    del raw
    if info.dtype == "BF16":
        return (picked.astype(np.uint32) << 16).view(np.float32)
    return picked


class MlxLora(Writer):
    name, kind = "mlx-lora", "adapter"
    down_exact = True  # the factors sit beside the quantized weights, which stay as they are

    def check(self, plan: EditPlan) -> None:
        if plan.checkpoint is None:
            raise HeditError(
                f"{plan.source} is a GGUF file; an mlx-lora adapter is built from an MLX or float checkpoint"
            )
        if plan.arch.moe is not None:
            raise HeditError("the mlx-lora format does not take mixtures of experts yet")
        q = plan.checkpoint.quant_method
        mode = plan.checkpoint.config.get("quantization", {}).get("mode", "affine") if q == "mlx" else None
        if q not in (None, "mlx") or mode not in (None, "affine"):
            raise HeditError(
                f"an mlx-lora adapter is built from an MLX affine or a float checkpoint; {plan.checkpoint.path} is "
                f"{'MLX ' + mode if q == 'mlx' else q}: use `hedit edit` on it"
            )

    def build(self, plan: EditPlan) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[TensorEdit]]:
        """The adapter's tensors, its config and one record per edited block."""
        ckpt, arch = plan.checkpoint, plan.arch
        if not any(a != 1.0 for pairs in plan.layers.values() for _, a in pairs):
            raise HeditError("every chosen neuron has alpha 1: the adapter would change nothing")
        rank = max(len(v) for v in plan.layers.values())
        inter = plan.intermediate_size
        f, info = ckpt.tensors(0, plan.target)["weight"]
        n_out = info.shape[0]
        n_in = info.shape[1] * 32 // _mlx_params(plan, 0)[0] if ckpt.quant_method == "mlx" else info.shape[1]
        tensors, records = {}, []
        for layer in range(ckpt.num_layers):
            a, b = np.zeros((n_in, rank), np.float32), np.zeros((rank, n_out), np.float32)
            pairs = plan.layers.get(layer, [])
            if pairs:
                delta = np.array([x - 1.0 for _, x in pairs], np.float32)
                k = np.arange(len(pairs))
                if plan.target == "down":
                    cols = [j for j, _ in pairs]
                    a[cols, k] = 1.0
                    b[k] = (_read(plan, layer, 1, cols) * delta[None, :]).T
                else:
                    rows = [arch.up_row(j, inter) for j, _ in pairs]
                    a[:, k] = _read(plan, layer, 0, rows).T
                    b[k, rows] = delta
            path = arch.module_path(layer, plan.target)
            if pairs:
                records.append(TensorEdit(path, "F32", len(pairs), a.nbytes + b.nbytes, 0.0))
            tensors[f"{path}.lora_a"], tensors[f"{path}.lora_b"] = torch.from_numpy(a), torch.from_numpy(b)
        config = {
            "fine_tune_type": "lora",
            "num_layers": ckpt.num_layers,
            "lora_parameters": {"rank": rank, "scale": SCALE, "dropout": 0.0, "keys": [arch.module(plan.target)]},
        }
        return tensors, config, records

    def expected(self, plan: EditPlan) -> Built:
        tensors, config, _ = self.build(plan)
        return Built(tensors, config, (CONFIG, WEIGHTS))

    def write(self, plan: EditPlan, dst: Path, progress: bool, name: str) -> Report:
        tensors, config, records = self.build(plan)
        save_file(tensors, dst / WEIGHTS, metadata={"format": "mlx"})
        (dst / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        alphas = sorted({a for pairs in plan.layers.values() for _, a in pairs})
        how = "alpha' = 1 + S * (alpha - 1) for lora_parameters.scale S"
        if len(alphas) == 1:
            how = f"alpha' = 1 + S * ({alphas[0]:g} - 1) for lora_parameters.scale S: " + ", ".join(
                f"S={s:g} -> {scale_to_alpha(s, alphas[0]):g}" for s in (1, 0.5, -1, -2)
            )
        info = {"format": self.name, "target": plan.target, "lora_rank": config["lora_parameters"]["rank"]}
        return Report("", "", self.name, plan.target, records, info | {"scale_to_alpha": how})

    def card(self, plan: EditPlan, out_name: str, ev: dict[str, Any], plots: list[str], report: Report) -> str:
        use = f"""mlx-lm (`scale` in adapter_config.json chooses alpha: {report.info["scale_to_alpha"]}):
```bash
mlx_lm generate --model {plan.base_model} --adapter-path {out_name} --prompt "..."
```
```python
from mlx_lm import load
model, tokenizer = load("{plan.base_model}", adapter_path="{out_name}")
```
"""
        how = (
            f"An mlx-lm LoRA (rank {report.info['lora_rank']} on every block's `{plan.target}_proj`, float32 "
            "factors from the dequantized weights, zero pairs where a block has fewer neurons, scale 1) over "
            "the unmodified checkpoint."
        )
        return card(plan, "mlx", ["hedit", "h-neurons", "mlx", "lora"], out_name, how, use, ev, plots)
