"""The neuron-set file (``neurons.json``): the contract between probing and editing.

A neuron is (layer, index), or in a mixture of experts (layer, expert, index) with ``expert`` a routed
expert's number or ``"shared"``; neurons of a dense layer of a mixture of experts have no ``expert``.
The plans below key each neuron's place by its *site*: the layer number for a dense MLP, the pair
(layer, expert) for an expert, so dense files read and plan exactly as before."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hedit.errors import HeditError

Expert = int | str | None  # a routed expert's number, "shared", or None (a dense MLP)
Site = int | tuple[int, int | str]  # layer, or (layer, expert)


def site_of(layer: int, expert: Expert = None) -> Site:
    return layer if expert is None else (layer, expert)


def split_site(site: Site) -> tuple[int, Expert]:
    """(layer, expert) of a site; expert None for a dense MLP."""
    return (site, None) if isinstance(site, int) else site


def site_name(site: Site) -> str:
    layer, expert = split_site(site)
    return f"layer {layer}" if expert is None else f"layer {layer} expert {expert}"


def _site_order(site: Site):
    layer, expert = split_site(site)
    return (
        layer,
        0 if expert is None else 1 if isinstance(expert, int) else 2,
        expert if isinstance(expert, int) else 0,
    )


FORMAT = "hedit.neurons"
VERSION = 1


@dataclass(frozen=True)
class Neuron:
    layer: int
    index: int
    alpha: float | None = None  # per-neuron scale; overrides the command-line alpha
    weight: float | None = None  # probe weight, for information
    expert: Expert = None  # mixture of experts: the routed expert's number, or "shared"
    frequency: float | None = None  # stability selection: the share of half-sample refits that chose it
    source: str | None = None  # tune --method fit: where the neuron came from ("probe", "stable", "attribution")

    @property
    def site(self) -> Site:
        return site_of(self.layer, self.expert)


@dataclass(frozen=True)
class ModelInfo:
    model_type: str
    num_layers: int
    intermediate_size: int
    name_or_path: str | None = None
    revision: str | None = None
    num_experts: int | None = None  # a mixture of experts: routed experts per layer


@dataclass
class NeuronSet:
    model: ModelInfo
    neurons: list[Neuron]
    alpha: float | None = None  # default alpha for the whole set (written by `hedit tune`)
    provenance: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- I/O
    @classmethod
    def load(cls, path: str | Path) -> NeuronSet:
        from hedit.io.jsonfile import read_json

        path = Path(path)
        data = read_json(path, f"neurons file {path}")
        try:
            return cls.from_dict(data)
        except HeditError as e:
            raise HeditError(f"neurons file {path}: {e}") from None

    @classmethod
    def from_dict(cls, data: Any) -> NeuronSet:
        if not isinstance(data, dict):
            raise HeditError("top level must be an object")
        _known(data, TOP_KEYS, "")
        if data.get("format") != FORMAT:
            raise HeditError(f"'format' must be {FORMAT!r}")
        if data.get("version") != VERSION:
            raise HeditError(f"unsupported version {data.get('version')!r} (this hedit reads {VERSION})")
        m = data.get("model")
        if not isinstance(m, dict):
            raise HeditError("'model' must be an object")
        _known(m, MODEL_KEYS, "model.")
        for key in ("model_type", "num_layers", "intermediate_size"):
            if key not in m:
                raise HeditError(f"'model.{key}' is missing")
        if not isinstance(m["model_type"], str):
            raise HeditError("'model.model_type' must be a string")
        for key in ("name_or_path", "revision"):
            if m.get(key) is not None and not isinstance(m[key], str):
                raise HeditError(f"'model.{key}' must be a string")
        for key in ("num_layers", "intermediate_size", "num_experts"):
            if (key in m or key != "num_experts") and (not _is_int(m[key]) or m[key] <= 0):
                raise HeditError(f"'model.{key}' must be a positive integer")
        model = ModelInfo(
            model_type=m["model_type"],
            num_layers=m["num_layers"],
            intermediate_size=m["intermediate_size"],
            name_or_path=m.get("name_or_path"),
            revision=m.get("revision"),
            num_experts=m.get("num_experts"),
        )
        raw = data.get("neurons")
        if not isinstance(raw, list):
            raise HeditError("'neurons' must be a list")
        neurons = []
        for i, n in enumerate(raw):
            if not isinstance(n, dict) or not _is_int(n.get("layer")) or not _is_int(n.get("index")):
                raise HeditError(f"neurons[{i}] must be an object with integer 'layer' and 'index'")
            _known(n, NEURON_KEYS, f"neurons[{i}].")
            for key in ("alpha", "weight", "frequency"):
                if n.get(key) is not None and not _is_finite(n[key]):
                    raise HeditError(f"neurons[{i}].{key} must be a finite number, got {_shown(n[key])}")
            if n.get("frequency") is not None and not 0 <= n["frequency"] <= 1:
                raise HeditError(f"neurons[{i}].frequency must lie in [0, 1], got {n['frequency']}")
            if n.get("source") is not None and n["source"] not in SOURCES:
                raise HeditError(f"neurons[{i}].source must be one of {', '.join(SOURCES)}, got {_shown(n['source'])}")
            expert = n.get("expert")
            if expert is not None and not (_is_int(expert) or expert == "shared"):
                raise HeditError(f'neurons[{i}].expert must be an expert\'s number or "shared", got {expert!r}')
            neurons.append(
                Neuron(
                    n["layer"], n["index"], _float(n.get("alpha")), _float(n.get("weight")), expert,
                    _float(n.get("frequency")), n.get("source"),
                )
            )  # fmt: skip
        alpha = data.get("alpha")
        if alpha is not None and not _is_finite(alpha):
            raise HeditError(f"'alpha' must be a finite number, got {_shown(alpha)}")
        prov = data.get("provenance", {})
        if not isinstance(prov, dict):
            raise HeditError("'provenance' must be an object")
        ns = cls(model=model, neurons=neurons, alpha=_float(alpha), provenance=prov)
        ns.check_indices()
        return ns

    def to_dict(self) -> dict[str, Any]:
        neurons = []
        for n in self.neurons:
            d = {"layer": n.layer} | ({"expert": n.expert} if n.expert is not None else {}) | {"index": n.index}
            if n.alpha is not None:
                d["alpha"] = n.alpha
            if n.weight is not None:
                d["weight"] = n.weight
            if n.frequency is not None:
                d["frequency"] = n.frequency
            if n.source is not None:
                d["source"] = n.source
            neurons.append(d)
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": {k: v for k, v in asdict(self.model).items() if v is not None},
            "alpha": self.alpha,
            "neurons": neurons,
            "provenance": self.provenance,
        }

    def save(self, path: str | Path) -> None:
        """Written atomically (temporary file beside it, then rename)."""
        from hedit.io.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def at_strength(self, t: float) -> NeuronSet:
        """The set with every per-neuron alpha moved along its own direction, alpha_j(t) = 1 + t (alpha_j - 1)
        (t = 1: as written; 0: no edit; a fitted set's dose-response). A set without per-neuron alphas is
        one HeditError: its edit is the command's alpha."""
        import dataclasses

        if not math.isfinite(t) or not -MAX_STRENGTH <= t <= MAX_STRENGTH:
            raise HeditError(
                f"strength {_number(t)} is out of range: it runs from -{MAX_STRENGTH:g} to {MAX_STRENGTH:g}"
            )
        if not any(n.alpha is not None for n in self.neurons):
            raise HeditError("--strength scales per-neuron alphas (a fitted set: tune --method fit); this set has none")
        neurons = [n if n.alpha is None else dataclasses.replace(n, alpha=along(n.alpha, t)) for n in self.neurons]
        prov = dict(self.provenance) | {"strength": t}
        return NeuronSet(self.model, neurons, self.alpha, prov)

    # ---------------------------------------------------------------- checks
    @property
    def has_experts(self) -> bool:
        """Made for a mixture of experts (an ``expert`` key, or ``model.num_experts``)."""
        return self.model.num_experts is not None or any(n.expert is not None for n in self.neurons)

    def check_indices(self) -> None:
        """Every neuron inside the declared shape, none listed twice. In a mixture of experts a dense
        layer's and the shared expert's widths are the model's (``check_model`` checks them)."""
        seen = set()
        moe = self.has_experts or _moe_family(self.model.model_type)
        for n in self.neurons:
            if not 0 <= n.layer < self.model.num_layers:
                raise HeditError(f"layer {_shown(n.layer)} out of range: the model has {self.model.num_layers} layers")
            experts = self.model.num_experts
            if isinstance(n.expert, int) and experts is not None and not 0 <= n.expert < experts:
                raise HeditError(
                    f"expert {_shown(n.expert)} in layer {n.layer} out of range: the model has {experts} experts"
                )
            bounded = not moe or isinstance(n.expert, int)
            if n.index < 0 or (bounded and n.index >= self.model.intermediate_size):
                raise HeditError(
                    f"neuron index {_shown(n.index)} in {site_name(n.site)} out of range: "
                    f"intermediate size is {self.model.intermediate_size}"
                )
            if (n.site, n.index) in seen:
                raise HeditError(f"neuron ({site_name(n.site)}, index {n.index}) is listed twice")
            seen.add((n.site, n.index))

    def check_model(self, model_type: str, num_layers: int, intermediate_size: int, experts=None) -> None:
        """A clear error when this set was made for a model of another shape. ``experts``: the model's
        ``ExpertsShape`` (a mixture of experts), against which every neuron's site and index are checked."""
        from hedit.registry import language_model_type

        mine = (self.model.model_type, self.model.num_layers, self.model.intermediate_size)
        theirs = (model_type, num_layers, intermediate_size)
        if (language_model_type(mine[0]), *mine[1:]) != (language_model_type(theirs[0]), *theirs[1:]):
            raise HeditError(
                "neurons file was made for another model: "
                f"{mine[0]} with {mine[1]} layers x {mine[2]} neurons, "
                f"but this model is {theirs[0]} with {theirs[1]} layers x {theirs[2]} neurons"
            )
        if experts is None:
            bad = next((n for n in self.neurons if n.expert is not None), None)
            if bad is not None or self.model.num_experts is not None:
                raise HeditError(
                    f"neurons file names experts ({site_name(bad.site) if bad else 'model.num_experts'}), "
                    f"but {model_type} is a dense model"
                )
            return
        if self.model.num_experts is not None and self.model.num_experts != experts.num_experts:
            raise HeditError(
                f"neurons file was made for a model with {self.model.num_experts} experts per layer; "
                f"this one has {experts.num_experts}"
            )
        for n in self.neurons:
            width = experts.width(n.layer, n.expert)
            if not 0 <= n.index < width:
                raise HeditError(f"neuron index {n.index} in {site_name(n.site)} out of range: its width is {width}")

    # ---------------------------------------------------------------- plan
    def plan(self, alpha: float | None = None, allow_negative: bool = False) -> dict[Site, list[tuple[int, float]]]:
        """Per site (a layer, or (layer, expert)), the sorted (neuron index, alpha) pairs to apply.

        Precedence: a neuron's own alpha, then ``alpha`` (the command line), then the file's alpha.
        """
        default = alpha if alpha is not None else self.alpha
        out: dict[int, list[tuple[int, float]]] = {}
        for n in self.neurons:
            a = n.alpha if n.alpha is not None else default
            if a is None:
                raise HeditError("no alpha: pass --alpha or set 'alpha' in the neurons file")
            check_alpha(a, allow_negative)
            out.setdefault(n.site, []).append((n.index, float(a)))
        return {site: sorted(out[site]) for site in sorted(out, key=_site_order)}

    def by_layer(self) -> dict[Site, list[int]]:
        """Per site (sorted: a layer, or (layer, expert) in a mixture of experts), the sorted indices."""
        out: dict[Site, list[int]] = {}
        for n in self.neurons:
            out.setdefault(n.site, []).append(n.index)
        return {site: sorted(out[site]) for site in sorted(out, key=_site_order)}

    def per_layer_counts(self) -> dict[Site, int]:
        return {layer: len(v) for layer, v in self.by_layer().items()}


TOP_KEYS = ("format", "version", "model", "alpha", "neurons", "provenance")
MODEL_KEYS = ("model_type", "num_layers", "intermediate_size", "name_or_path", "revision", "num_experts")
NEURON_KEYS = ("layer", "expert", "index", "alpha", "weight", "frequency", "source")
SOURCES = ("probe", "stable", "attribution", "control")


def _known(obj: dict, keys: tuple[str, ...], where: str) -> None:
    unknown = [k for k in obj if k not in keys]
    if unknown:
        raise HeditError(f"unknown key '{where}{unknown[0]}' (known: {', '.join(keys)})")


MAX_STRENGTH = 10.0  # at_strength: beyond 10 times a fitted edit is a typo, and its alphas leave [-100, 100] soon
MAX_ALPHA = 100.0  # the paper scales by 0 to 3; beyond 100 an alpha can only be a typo (1e5 for 1.5)


def check_alpha(alpha: float, allow_negative: bool = False) -> None:
    if not math.isfinite(alpha):
        raise HeditError(f"alpha must be a finite number, got {alpha}")
    if abs(alpha) > MAX_ALPHA:
        raise HeditError(
            f"alpha {_number(alpha)} is out of range: hedit takes alphas from -{MAX_ALPHA:g} to {MAX_ALPHA:g} "
            "(the paper's are 0 to 3)"
        )
    if alpha < 0 and not allow_negative:
        raise HeditError(f"alpha {alpha} is negative; pass --allow-negative-alpha if you mean it")


def along(alpha: float, t: float) -> float:
    """``alpha`` at strength ``t``: 1 + t (alpha - 1), exactly ``alpha`` at t = 1 and exactly 1 at t = 0."""
    return alpha if t == 1 else 1.0 if t == 0 else 1.0 + t * (alpha - 1.0)


def _moe_family(model_type: str) -> bool:
    """A family the registry describes as a mixture of experts: a neuron without ``expert`` there sits in
    a dense layer, whose width is the model's to check (``check_model``), not the experts' width."""
    from hedit.registry import get_architecture

    try:
        return get_architecture(model_type).moe is not None
    except HeditError:
        return False


def _number(x: float) -> str:
    """``x`` as short as it reads back exactly (1e5 as "100000", 100.0000001 never as "100")."""
    short = f"{x:g}"
    return short if float(short) == x else repr(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_finite(x: Any) -> bool:
    """A JSON number a float holds finitely: not a bool, not NaN or infinite, and not an integer of 400
    digits (which ``float`` cannot take)."""
    if not _is_number(x):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:
        return False


def _shown(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _float(x: Any) -> float | None:
    return None if x is None else float(x)
