"""A local Hugging Face checkpoint folder, inspected without loading any tensor."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hedit.errors import HeditError
from hedit.io.files import allowed_root, check_model_folder
from hedit.io.jsonfile import read_json
from hedit.io.safetensors_header import Header, TensorInfo, read_header
from hedit.registry import Architecture, get_architecture

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# Weight formats that are never copied next to edited weights: they would carry the unedited model.
STALE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".safetensors")
# Files hedit writes itself into every output folder.
OWN_FILES = ("README.md", "hedit.json", INDEX)


Tensors = dict[str, tuple[str, TensorInfo]]  # tensor suffix ("weight", "scales", ...) -> (file name, tensor)


@dataclass(frozen=True)
class Locus:
    """Where neuron j of a site lives in a checkpoint tensor: ``info`` in ``file``; ``slot`` the expert's
    place along dim 0 of a stacked [experts, a, b] tensor (None: a 2-D tensor); in that expert's 2-D
    matrix, neuron j is row (``axis`` 0) or column (``axis`` 1) ``offset + stride * j``."""

    file: str
    info: TensorInfo
    axis: int
    offset: int = 0
    stride: int = 1
    slot: int | None = None

    def index(self, neurons: list[int]) -> list[int]:
        return [self.offset + self.stride * j for j in neurons]


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]
    arch: Architecture
    num_layers: int
    intermediate_size: int
    weight_files: list[str]  # shard file names, in index order
    headers: dict[str, Header]
    down_proj: dict[int, tuple[str, TensorInfo]]  # layer -> (file name, weight) of an unquantized checkpoint
    modules: dict[tuple[int, str], Tensors]  # (layer, "down"/"up") -> every tensor of that projection
    quant_method: str | None = None  # config.json's quantization_config.quant_method, for quantized checkpoints
    inside: dict[tuple[int, str], tuple[str, TensorInfo]] | None = None  # (layer, name inside it) -> tensor
    experts: Any = None  # registry.ExpertsShape of a mixture of experts

    @property
    def model_type(self) -> str:
        return self.arch.model_type

    def locus(self, site, which: str) -> Locus:
        """Where a site's neurons are in the ``down`` or ``up`` weight (``hedit.registry.Moe`` describes
        both expert layouts), or a one-line error naming the tensor that is missing."""
        layer, expert = (site, None) if isinstance(site, int) else site  # hedit.neurons.Site
        arch, moe = self.arch, self.arch.moe
        if expert is None or expert == "shared":
            if expert is None:
                f, info = self.tensors(layer, which)["weight"]
                width = self.intermediate_size if self.experts is None else self.experts.dense_intermediate_size
            else:
                name = f"{moe.shared['module']}.{which}_proj.weight"
                f, info = self.inside_tensor(layer, [name], "shared expert")
                width = self.experts.shared_intermediate_size
            if which == "down":
                return Locus(f, info, 1)
            return Locus(f, info, 0, arch.up_row(0, width) if arch.up_fused else 0)
        inter = self.intermediate_size
        if moe.per_expert and (layer, moe.per_expert[which].format(expert=expert)) in self.inside:
            f, info = self.inside[(layer, moe.per_expert[which].format(expert=expert))]
            return Locus(f, info, 1 if which == "down" else 0)
        f, info = self.inside_tensor(layer, moe.stacked[which], f"expert {expert}'s {which} projection")
        if len(info.shape) != 3 or info.shape[0] != self.experts.num_experts:
            raise HeditError(f"{info.name} has shape {list(info.shape)}, expected [{self.experts.num_experts}, ...]")
        # in one expert's matrix: [out, in] (a Linear's layout), or [in, out] when transposed
        neuron_axis = (1 if which == "down" else 0) ^ int(moe.transposed)
        if which == "down":
            return Locus(f, info, neuron_axis, slot=expert)
        offset, stride = (1, 2) if moe.interleaved else (inter, 1)  # up after gate, or gate/up alternating
        return Locus(f, info, neuron_axis, offset, stride, expert)

    def site_tensors(self, site, which: str) -> Tensors:
        """Every tensor of a site's ``which`` projection by suffix ("weight", "weight_scale", ...): a dense
        layer's module, a shared expert's, or one expert's in the per-expert layout (a quantized checkpoint
        stores its scales beside each expert's weight)."""
        layer, expert = (site, None) if isinstance(site, int) else site
        if expert is None:
            return self.tensors(layer, which)
        moe = self.arch.moe
        if expert == "shared":
            prefix = f"{moe.shared['module']}.{which}_proj."
        elif moe.per_expert:
            prefix = moe.per_expert[which].format(expert=expert).removesuffix("weight")
        else:
            prefix = None
        group = {
            name[len(prefix) :]: ft
            for (la, name), ft in self.inside.items()
            if la == layer and prefix and name.startswith(prefix)
        }
        if not group:
            raise HeditError(
                f"{self.path}: layer {layer} expert {expert} has no {which} tensors one by one "
                "(a quantized checkpoint's stacked experts are not edited yet)"
            )
        return group

    def inside_tensor(self, layer: int, names: list[str], what: str) -> tuple[str, TensorInfo]:
        for name in names:
            if (layer, name) in self.inside:
                return self.inside[(layer, name)]
        raise HeditError(f"{self.path}: layer {layer}'s {what} not found (no tensor {' or '.join(names)})")

    def tensors(self, layer: int, which: str) -> Tensors:
        try:
            return self.modules[(layer, which)]
        except KeyError:
            raise HeditError(f"{self.path}: layer {layer} has no {self.arch.module(which)} tensors") from None

    def aux_files(self) -> list[Path]:
        """Top-level files to copy beside the weights: config, generation config, tokenizer, template."""
        out = []
        for p in sorted(self.path.iterdir()):
            if not p.is_file() or p.name.startswith("."):
                continue
            if p.name in OWN_FILES or p.name.endswith(STALE_WEIGHTS):
                continue
            out.append(p)
        return out

    def skipped_entries(self) -> list[str]:
        """What aux_files() leaves out, other than the weights hedit writes (for provenance)."""
        kept = {p.name for p in self.aux_files()} | set(self.weight_files) | set(OWN_FILES)
        return sorted(p.name for p in self.path.iterdir() if p.name not in kept and not p.name.startswith("."))


