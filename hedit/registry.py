"""Architecture registry: where decoder layers and MLP down-projections live, as data.

Each supported ``model_type`` has a JSON file in ``hedit/architectures/``. Nothing here inspects a
model object for attributes: the module path, checkpoint tensor names and config keys all come
from that data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from hedit.errors import HeditError

WHICH = ("down", "up", "gate")


@dataclass(frozen=True)
class Architecture:
    model_type: str
    layers_module: str  # dotted path of the decoder-layer ModuleList in the transformers model
    tensor_prefix: str  # regex of a decoder layer's checkpoint tensor names, with a named group `layer`
    down_proj: str  # dotted path of the down-projection inside one decoder layer
    gate_proj: str | None  # the gate projection (fused with up in phi3: the gate rows come first)
    up_proj: str | None  # the up-projection (None: the MLP is not gated, so no exact up-row edit)
    up_fused: bool  # gate and up in one tensor, gate rows first (phi3's gate_up_proj): up row j is inter + j
    text_config: str | None  # key of the language-model sub-config (multimodal models), else None
    gguf_down_proj: str  # GGUF tensor name templates
    gguf_up_proj: str
    gguf_arch: str | None = None  # GGUF general.architecture that loads as this model_type
    note: str = ""

    @property
    def gated(self) -> bool:
        return self.up_proj is not None

    def module(self, which: str = "down") -> str:
        """The module inside one decoder layer: ``down``, ``up`` or ``gate``."""
        if which in ("up", "gate"):
            module = self.up_proj if which == "up" else self.gate_proj
            if module is None:
                raise HeditError(f"{self.model_type} has no gated MLP: its neurons cannot be edited through up_proj")
            return module
        return self.down_proj

    def layer_of_tensor(self, name: str, which: str = "down", suffix: str = "weight") -> int | None:
        """Decoder-layer index if ``name`` is that layer's ``which`` projection tensor ``suffix``, else None."""
        m = _compiled(self.tensor_prefix + re.escape(f"{self.module(which)}.{suffix}") + "$").match(name)
        return int(m.group("layer")) if m else None

    def split_tensor(self, name: str) -> tuple[int, str, str] | None:
        """(layer, "down"/"up"/"gate", tensor suffix such as "weight" or "scales") for a projection tensor,
        else None. A fused gate/up tensor is reported as "up"."""
        m = _compiled(self.tensor_prefix).match(name)
        if not m:
            return None
        rest = name[m.end() :]
        for which in WHICH:
            module = {"down": self.down_proj, "up": self.up_proj, "gate": self.gate_proj}[which]
            if module and rest.startswith(module + "."):
                return int(m.group("layer")), which, rest[len(module) + 1 :]
        return None

    def module_path(self, layer: int, which: str = "down") -> str:
        """Dotted module name of layer ``layer``'s projection in the transformers model."""
        return f"{self.layers_module}.{layer}.{self.module(which)}"

    def up_row(self, neuron: int, intermediate_size: int) -> int:
        """The row of the up-projection weight that computes ``neuron`` (fused: after the gate rows)."""
        return intermediate_size + neuron if self.up_fused else neuron

    def gguf_tensor(self, layer: int, which: str = "down") -> str:
        return (self.gguf_up_proj if which == "up" else self.gguf_down_proj).format(layer=layer)

    def text_config_dict(self, config: dict[str, Any]) -> dict[str, Any]:
        """The part of a config.json dict that describes the language model."""
        if self.text_config is None:
            return config
        sub = config.get(self.text_config)
        if not isinstance(sub, dict):
            raise HeditError(f"config.json of a {self.model_type} model has no '{self.text_config}' section")
        return sub

    def shape(self, config: dict[str, Any]) -> tuple[int, int]:
        """(num_layers, intermediate_size) read from a config.json dict."""
        text = self.text_config_dict(config)
        try:
            layers, inter = text["num_hidden_layers"], text["intermediate_size"]
        except KeyError as e:
            raise HeditError(f"config.json has no {e.args[0]!r} for model_type {self.model_type!r}") from None
        if isinstance(inter, list):
            raise HeditError(
                f"{self.model_type}: per-layer intermediate sizes are not supported (intermediate_size={inter!r})"
            )
        for key, value in (("num_hidden_layers", layers), ("intermediate_size", inter)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise HeditError(f"config.json: {key} must be a positive integer, got {value!r}")
        return layers, inter


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _files():
    return resources.files("hedit") / "architectures"


@cache
def architectures() -> dict[str, Architecture]:
    """All supported architectures keyed by model_type."""
    out = {}
    for f in sorted(_files().iterdir(), key=lambda f: f.name):
        if f.name.endswith(".json") and not f.name.startswith("_"):
            arch = Architecture(**json.loads(f.read_text()))
            out[arch.model_type] = arch
    return out


@cache
def _unsupported() -> dict[str, str]:
    data = json.loads((_files() / "_unsupported.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def get_architecture(model_type: str | None) -> Architecture:
    """The registry entry for ``model_type``, or a HeditError that names it."""
    if not model_type:
        raise HeditError("config.json has no model_type; cannot tell the architecture")
    if not isinstance(model_type, str):
        raise HeditError(f"config.json: model_type must be a string, got {type(model_type).__name__}")
    archs = architectures()
    if model_type in archs:
        return archs[model_type]
    why = _unsupported().get(model_type)
    if why:
        raise HeditError(f"model_type {model_type!r} is not supported: it is {why}")
    raise HeditError(f"model_type {model_type!r} is not supported; supported: {', '.join(sorted(archs))}")


def architecture_for_gguf(gguf_arch: str) -> Architecture:
    """The registry entry whose GGUF architecture name is ``gguf_arch`` (e.g. "llama")."""
    for arch in architectures().values():
        if arch.gguf_arch == gguf_arch:
            return arch
    known = sorted(a.gguf_arch for a in architectures().values() if a.gguf_arch)
    raise HeditError(f"GGUF architecture {gguf_arch!r} is not supported; supported: {', '.join(known)}")
