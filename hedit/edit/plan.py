"""An edit plan, the one every writer takes: a source model (checkpoint folder or GGUF file), a neuron set
checked against it, the alpha of every chosen neuron, and which weight carries the edit (``down``:
down_proj columns; ``up``: up_proj rows, exact for quantized formats whose scales run along rows; the rule
is ``resolve_target``, stated once)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hedit.errors import HeditError
from hedit.io.checkpoint import Checkpoint, open_checkpoint
from hedit.io.files import hub_snapshot
from hedit.io.gguf_header import GgufHeader
from hedit.io.quant import DOWN_COLUMNS
from hedit.neurons import NeuronSet
from hedit.registry import Architecture

TARGETS = ("auto", "down", "up")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class EditPlan:
    source: Path  # the checkpoint folder or the GGUF file
    arch: Architecture
    num_layers: int
    intermediate_size: int
    neurons: NeuronSet
    layers: dict[int, list[tuple[int, float]]]  # layer -> sorted (neuron index, alpha)
    cli_alpha: float | None
    weight_files: list[Path]  # whose SHA-256 the output's hedit.json records
    known_names: list[str] = field(default_factory=list)  # what the source says it is (config, GGUF metadata)
    target: str = "down"
    checkpoint: Checkpoint | None = None  # safetensors sources
    gguf: GgufHeader | None = None  # GGUF sources

    @property
    def model_type(self) -> str:
        return self.arch.model_type

    @property
    def num_neurons(self) -> int:
        return sum(len(v) for v in self.layers.values())

    def alphas(self) -> list[float]:
        return sorted({a for v in self.layers.values() for _, a in v})

    @property
    def base_model(self) -> str:
        """A Hub id for model cards when one is known, else the source's folder or file name."""
        return self.hub_base or self.source.resolve().name

    @property
    def hub_base(self) -> str | None:
        """The source's Hub id (a model card's ``base_model``): a Hub id the neurons file or the source
        names, a built-in model's weights' id, or a Hub cache snapshot's repo; None for a local folder."""
        from hedit.model.builtin import builtin_hub_id

        for cand in [self.neurons.model.name_or_path, *self.known_names]:
            if isinstance(cand, str) and builtin_hub_id(cand):
                return builtin_hub_id(cand)
            if isinstance(cand, str) and _HUB_ID.match(cand) and not Path(cand).exists():
                return cand
        snap = hub_snapshot(self.source)  # a Hub cache snapshot: .../models--owner--name/snapshots/<sha>
        if snap and snap[0].name.startswith("models--"):
            return snap[0].name[len("models--") :].replace("--", "/", 1)
        return None


def load_neurons(neurons: str | Path | NeuronSet) -> NeuronSet:
    ns = neurons if isinstance(neurons, NeuronSet) else NeuronSet.load(neurons)
    if not ns.neurons:
        raise HeditError("the neurons file lists no neurons; nothing to edit")
    return ns


def resolve_target(
    target: str, arch: Architecture, quantized: bool, down_exact: bool | None = None, rows: bool = False
) -> str:
    """``auto``: ``up`` for quantized sources (exact through their per-channel or per-block scales) of a
    gated MLP, and for float ones when the writer prefers ``rows`` (a safetensors checkpoint: a row of
    up_proj is contiguous bytes, a column of down_proj one value in every row, so ``up`` reads and writes
    a few kilobytes where ``down`` rewrites whole tensors; ``benchmarks/bench_edit.py``); ``down``
    otherwise. ``down_exact``: can this format scale a quantized down_proj column (GGUF re-rounds the
    chosen values; a safetensors checkpoint's scales are shared along its rows)."""
    down_exact = not quantized if down_exact is None else down_exact
    if target not in TARGETS:
        raise HeditError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    gated = arch.gated if arch.moe is None else arch.moe.up_exact is True
    if target == "auto":
        target = "up" if (quantized or rows) and (gated or not down_exact) else "down"
    if target == "up" and arch.moe is not None and not gated:
        raise HeditError(f"--target up: {arch.moe.up_exact}; use --target down")
    if target == "up" and not gated:
        raise HeditError(f"{arch.model_type} has no gated MLP: --target up needs one (use --target down)")
    if target == "down" and not down_exact:
        raise HeditError(
            "a quantized checkpoint shares its scales along the rows of down_proj, so a down_proj "
            "column cannot be scaled exactly; --target up scales the neurons' up_proj channels "
            "exactly"
        )
    return target