def read_config(path: Path) -> dict[str, Any]:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise HeditError(f"{path} has no config.json; not a Hugging Face checkpoint folder")
    data = read_json(cfg)
    if not isinstance(data, dict):
        raise HeditError(f"{cfg} must hold a JSON object, not {type(data).__name__}")
    return data


def contained(root: Path, name: Any, what: str) -> str:
    """``name`` when it is a plain relative path inside ``root`` (no absolute path, no '..'), else an error."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise HeditError(f"{what}: {name!r} is not a file name")
    p = Path(name)
    if p.is_absolute() or ".." in p.parts or name.startswith("~"):
        raise HeditError(f"{what}: {name!r} points outside {root}")
    allowed = allowed_root(root)  # a Hub cache snapshot's files are links into that repository's blobs/
    if allowed not in (root / p).resolve().parents:
        raise HeditError(f"{what}: {name!r} resolves outside {root} (a link?)")
    return name


def weight_files(path: Path) -> list[str]:
    """Shard names from the index, or the single model.safetensors."""
    index = path / INDEX
    if index.is_file():
        data = read_json(index)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise HeditError(f"{index} is not a valid safetensors index (no 'weight_map' object)")
        files = list(dict.fromkeys(contained(path, f, f"{index.name}: shard") for f in weight_map.values()))
        bad = [f for f in files if not f.endswith(".safetensors")]
        if bad:
            raise HeditError(f"{index.name}: shard {bad[0]!r} is not a .safetensors file")
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise HeditError(f"{path}: shard {missing[0]} named in {INDEX} is missing")
        return files
    if (path / SINGLE).is_file():
        return [SINGLE]
    if any(p.suffix in (".bin", ".pt", ".pth") for p in path.iterdir()):
        raise HeditError(
            f"{path} has only PyTorch pickle weights (.bin); hedit reads safetensors only. Convert it first, "
            "e.g. load it in transformers and save_pretrained(..., safe_serialization=True)"
        )
    raise HeditError(f"{path} has no safetensors weights (no {SINGLE} or {INDEX})")


MLX_MODES = ("affine", "mxfp4", "mxfp8")  # the modes whose channels hedit scales exactly (hedit.io.quant)


def mlx_quantization(config: dict, path: Path) -> str | None:
    """ "mlx" for a checkpoint mlx-lm quantized (``quantization``: group_size, bits, mode, as ``mlx_lm
    convert -q`` writes it), None when it is not one; a mode hedit cannot scale exactly is refused."""
    q = config.get("quantization")
    if not isinstance(q, dict) or "bits" not in q or "group_size" not in q:
        return None
    mode = q.get("mode", "affine")
    if mode not in MLX_MODES:
        raise HeditError(
            f"{path}: an MLX {mode} checkpoint: its scales are FP8 (E4M3) values under one global scale, which "
            f"an alpha would round; hedit edits MLX {', '.join(MLX_MODES)} checkpoints exactly"
        )
    return "mlx"


def open_checkpoint(source: str | Path) -> Checkpoint:
    path = Path(source)
    if not path.exists():
        raise HeditError(f"source not found: {source}")
    if not path.is_dir():
        raise HeditError(f"source must be a checkpoint folder: {source}")
    check_model_folder(path)
    config = read_config(path)
    arch = get_architecture(config.get("model_type"))
    num_layers, inter = arch.shape(config)
    qc = config.get("quantization_config")
    quant = qc.get("quant_method") if isinstance(qc, dict) else None
    if qc is not None and not isinstance(quant, str):
        quant = mlx_quantization(config, path)
        if quant is None:
            raise HeditError(f"{path}/config.json: quantization_config has no quant_method")
    files = weight_files(path)
    headers = {f: read_header(path / f) for f in files}
    modules: dict[tuple[int, str], Tensors] = {}
    inside: dict[tuple[int, str], tuple[str, TensorInfo]] = {}
    prefix = re.compile(arch.tensor_prefix)
    for f, h in headers.items():
        for name, info in h.tensors.items():
            m = prefix.match(name)
            if m:
                inside[(int(m.group("layer")), name[m.end() :])] = (f, info)
            hit = arch.split_tensor(name)
            if hit is None or hit[0] >= num_layers:
                continue
            layer, which, suffix = hit
            group = modules.setdefault((layer, which), {})
            if suffix in group:
                raise HeditError(f"{path}: tensor {name} appears twice")
            group[suffix] = (f, info)
    experts = arch.experts_shape(config)
    dense_layers = range(num_layers) if experts is None else sorted(experts.dense)
    missing = [layer for layer in dense_layers if (layer, "down") not in modules]
    if missing:
        raise HeditError(
            f"{path}: down_proj weights for layers {missing[:5]} not found "
            f"(config says {num_layers} layers of {arch.model_type})"
        )
    down: dict[int, tuple[str, TensorInfo]] = {}
    if experts is not None:
        inter = experts.dense_intermediate_size  # the dense layers' MLPs are checked below
    if quant is None:
        rows = 2 * inter if arch.up_fused else inter
        for (layer, which), group in sorted(modules.items()):
            if "weight" not in group:
                raise HeditError(
                    f"{path}: layer {layer}'s {arch.module(which)} has no weight "
                    f"(tensors: {', '.join(sorted(group))}); a quantized checkpoint needs its "
                    "quantization_config in config.json"
                )
            f, info = group["weight"]
            want = (None, inter) if which == "down" else (rows, None)
            if len(info.shape) != 2 or any(w is not None and w != got for w, got in zip(want, info.shape)):
                expected = f"[hidden, {inter}]" if which == "down" else f"[{rows}, hidden]"
                raise HeditError(f"{info.name} has shape {list(info.shape)}, expected {expected} from config.json")
            if which == "down":
                down[layer] = (f, info)
    if quant in ("gptq", "awq", "mlx"):
        _check_quantized(path, config, arch, quant, modules, inter)
    if experts is not None:
        inter = experts.intermediate_size
    ckpt = Checkpoint(path, config, arch, num_layers, inter, files, headers, down, modules, quant, inside, experts)
    if experts is not None:
        _check_expert_layout(path, arch, experts, inside)
    if experts is not None and quant is None:  # a quantized one's tensors are checked as its writer reads them
        _check_experts(ckpt)
    return ckpt


def _check_quantized(path: Path, config: dict, arch: Architecture, quant: str, modules: dict, inter: int) -> None:
    """A GPTQ, AWQ or MLX checkpoint's quantization settings (bits, group size; MLX's per-module ones too)
    in range, and every MLP projection's packed tensors of the shapes those settings imply (``inter``:
    down_proj's input width; up's and gate's is the config's hidden size)."""
    from hedit.io.quant import check_layout, detect, quant_params

    where = f"{path}/config.json"
    if quant == "mlx":
        q = config["quantization"]
        top = quant_params(q, f"{where}: quantization", "mlx")
    else:
        top = quant_params(
            config["quantization_config"],
            f"{where}: quantization_config",
            quant,
            ("bits", "w_bit"),
            ("group_size", "q_group_size"),
        )
    for (layer, which), group in sorted(modules.items()):
        name = arch.module_path(layer, which)
        params = top
        if quant == "mlx" and isinstance(q.get(name), dict):
            params = quant_params(q[name], f"{where}: quantization.{name}", "mlx")
        fmt = detect({k: v[1] for k, v in group.items()}, quant, name)
        if quant == "mlx" and name in q:  # mlx-lm's per-module entry decides how it loads the module
            if q[name] is False and fmt is not None:
                raise HeditError(
                    f"{where}: quantization.{name} is false (the module left unquantized), but its weight is "
                    "stored quantized (scales beside it); mlx-lm could not load it"
                )
            if q[name] is not False and fmt is None:
                raise HeditError(
                    f"{where}: quantization.{name} asks for a quantized module, but its weight is stored in "
                    "float (no scales beside it); mlx-lm could not load it"
                )
        if fmt is not None:
            hidden = (config.get("text_config") or config).get("hidden_size")
            in_dim = inter if which == "down" else hidden if isinstance(hidden, int) else None
            check_layout(fmt, {k: v[1] for k, v in group.items()}, *params, f"{path}: {name}", in_dim)


def check_expert_files(path: str | Path) -> None:
    """For a mixture of experts of a family hedit knows: ``_check_expert_layout`` on the folder's tensor
    names (headers only), for the commands that load the model in transformers rather than open it as a
    checkpoint (sweep, collect, features), so a lost expert tensor is one line there too."""
    path = Path(path)
    if not path.is_dir() or not (path / "config.json").is_file():
        return
    config = read_config(path)
    try:
        arch = get_architecture(config.get("model_type"))
    except HeditError:
        return  # a family hedit does not know: the command that needs one says so
    shape = arch.experts_shape(config)
    if shape is None:
        return
    prefix = re.compile(arch.tensor_prefix)
    inside = {}
    for f in weight_files(path):
        for name in read_header(path / f).tensors:
            m = prefix.match(name)
            if m:
                inside[(int(m.group("layer")), name[m.end() :])] = f
    _check_expert_layout(path, arch, shape, inside)


def _check_expert_layout(path: Path, arch: Architecture, shape, inside: dict) -> None:
    """Every MoE layer stores its experts in one layout, whole: stacked 3-D tensors, or one tensor set per
    expert with every expert 0 to E-1 holding the same tensors (``registry.Moe.per_expert``). A checkpoint
    missing one expert's tensor (any of them: a lost gate_proj too), or holding both layouts in one layer,
    is refused here, before anything is written: transformers could not load it, or would load one of the
    two layouts and not say which."""
    moe = arch.moe
    stacked = {n for names in moe.stacked.values() for n in names}
    patterns = {}
    for which, template in (moe.per_expert or {}).items():
        before, after = template.rsplit(".", 1)[0].split("{expert}")
        patterns[which] = re.compile(re.escape(before) + r"(\d+)" + re.escape(after) + r"\.(.+)$")
    found: dict[int, dict[str, dict[int, set[str]]]] = {}
    for layer, name in inside:
        for which, pat in patterns.items():
            m = pat.match(name)
            if m:
                found.setdefault(layer, {}).setdefault(which, {}).setdefault(int(m.group(1)), set()).add(m.group(2))
    for layer in range(shape.num_layers):
        per = found.get(layer)
        if layer in shape.dense:
            continue
        both = sorted(n for n in stacked if (layer, n) in inside)
        if per and both:
            one = moe.per_expert[next(iter(per))].format(expert=0)
            raise HeditError(
                f"{path}: layer {layer} holds its experts both one by one ({one}) and stacked ({both[0]}); "
                "a checkpoint stores them in one layout"
            )
        if not per:
            continue
        for which, template in moe.per_expert.items():
            have = per.get(which, {})
            ref = next((have[e] for e in sorted(have)), None)
            for e in range(shape.num_experts):
                if e not in have or (ref is not None and have[e] != ref):
                    lost = sorted((ref or {"weight"}) - have.get(e, set()))
                    missing = template.rsplit(".", 1)[0].format(expert=e) + "." + (lost[0] if lost else "weight")
                    raise HeditError(
                        f"{path}: layer {layer} has no {missing} (expert {e} of {shape.num_experts}); a "
                        "checkpoint with an expert's tensor missing cannot be loaded or edited"
                    )


def _check_experts(ckpt: Checkpoint) -> None:
    """Every MoE layer's expert weights (one layout or the other) and shared expert are in the checkpoint
    with the shapes config.json gives: a shard that lost them is refused before anything is written."""
    shape = ckpt.experts
    for layer, expert in shape.sites():
        if expert is None or (isinstance(expert, int) and expert > 0 and _stacked(ckpt, layer)):
            continue
        width = shape.width(layer, expert)
        for which in ("down", "up") if ckpt.arch.moe.up_exact is True or expert == "shared" else ("down",):
            loc = ckpt.locus((layer, expert), which)
            dims = loc.info.shape[1:] if loc.slot is not None else loc.info.shape
            n = dims[loc.axis] if len(dims) == 2 else -1
            need = loc.offset + loc.stride * (width - 1) + 1
            if n < need or (which == "down" and n != width):
                raise HeditError(
                    f"{loc.info.name} has shape {list(loc.info.shape)}: it does not hold {width} neurons "
                    f"of layer {layer} expert {expert} (config.json)"
                )


def _stacked(ckpt: Checkpoint, layer: int) -> bool:
    moe = ckpt.arch.moe
    return not (moe.per_expert and (layer, moe.per_expert["down"].format(expert=0)) in ckpt.inside)
