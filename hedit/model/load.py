"""Loading transformers models and tokenizers the way hedit needs them (no remote code unless asked)."""

from __future__ import annotations

from pathlib import Path

import torch

from hedit.errors import HeditError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_device(device: str) -> str:
    """``device`` if torch can run on it here, else a HeditError that says why (before any work starts)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise HeditError(f"unknown device {device!r} (cpu, cuda, cuda:1, mps, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise HeditError(f"device {device!r}: torch sees no CUDA GPU on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise HeditError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise HeditError(f"device {device!r}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise HeditError(f"device {device!r}: hedit runs on cpu, cuda or mps")
    return device


def parse_max_memory(text: str | None) -> dict[int | str, str] | None:
    """'0=20GiB,cpu=60GiB' -> {0: '20GiB', 'cpu': '60GiB'} (accelerate's max_memory)."""
    if not text:
        return None
    out: dict[int | str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise HeditError(f"--max-memory takes DEVICE=SIZE pairs such as 0=20GiB,cpu=60GiB, got {text!r}")
        out[int(key) if key.isdigit() else key] = value
    return out


def load_model(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    device: str = "cpu",
    device_map: str | dict | None = None,
    max_memory: str | dict | None = None,
    offload_folder: str | Path | None = None,
) -> torch.nn.Module:
    """A model on ``device``, or placed by accelerate over several devices with ``device_map`` ("auto",
    "balanced", or a dict) within ``max_memory``, layers that fit nowhere offloaded to ``offload_folder``."""
    check_device(device)
    from hedit.io.checkpoint import check_expert_files

    check_expert_files(path)  # an expert's tensor lost, or two layouts in one layer: one line, not a crash
    from transformers.utils import logging

    logging.disable_progress_bar()
    kw: dict = {}
    if device_map is not None:
        kw = {
            "device_map": device_map,
            "max_memory": parse_max_memory(max_memory) if isinstance(max_memory, str) else max_memory,
        }
        if offload_folder is not None:
            kw["offload_folder"] = str(offload_folder)
    level = logging.get_verbosity()
    logging.set_verbosity_error()  # transformers' load report: unexpected keys (a vision tower beside the
    try:  # language model hedit loads, as Llama 4's) are no news; missing ones are an error, below
        model, info = auto_class(path).from_pretrained(
            str(path),
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            output_loading_info=True,
            **kw,
        )
    except (OSError, ValueError) as e:
        raise HeditError(f"cannot load model {path}: {str(e).splitlines()[0]}") from None
    finally:
        logging.set_verbosity(level)
    missing = sorted(info.get("missing_keys") or ())
    if missing:  # transformers would run them as random weights
        raise HeditError(
            f"cannot load model {path}: {len(missing)} weight(s) the model needs are not in the checkpoint "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
        )
    return (model if device_map is not None else model.to(device)).eval()


def auto_class(path: str | Path):
    """The transformers Auto class for the checkpoint at ``path``: its registry entry's ``auto_class``,
    AutoModelForCausalLM for a family hedit does not know (the command that needs one says so)."""
    import transformers

    from hedit.io.checkpoint import read_config
    from hedit.registry import get_architecture

    name = "AutoModelForCausalLM"
    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file():
        try:
            name = get_architecture(read_config(p).get("model_type")).auto_class
        except HeditError:
            pass
    return getattr(transformers, name)


def input_device(model: torch.nn.Module) -> torch.device:
    """Where a model's inputs go: its embedding's device (with a device map, the first layer's)."""
    w = model.get_input_embeddings().weight
    return torch.device("cpu") if w.device.type == "meta" else w.device


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """The checkpoint's tokenizer, or None when the folder has none."""
    from transformers import AutoTokenizer

    from hedit.io.jsonfile import expect, read_json

    p = Path(path)
    if p.is_dir() and not any(
        (p / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    ):
        return None
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # transformers' errors name neither
        if (p / name).exists():
            expect(read_json(p / name), dict, str(p / name))
    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:  # the tokenizers library and transformers raise many kinds for a broken folder
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise HeditError(f"cannot load the tokenizer of {path}: {why}") from None
