"""PEFT adapters that carry an H-neuron edit: one writer per method (``lora``, ``ia3``), each an
``AdapterWriter`` whose ``build(plan, read) -> Adapter`` gets the plan and a function that reads only the
chosen rows or columns of a layer's edited projection; writing, the structure check's recomputation and
the card frame are shared here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from hedit.edit.card import card
from hedit.edit.plan import EditPlan
from hedit.edit.writers import ADAPTERS, Built, Report, Writer, write_artifact
from hedit.errors import HeditError
from hedit.io.checkpoint import Checkpoint
from hedit.io.jsonfile import expect, read_json
from hedit.io.safetensors_header import read_header, read_slices
from hedit.neurons import NeuronSet

FORMATS = ADAPTERS


@dataclass
class Adapter:
    tensors: dict[str, torch.Tensor]
    config: Any  # a peft PeftConfig
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


def canonical_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A PEFT adapter config with its set-valued fields (``target_modules``, ``feedforward_modules``, ...,
    which PEFT keeps as Python sets and saves in hash order, so in an order that follows
    ``PYTHONHASHSEED``) as sorted lists: the same adapter always gives the same file and compares equal."""
    return {
        k: sorted(v) if k in SET_FIELDS and isinstance(v, list) and all(isinstance(x, str) for x in v) else v
        for k, v in cfg.items()
    }


SET_FIELDS = ("target_modules", "feedforward_modules", "exclude_modules", "target_parameters", "modules_to_save")


def save_config(config, folder: Path) -> None:
    """PEFT's ``save_pretrained`` of ``config``, then its JSON rewritten in ``canonical_config`` order."""
    config.save_pretrained(str(folder))
    path = folder / ADAPTER_CONFIG
    path.write_text(json.dumps(canonical_config(json.loads(path.read_text())), indent=2, sort_keys=True) + "\n")


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
    if checkpoint is not None and checkpoint.experts is not None:
        _check_fit_experts(folder, kind, cfg, header.tensors, checkpoint)
    elif checkpoint is not None:
        _check_fit(folder, kind, cfg, header.tensors, checkpoint)
    return cfg


def expert_factor_shapes(arch, hidden: int, width: int, k: int) -> dict[str, tuple[tuple, tuple]]:
    """The (lora_A, lora_B) shapes PEFT gives a MoE layer's experts (``k`` = r x experts) at its two
    parameter targets, by suffix: "" the down projection, ".base_layer" gate_up (``lora.build_experts``),
    in the order PEFT reads the family's stacked weights (the registry's ``peft_order``)."""
    if arch.moe.peft_order == "storage":  # [E, I, H] and [E, H, 2I], read as [E, out, in]
        return {"": ((k, hidden), (width, k)), ".base_layer": ((k, 2 * width), (hidden, k))}
    return {"": ((k, width), (hidden, k)), ".base_layer": ((k, hidden), (2 * width, k))}


def _check_fit_experts(folder: Path, kind: str, cfg: dict[str, Any], tensors: dict, ckpt: Checkpoint) -> None:
    """``_check_fit`` for a mixture of experts' LoRA: each tensor on a dense or shared down_proj, or on an
    MoE layer's experts' down or gate_up parameter (PEFT's parameter targets: rank r per expert), with
    that site's shapes."""
    arch, shape = ckpt.arch, ckpt.experts
    hidden = arch.text_config_dict(ckpt.config).get("hidden_size")
    r, n = cfg.get("r", 0), shape.num_experts
    want: dict[str, dict[str, tuple]] = {}
    for layer, expert in shape.sites():
        if isinstance(expert, int) and expert > 0:
            continue
        path, kind_ = arch.site_module(layer, expert)
        width = shape.width(layer, expert)
        if kind_ != "experts":
            want[f"base_model.model.{path}"] = {"lora_A.weight": (r, width), "lora_B.weight": (hidden, r)}
            continue
        for module, (a, b) in expert_factor_shapes(arch, hidden, width, r * n).items():
            want[f"base_model.model.{path}{module}"] = {"lora_A.weight": a, "lora_B.weight": b}
    for name, info in tensors.items():
        module, _, suffix = name.rpartition(".lora_")
        shapes = want.get(module, {}) if kind == "LORA" else {}
        if f"lora_{suffix}" not in shapes:
            raise HeditError(
                f"{folder} was not made for this model: tensor {name} is not on a down_proj or the experts of "
                f"{ckpt.path} ({arch.model_type}, {ckpt.num_layers} layers)"
            )
        if tuple(info.shape) != shapes[f"lora_{suffix}"]:
            raise HeditError(
                f"{folder} was not made for this model: {name} has shape {list(info.shape)}, "
                f"expected {list(shapes[f'lora_{suffix}'])}"
            )


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