def make_plan(
    source: str | Path,
    neurons: str | Path | NeuronSet,
    alpha: float | None = None,
    allow_negative: bool = False,
    target: str = "auto",
    rows: bool = False,
    down_exact: bool | None = None,
) -> EditPlan:
    """The plan for a source: a GGUF file, or a safetensors checkpoint (a built-in name, a folder or a
    Hub id). ``rows``: ``auto`` prefers up_proj rows in float checkpoints; ``down_exact``: the output can
    take a quantized source's down_proj columns exactly (an adapter over it) (``resolve_target``)."""
    if str(source).endswith(".gguf"):
        return _gguf_plan(Path(source), neurons, alpha, allow_negative, target)
    from hedit.model.builtin import builtin_hub_id, resolve_model

    ckpt = open_checkpoint(resolve_model(source, must_exist=False))
    ns = load_neurons(neurons)
    ns.check_model(ckpt.model_type, ckpt.num_layers, ckpt.intermediate_size, ckpt.experts)
    names = [n for n in (builtin_hub_id(str(source)), ckpt.config.get("_name_or_path")) if n]
    return EditPlan(
        ckpt.path,
        ckpt.arch,
        ckpt.num_layers,
        ckpt.intermediate_size,
        ns,
        ns.plan(alpha, allow_negative),
        alpha,
        [ckpt.path / f for f in ckpt.weight_files],
        names,
        resolve_target(target, ckpt.arch, ckpt.quant_method is not None, _down_exact(ckpt, down_exact), rows=rows),
        ckpt,
    )


FLOAT_TYPES = ("F32", "F16", "BF16")


def _down_exact(ckpt, down_exact: bool | None) -> bool | None:
    """The writer's say, else True for a format whose down_proj columns carry the edit in their own codes
    (MXFP4: ``hedit.io.quant.DOWN_COLUMNS``), else the default of ``resolve_target``."""
    return True if down_exact is None and ckpt.quant_method in DOWN_COLUMNS else down_exact


def _gguf_plan(source: Path, neurons, alpha, allow_negative: bool, target: str) -> EditPlan:
    from hedit.io.gguf_header import gguf_experts, gguf_shape, known_names, read_gguf_header

    header = read_gguf_header(source)
    arch, layers, inter = gguf_shape(header)
    experts = gguf_experts(header, arch, layers)
    ns = load_neurons(neurons)
    ns.check_model(arch.model_type, layers, inter, experts)
    tensors = header.tensors
    if experts is not None:  # up rows through their scales unless down is asked for (float: exact; blocks:
        target = resolve_target(target, arch, True, down_exact=True)  # re-rounded) or up is no neuron (gpt-oss)
    for site in ns.by_layer():
        layer, expert = (site, None) if isinstance(site, int) else site
        for which in ("down", "up") if arch.gated else ("down",):
            name = arch.gguf_tensor(layer, which, expert)
            if name not in tensors and (which == "down" or target == "up"):
                raise HeditError(f"{source} has no tensor {name}")
    if experts is None:
        down_types = {tensors[arch.gguf_tensor(layer, "down")].type_name for layer in ns.by_layer()}
        target = resolve_target(target, arch, not down_types <= set(FLOAT_TYPES), down_exact=True)
    return EditPlan(
        source,
        arch,
        layers,
        inter,
        ns,
        ns.plan(alpha, allow_negative),
        alpha,
        [source],
        known_names(header),
        target=target,
        gguf=header,
    )
