"""Architecture registry: where decoder layers and MLP down-projections live, as data.

Each supported ``model_type`` has a JSON file in ``hedit/architectures/``. Nothing here inspects a
model object for attributes: the module path, checkpoint tensor names and config keys all come
from that data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from hedit.errors import HeditError


@dataclass(frozen=True)
class Architecture:
    model_type: str
    layers_module: str  # dotted path of the decoder-layer ModuleList in the transformers model
    down_proj: str  # dotted path of the down-projection inside one decoder layer
    down_proj_tensor: str  # regex with a named group `layer` matching checkpoint tensor names
    text_config: str | None  # key of the language-model sub-config (multimodal models), else None
    weight_layout: str  # "out_in": weight is [hidden, intermediate], neuron j is column j
    gguf_down_proj: str  # GGUF tensor name template
    gguf_arch: str | None = None  # GGUF general.architecture that loads as this model_type
    note: str = ""

    def layer_of_tensor(self, name: str) -> int | None:
        """Decoder-layer index if ``name`` is that layer's down_proj weight, else None."""
        m = _compiled(self.down_proj_tensor).match(name)
        return int(m.group("layer")) if m else None

    def module_path(self, layer: int) -> str:
        """Dotted module name of layer ``layer``'s down_proj in the transformers model."""
        return f"{self.layers_module}.{layer}.{self.down_proj}"

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


@lru_cache(maxsize=None)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _files():
    return resources.files("hedit") / "architectures"


@lru_cache(maxsize=None)
def architectures() -> dict[str, Architecture]:
    """All supported architectures keyed by model_type."""
    out = {}
    for f in sorted(_files().iterdir(), key=lambda f: f.name):
        if f.name.endswith(".json") and not f.name.startswith("_"):
            arch = Architecture(**json.loads(f.read_text()))
            out[arch.model_type] = arch
    return out


@lru_cache(maxsize=None)
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
    raise HeditError(
        f"model_type {model_type!r} is not supported; supported: {', '.join(sorted(archs))}"
    )


def architecture_for_gguf(gguf_arch: str) -> Architecture:
    """The registry entry whose GGUF architecture name is ``gguf_arch`` (e.g. "llama")."""
    for arch in architectures().values():
        if arch.gguf_arch == gguf_arch:
            return arch
    known = sorted(a.gguf_arch for a in architectures().values() if a.gguf_arch)
    raise HeditError(f"GGUF architecture {gguf_arch!r} is not supported; supported: {', '.join(known)}")