class AdapterWriter(Writer):
    """A PEFT adapter folder: ``adapter_model.safetensors`` and ``adapter_config.json`` over the unmodified
    source (its unquantized weights)."""

    kind = ""
    library_tags: tuple[str, ...] = ()

    def __init__(self):
        self.kind = self.name

    def check(self, plan: EditPlan) -> None:
        if plan.checkpoint is None:
            raise HeditError(f"{plan.source} is a GGUF file; hedit builds PEFT adapters from safetensors checkpoints")
        if plan.checkpoint.quant_method is not None:
            raise HeditError(
                f"{plan.checkpoint.path} is quantized ({plan.checkpoint.quant_method}); hedit builds adapters from "
                "unquantized weights: export from the unquantized model, or use `hedit edit` here (exact in its scales)"
            )

    def build(self, plan: EditPlan, read: Callable[[int, list[int]], tuple[torch.Tensor, int]]) -> Adapter:
        raise NotImplementedError

    def built(self, plan: EditPlan) -> Adapter:
        ckpt = plan.checkpoint

        def read(layer: int, index: list[int]) -> tuple[torch.Tensor, int]:
            """The chosen rows (up) or columns (down) of a layer's edited projection, read alone, and the
            length of that axis."""
            f, info = ckpt.tensors(layer, plan.target)["weight"]
            axis = 0 if plan.target == "up" else 1
            return read_slices(ckpt.path / f, info, axis, index), info.shape[axis]

        adapter = self.build(plan, read)
        adapter.config.base_model_name_or_path = plan.base_model
        return adapter

    def expected(self, plan: EditPlan) -> Built:
        import tempfile

        adapter = self.built(plan)
        with tempfile.TemporaryDirectory(prefix="hedit-adapter-") as tmp:
            save_config(adapter.config, Path(tmp))
            config = read_json(Path(tmp) / ADAPTER_CONFIG)
        return Built(adapter.tensors, config, (ADAPTER_CONFIG, ADAPTER_WEIGHTS))

    def write(self, plan: EditPlan, dst: Path, progress: bool, name: str) -> Report:
        adapter = self.built(plan)
        save_file(adapter.tensors, dst / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        save_config(adapter.config, dst)
        return Report("", "", self.name, plan.target, [], dict(adapter.info))

    def card(self, plan: EditPlan, out_name: str, ev: dict[str, Any], plots: list[str], report: Report) -> str:
        use = f"""PEFT:
```python
from transformers import {plan.arch.auto_class}
from peft import PeftModel
base = {plan.arch.auto_class}.from_pretrained("{plan.base_model}")
model = PeftModel.from_pretrained(base, "{out_name}")
```
{self.serve(plan, out_name, report)}"""
        tags = ["hedit", "h-neurons", "peft", self.name]
        return card(plan, "peft", tags, out_name, self.how(plan, report), use, ev, plots)

    def how(self, plan: EditPlan, report: Report) -> str:
        raise NotImplementedError

    def serve(self, plan: EditPlan, out_name: str, report: Report) -> str:
        """How to serve the adapter in vLLM (or why it cannot be)."""
        raise NotImplementedError


def export_adapter(
    source: str | Path,
    neurons: str | Path | NeuronSet,
    out: str | Path,
    fmt: str = "lora",
    alpha: float | None = None,
    overwrite: bool = False,
    allow_negative: bool = False,
    target: str = "auto",
    progress: bool = True,
) -> Path:
    """Write a PEFT adapter that applies the edit on top of the unmodified ``source``
    (``hedit.edit.writers.write_artifact`` with format ``fmt``, which gives the full report)."""
    if fmt not in FORMATS:
        raise HeditError(f"unknown adapter format {fmt!r}; choose one of {', '.join(FORMATS)}")
    write_artifact(source, neurons, out, fmt, alpha, overwrite, allow_negative, progress=progress, target=target)
    return Path(out)
