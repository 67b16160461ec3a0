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
    moe: Moe | None = None  # a mixture of experts: where its experts live (``Moe``)
    # the transformers Auto class that loads a checkpoint of this model_type whole, with its language model's
    # layers at layers_module (a vision-language model that AutoModelForCausalLM refuses)
    auto_class: str = "AutoModelForCausalLM"
    # configs of this model_type that hedit refuses, as data: each {"when": [keys], "why": reason}, refused
    # when every key is set (truthy) in the language model's config, with the reason a user reads
    refuse: tuple[dict[str, Any], ...] = ()
    # the model_type of the language model hedit loads from such a checkpoint, where transformers loads it as
    # another family's model (Llama 4's: llama4_text); a neuron set of either fits the other
    text_model_type: str | None = None
    # a dense MLP narrower than the config's intermediate_size, by the rule LFM2 (and LLaMA 1) size it with:
    # {"auto_adjust": key, "multiplier": key, "multiple_of": key}: where the auto_adjust key is true, 2/3 of
    # it, times the multiplier (if set) rounded up to a multiple of multiple_of
    ffn_rule: dict[str, str] | None = None
    # the config writes intermediate_size as a list, one width per layer (Gemma 3n): taken when all are equal
    per_layer_widths: bool = False

    def __post_init__(self):
        if isinstance(self.moe, dict):
            object.__setattr__(self, "moe", Moe(**self.moe))
        object.__setattr__(self, "refuse", tuple(self.refuse))

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

    def site_module(self, layer: int, expert: int | str | None = None) -> tuple[str, str]:
        """(dotted module name, kind) holding the neurons of (layer, expert) in the transformers model:
        kind ``linear`` is a down_proj whose input is the activation (a dense MLP, a shared expert);
        kind ``experts`` is a mixture's experts module, whose forward hedit wraps (``hedit.engine.experts``)."""
        if expert is None:
            return self.module_path(layer), "linear"
        if self.moe is None:
            raise HeditError(f"{self.model_type} is a dense model: it has no expert {expert!r}")
        if expert == "shared":
            if not self.moe.shared:
                raise HeditError(f"{self.model_type} has no shared expert")
            return f"{self.layers_module}.{layer}.{self.moe.shared['module']}.down_proj", "linear"
        return f"{self.layers_module}.{layer}.{self.moe.experts}", "experts"

    def up_row(self, neuron: int, intermediate_size: int) -> int:
        """The row of the up-projection weight that computes ``neuron`` (fused: after the gate rows)."""
        return intermediate_size + neuron if self.up_fused else neuron

    def gguf_tensor(self, layer: int, which: str = "down", expert: int | str | None = None) -> str:
        """The GGUF tensor holding a site's ``which`` projection: a dense layer's ``ffn_up``; in a mixture
        of experts every routed expert of a layer is one stacked ``ffn_up_exps`` [experts, I, hidden] (in
        numpy order), the shared expert ``ffn_up_shexp`` (llama.cpp's names, the same for every family)."""
        if expert is None:
            return (self.gguf_up_proj if which == "up" else self.gguf_down_proj).format(layer=layer)
        kind = "shexp" if expert == "shared" else "exps"
        return f"blk.{layer}.ffn_{'up' if which == 'up' else 'down'}_{kind}.weight"

    def text_config_dict(self, config: dict[str, Any]) -> dict[str, Any]:
        """The part of a config.json dict that describes the language model."""
        if self.text_config is None:
            return config
        sub = config.get(self.text_config)
        if not isinstance(sub, dict):
            raise HeditError(f"config.json of a {self.model_type} model has no '{self.text_config}' section")
        return sub

    def shape(self, config: dict[str, Any]) -> tuple[int, int]:
        """(num_layers, intermediate_size) read from a config.json dict; a mixture of experts' intermediate
        size is its experts' (``experts_shape`` tells the rest)."""
        text = self.text_config_dict(config)
        for rule in self.refuse:
            if all(text.get(k) for k in rule["when"]):
                raise HeditError(f"{self.model_type} with {' and '.join(rule['when'])}: {rule['why']}")
        key = self.moe.intermediate_size if self.moe else "intermediate_size"
        try:
            layers, inter = text["num_hidden_layers"], text[key]
        except KeyError as e:
            raise HeditError(f"config.json has no {e.args[0]!r} for model_type {self.model_type!r}") from None
        if self.ffn_rule and not self.moe and isinstance(inter, int) and text.get(self.ffn_rule["auto_adjust"]):
            inter = int(2 * inter / 3)
            mult = text.get(self.ffn_rule["multiplier"])
            if mult is not None:
                step = int(text.get(self.ffn_rule["multiple_of"]) or 1)
                inter = step * ((int(mult * inter) + step - 1) // step)
        if self.per_layer_widths and isinstance(inter, list) and len(inter) == layers and len(set(inter)) == 1:
            inter = inter[0]  # one width per layer, all equal (Gemma 3n's config writes it so)
        if isinstance(inter, list):
            raise HeditError(
                f"{self.model_type}: per-layer intermediate sizes are not supported (intermediate_size={inter!r})"
            )
        for key, value in (("num_hidden_layers", layers), ("intermediate_size", inter)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise HeditError(f"config.json: {key} must be a positive integer, got {value!r}")
        return layers, inter

    def describe(self) -> str:
        """One line for ``hedit architectures``: where the neurons are, and what is special."""
        if self.moe is None:
            extra = "" if self.gated else " (not gated: --target down only)"
            return f"{self.layers_module}.N.{self.down_proj}{extra}"
        parts = ["mixture of experts"]
        if self.moe.shared:
            parts.append(f"shared expert {self.moe.shared['module']}")
        if self.moe.dense_layers:
            parts.append("dense layers " + self.down_proj)
        parts.append("per-expert and stacked tensors" if self.moe.per_expert else "stacked tensors")
        if self.moe.up_exact is not True:
            parts.append("--target down only")
        return f"{self.layers_module}.N.{self.moe.experts} ({'; '.join(parts)})"

    def table_row(self) -> str:
        """The README's architectures table row (``hedit architectures --markdown``; a test holds the README
        to it): the module the neurons live in, and what is special about the family, from this data."""
        notes = []
        if self.moe is not None:
            notes.append("mixture of experts")
            if self.moe.shared:
                notes.append(f"shared expert {self.moe.shared['module']}")
            if self.moe.dense_layers:
                notes.append(f"dense layers {self.down_proj}")
            notes.append("per-expert and stacked tensors" if self.moe.per_expert else "stacked tensors")
            if self.moe.transposed:
                notes.append("transposed")
            if self.moe.routing == "input":
                notes.append("the router weights the experts' input")
        if self.text_config:
            notes.append("language model only, never the vision tower")
        if self.up_fused:
            notes.append("gate and up fused")
        if not self.gated or (self.moe is not None and self.moe.up_exact is not True):
            notes.append("--target down only")
        if self.auto_class != "AutoModelForCausalLM":
            notes.append(f"loaded as `{self.auto_class}`")
        if self.gguf_arch:
            notes.append(f"GGUF `{self.gguf_arch}`")
        notes += [f"refused with {' and '.join(r['when'])}" for r in self.refuse]
        where = self.moe.experts if self.moe is not None else self.down_proj
        return f"| {self.model_type} | `{self.layers_module}.N.{where}` | {'; '.join(notes)} |"

    def experts_shape(self, config: dict[str, Any]) -> ExpertsShape | None:
        """Where the experts are, layer by layer, for a mixture of experts; None for a dense model."""
        if self.moe is None:
            return None
        text = self.text_config_dict(config)
        layers, inter = self.shape(config)
        return self.moe.shape(text, layers, inter, self.model_type)


@dataclass(frozen=True)
class Moe:
    """A mixture-of-experts family, as data (``hedit/architectures/<model_type>.json``, key ``moe``).

    A neuron is (layer, expert, index): ``expert`` a routed expert's number, ``"shared"`` for the shared
    expert(s), or absent in a dense layer. Expert tensors come in two layouts, both read and written:
    one tensor per expert (``per_expert``: names inside a layer, ``{expert}`` its number) and stacked
    3-D tensors [experts, ...] (``stacked``: candidate names inside a layer). ``transposed``: a stacked
    expert matrix is [in, out] (gpt_oss), else [out, in] like a Linear weight; ``interleaved``: gate and up
    alternate along the gate_up output (gpt_oss), else gate rows come first. ``routing``: where the router's
    weight g enters, ``output`` (g times each expert's output: most families) or ``input`` (g times each
    expert's input, as Llama 4 does: its experts module then takes every expert's rows, [E x tokens, H],
    zero where the router did not send the token, and returns the experts' outputs unweighted)."""

    experts: str  # the experts module inside a decoder layer, in transformers
    num_experts: list[str]  # config keys for the number of routed experts, first present wins
    intermediate_size: str  # config key of one expert's intermediate size
    stacked: dict[str, list[str]]  # "up"/"down" -> tensor names inside a layer, [experts, ...]
    per_expert: dict[str, str] | None = None  # "gate"/"up"/"down" -> tensor name inside a layer, with {expert}
    shared: dict[str, str] | None = None  # module (a dense MLP), intermediate_size key, times (a multiplier key)
    # {"first": key}, {"listed": key, "sparse_step": key} (dense layers listed), {"moe_listed": key, "sparse_step":
    # key} (MoE layers listed; else every sparse_step-th layer is MoE), {"types": key} (a list of "dense"/"sparse"
    # per layer) or {"interval": key, "start": key, "end": key} (MoE every interval-th layer in [start, end])
    dense_layers: dict[str, str] | None = None
    dense_intermediate_size: str = "intermediate_size"  # config key of a dense layer's MLP width
    routing: str = "output"
    transposed: bool = False
    interleaved: bool = False
    biases: bool = False
    up_exact: bool | str = True  # True, or why scaling an expert's up row is not scaling its neuron
    # how PEFT's LoRA reads the stacked weights: "linear" ([E, out, in], or transposed where transformers'
    # experts module says so) or "storage" (a transposed family whose module does not say so, Llama 4's:
    # PEFT's factors then follow the tensors' own order, B_e [I, r] and A_e [r, H] for down)
    peft_order: str = "linear"

    def param(self, which: str) -> str:
        """The experts module's parameter holding ``which`` ("up": gate_up, "down") in transformers, where
        PEFT targets it (the last ``stacked`` name is transformers' own)."""
        return self.stacked[which][-1].rsplit(".", 1)[-1]

    def shape(self, text: dict[str, Any], layers: int, inter: int, model_type: str) -> ExpertsShape:
        key = next((k for k in self.num_experts if k in text), None)
        experts = text.get(key) if key else None
        if not _positive(experts):
            raise HeditError(f"config.json: {model_type} needs a positive {' or '.join(self.num_experts)}")
        dense = set()
        rule = self.dense_layers or {}
        if "first" in rule:
            first = text.get(rule["first"], 0) or 0
            dense = set(range(min(int(first), layers)))
        step = text.get(rule.get("sparse_step", ""), 1) or 1  # every step-th layer is MoE
        if "listed" in rule:
            dense = {layer for layer in range(layers) if (layer + 1) % step} | set(text.get(rule["listed"]) or [])
        if "types" in rule:  # a list naming each layer's MLP (exaone_moe's mlp_layer_types): MoE where "sparse"
            kinds = text.get(rule["types"]) or []
            dense = {layer for layer in range(layers) if layer >= len(kinds) or kinds[layer] != "sparse"}
        if "interval" in rule:  # MoE every interval-th layer from start to end (-1: the last), as Ernie 4.5's
            every = text.get(rule["interval"], 1) or 1
            start, end = text.get(rule["start"], 0) or 0, text.get(rule["end"], -1)
            end = layers - 1 if end in (None, -1) else end
            dense = {layer for layer in range(layers) if not ((layer + 1) % every == 0 and start <= layer <= end)}
        if "moe_listed" in rule:
            listed = text.get(rule["moe_listed"])
            if listed is None:
                listed = [layer for layer in range(layers) if (layer + 1) % step == 0]
            dense = set(range(layers)) - set(listed)
        shared = 0
        if self.shared:
            shared = text.get(self.shared["intermediate_size"], 0) or 0
            times = text.get(self.shared.get("times", ""), 1) if "times" in self.shared else 1
            shared = int(shared) * int(times or 0)
        dense_inter = text.get(self.dense_intermediate_size, inter)
        return ExpertsShape(layers, inter, int(experts), frozenset(dense), int(dense_inter), shared)


@dataclass(frozen=True)
class ExpertsShape:
    """The sites of a mixture of experts: routed experts and a shared expert in each MoE layer, a dense
    MLP in each dense layer, with their intermediate sizes."""

    num_layers: int
    intermediate_size: int  # one routed expert's
    num_experts: int
    dense: frozenset[int]  # layers with a dense MLP instead of experts
    dense_intermediate_size: int
    shared_intermediate_size: int  # 0: no shared expert

    def width(self, layer: int, expert: int | str | None) -> int:
        """The intermediate size at (layer, expert), or a one-line error naming what is wrong."""
        if not 0 <= layer < self.num_layers:
            raise HeditError(f"layer {layer} out of range: the model has {self.num_layers} layers")
        if layer in self.dense:
            if expert is not None:
                raise HeditError(f"layer {layer} is a dense layer: it has no expert {expert!r}")
            return self.dense_intermediate_size
        if expert is None:
            raise HeditError(f"layer {layer} is a mixture-of-experts layer: a neuron there needs an 'expert'")
        if expert == "shared":
            if not self.shared_intermediate_size:
                raise HeditError(f"layer {layer} has no shared expert (this family has none)")
            return self.shared_intermediate_size
        if not 0 <= expert < self.num_experts:
            raise HeditError(f"expert {expert} in layer {layer} out of range: the model has {self.num_experts} experts")
        return self.intermediate_size

    def sites(self) -> list[tuple[int, int | str | None]]:
        """Every (layer, expert) holding neurons, layer by layer: dense MLP, routed experts, shared expert."""
        out: list[tuple[int, int | str | None]] = []
        for layer in range(self.num_layers):
            if layer in self.dense:
                out.append((layer, None))
                continue
            out += [(layer, e) for e in range(self.num_experts)]
            if self.shared_intermediate_size:
                out.append((layer, "shared"))
        return out


def _positive(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


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


def language_model_type(model_type: str) -> str:
    """The model_type whose layers hold ``model_type``'s neurons once loaded (``text_model_type``), so that
    a neuron set found on Llama 4 as released fits its text model and the other way round."""
    arch = architectures().get(model_type)
    return arch.text_model_type if arch is not None and arch.text_model_type else model_type


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


def architecture_for_gguf(gguf_arch: str, experts: bool = False) -> Architecture:
    """The registry entry whose GGUF architecture name is ``gguf_arch`` (e.g. "llama"); ``experts``: the
    file has experts (llama.cpp writes Mixtral as "llama" with an expert count), so its mixture entry."""
    found = [a for a in architectures().values() if a.gguf_arch == gguf_arch]
    for arch in found:
        if (arch.moe is not None) == experts:
            return arch
    if found:
        return found[0]
    known = sorted({a.gguf_arch for a in architectures().values() if a.gguf_arch})
    raise HeditError(f"GGUF architecture {gguf_arch!r} is not supported; supported: {', '.join(known)}")
