"""PEFT adapters that carry an H-neuron edit: one module per method, each with the same ``build``.

``build(plan, read) -> Adapter`` gets the plan and a function that reads a layer's down_proj weight.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from hedit.edit.card import adapter_card
from hedit.edit.neurons import NeuronSet
from hedit.edit.output import artifact, neurons_path
from hedit.edit.plan import EditPlan, make_plan
from hedit.errors import HeditError
from hedit.io.checkpoint import Checkpoint
from hedit.io.jsonfile import expect, read_json
from hedit.io.safetensors_header import read_header, read_tensor

FORMATS = ("lora", "ia3")


@dataclass
class Adapter:
    tensors: dict[str, torch.Tensor]
    config: Any  # a peft PeftConfig
    card: dict[str, Any] = field(default_factory=dict)  # extra arguments for the model card
    info: dict[str, Any] = field(default_factory=dict)  # extra provenance


def peft_key(plan: EditPlan, layer: int, suffix: str) -> str:
    """The state-dict key PEFT saves for a tensor on layer ``layer``'s edited projection."""
    return f"base_model.model.{plan.arch.module_path(layer, plan.target)}.{suffix}"


def target_modules(plan: EditPlan) -> list[str]:
    return [plan.arch.module_path(layer, plan.target) for layer in plan.layers]


def edited_indices(plan: EditPlan, pairs: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    """The weight indices the edit scales (down: columns j; up: rows j, after the gate rows when fused)."""
    idx = [plan.arch.up_row(j, plan.intermediate_size) if plan.target == "up" else j for j, _ in pairs]
    return idx, [a for _, a in pairs]


ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_SUFFIX = {"LORA": ("lora_A.weight", "lora_B.weight"), "IA3": ("ia3_l",)}


def read_adapter(folder: str | Path, checkpoint: Checkpoint | None = None) -> dict[str, Any]:
    """The adapter config of a PEFT adapter folder hedit can load, checked without loading it: a LoRA or
    IA3 config, and weights whose names and shapes fit ``checkpoint`` (when given) layer by layer."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HeditError(f"adapter not found: {folder}")
    if not (folder / ADAPTER_CONFIG).is_file():
        hint = "; it is a checkpoint: pass it with --edited" if (folder / "config.json").is_file() else ""
        raise HeditError(f"{folder} is not a PEFT adapter (no {ADAPTER_CONFIG}){hint}")
    cfg = read_json(folder / ADAPTER_CONFIG)
    where = str(folder / ADAPTER_CONFIG)
    expect(cfg, dict, where)
    kind = cfg.get("peft_type")
    if kind not in _SUFFIX:
        raise HeditError(f"{where}: peft_type {kind!r} is not one hedit writes (LORA, IA3)")
    if kind == "LORA":
        r, lora_alpha = cfg.get("r"), cfg.get("lora_alpha")
        if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
            raise HeditError(f"{where}: 'r' must be a positive integer, got {r!r}")
        if not isinstance(lora_alpha, (int, float)) or isinstance(lora_alpha, bool) or not lora_alpha > 0:
            raise HeditError(f"{where}: 'lora_alpha' must be a positive number, got {lora_alpha!r}")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise HeditError(f"{folder} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}")
    header = read_header(folder / ADAPTER_WEIGHTS)
    if not header.tensors:
        raise HeditError(f"{folder / ADAPTER_WEIGHTS} holds no tensors")
    if checkpoint is not None:
        _check_fit(folder, kind, cfg, header.tensors, checkpoint)
    return cfg


def _check_fit(folder: Path, kind: str, cfg: dict[str, Any], tensors: dict, ckpt: Checkpoint) -> None:
    arch = ckpt.arch
    made = _made_from(folder)
    if made is not None and made != arch.model_type:
        raise HeditError(f"{folder} was made from a {made} model, not {arch.model_type} like {ckpt.path}")
    down = ckpt.tensors(0, "down")
    hidden = down["weight"][1].shape[0] if "weight" in down else None
    inter, r = ckpt.intermediate_size, cfg.get("r", 0)
    rows = 2 * inter if arch.up_fused else inter
    paths = {
        f"base_model.model.{arch.module_path(layer, w)}": w
        for layer in range(ckpt.num_layers)
        for w in (("down", "up") if arch.gated else ("down",))
    }
    for name, info in tensors.items():
        module, _, suffix = name.rpartition(".lora_") if kind == "LORA" else name.rpartition(".")
        suffix = f"lora_{suffix}" if kind == "LORA" else suffix
        if module not in paths or suffix not in _SUFFIX[kind]:
            raise HeditError(
                f"{folder} was not made for this model: tensor {name} is not on a projection of "
                f"{ckpt.path} ({arch.model_type}, {ckpt.num_layers} layers)"
            )
        if paths[module] == "down":
            want = {"lora_A.weight": (r, inter), "lora_B.weight": (hidden, r), "ia3_l": (1, inter)}[suffix]
        else:
            want = {"lora_A.weight": (r, hidden), "lora_B.weight": (rows, r), "ia3_l": (rows, 1)}[suffix]
        want = tuple(w if w is not None else got for w, got in zip(want, info.shape))
        if tuple(info.shape) != want:
            raise HeditError(
                f"{folder} was not made for this model: {name} has shape {list(info.shape)}, expected {list(want)}"
            )


def _made_from(folder: Path) -> str | None:
    """The source model_type in an adapter's hedit.json, when it has a readable one."""
    try:
        info = read_json(folder / "hedit.json")
    except HeditError:
        return None
    src = info.get("source") if isinstance(info, dict) else None
    made = src.get("model_type") if isinstance(src, dict) else None
    return made if isinstance(made, str) else None


def _builder(fmt: str) -> Callable[..., Adapter]:
    if fmt == "lora":
        from hedit.edit.adapters.lora import build
    elif fmt == "ia3":
        from hedit.edit.adapters.ia3 import build
    else:
        raise HeditError(f"unknown adapter format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return build


def export_adapter(
    source: str | Path,
    neurons: str | Path | NeuronSet,
    out: str | Path,
    fmt: str = "lora",
    alpha: float | None = None,
    overwrite: bool = False,
    allow_negative: bool = False,
    target: str = "auto",
) -> Path:
    """Write a PEFT adapter that applies the edit on top of the unmodified ``source``."""
    build = _builder(fmt)
    plan = make_plan(source, neurons, alpha, allow_negative, target)
    ckpt = plan.checkpoint
    if ckpt.quant_method is not None:
        raise HeditError(
            f"{ckpt.path} is quantized ({ckpt.quant_method}); hedit builds adapters from unquantized "
            "weights: export from the unquantized model, or use `hedit edit --target up` here"
        )

    def read(layer: int) -> torch.Tensor:
        f, info = ckpt.tensors(layer, plan.target)["weight"]
        fd = os.open(ckpt.path / f, os.O_RDONLY)
        try:
            return read_tensor(fd, info)
        finally:
            os.close(fd)

    adapter = build(plan, read)
    adapter.config.base_model_name_or_path = plan.base_model
    with artifact(out, plan, fmt, overwrite, neurons_path(neurons)) as w:
        save_file(adapter.tensors, w.path / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        adapter.config.save_pretrained(w.path)
        w.info = adapter.info
        w.card = lambda plan, name, ev, plots: adapter_card(plan, name, fmt, ev=ev, plots=plots, **adapter.card)
    return Path(out)
