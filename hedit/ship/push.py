"""`hedit push`: upload an edited checkpoint or an adapter folder to the Hugging Face Hub.

Before anything is sent, the folder must be what hedit writes: ``hedit.json`` (provenance) and a
model card (``README.md``), unless forced; and a loadable checkpoint (config, safetensors shards and
down-projections that match the registry) or PEFT adapter (``adapter_config.json`` readable by PEFT
and ``adapter_model.safetensors``). Pickle files are never uploaded. Uses ``create_repo`` (exist_ok),
``create_branch`` for ``--revision`` and ``upload_folder``; the token comes from ``HF_TOKEN`` or the
login cache, read by huggingface_hub itself, and is never printed or written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hedit.edit.adapters import ADAPTER_CONFIG, read_adapter
from hedit.edit.adapters.mlx_lora import WEIGHTS as MLX_WEIGHTS
from hedit.errors import HeditError
from hedit.io.checkpoint import open_checkpoint
from hedit.io.hub import check_repo_id, check_revision, endpoint, hub_errors

# Extensions of formats that can run code when loaded (pickle and its containers), in any letter case.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz", ".dill", ".pkl.gz")


PICKLE_SCAN = 64 << 20  # files up to this size are parsed as a pickle stream (protocol 0 and 1 have no magic)


def _parses_as_pickle(data: bytes) -> bool:
    """True when ``data`` is one whole pickle stream (opcodes to a STOP at its very end), as a protocol 0
    or 1 pickle is whatever its name; ``pickletools`` only reads opcodes, it never runs them."""
    import pickletools

    if not data or data[-1:] != b".":
        return False
    end = None
    try:
        for op, _, pos in pickletools.genops(data):
            end = pos
            if op.name == "STOP":
                break
    except Exception:  # not opcodes: JSON, text, safetensors
        return False
    return end == len(data) - 1


def is_pickle(path: Path) -> bool:
    """A pickle by name (any case of ``PICKLE_SUFFIXES``) or by content: pickle's protocol 2-5 opcode,
    a whole protocol 0/1 stream (``data.json`` holding ``(dp0 ... .``), or a zip archive holding a
    ``.pkl`` member (``torch.save``'s format)."""
    if path.name.lower().endswith(PICKLE_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            size = os.fstat(f.fileno()).st_size
            if size <= PICKLE_SCAN and not path.name.endswith(".safetensors") and _parses_as_pickle(head + f.read()):
                return True
    except OSError:
        return False
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if head == b"PK\x03\x04":
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:
                return any(n.lower().endswith((".pkl", ".pickle")) for n in z.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
    return False


@dataclass
class PushResult:
    repo_id: str
    revision: str
    commit_url: str
    kind: str  # what check_folder says the folder is
    files: list[str]


def check_contents(folder: Path, shown: Path | None = None) -> None:
    """The content check every push runs (a checkpoint, an adapter, a staged neuron set): no link that
    leaves the folder, nothing but regular files and folders, no pickle by name or by content. Errors
    name ``shown`` (the user's folder, when ``folder`` is a staging copy of it)."""
    shown = shown or folder
    root = folder.resolve()
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_symlink() and root not in p.resolve().parents:
            raise HeditError(f"{shown}: {rel} is a link to outside the folder; not pushed")
        if not (p.is_file() or p.is_dir()):
            raise HeditError(f"{shown}: {rel} is not a regular file (a device or FIFO?); not pushed")
    pickles = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and is_pickle(p))
    if pickles:
        raise HeditError(f"{shown} holds pickle files ({', '.join(pickles)}); hedit pushes safetensors only")


def check_folder(folder: str | Path, force: bool = False) -> str:
    """What ``folder`` is ('checkpoint', 'adapter', 'GGUF', 'gguf-lora adapter', 'mlx-lora adapter': every
    folder hedit writes) when it is fit to push, else a HeditError naming the problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HeditError(f"not a folder: {folder}")
    if not force:
        for name, what in (("hedit.json", "provenance"), ("README.md", "model card")):
            if not (folder / name).is_file():
                raise HeditError(
                    f"{folder} has no {name} ({what}); it was not written by hedit. Pass --force to push it anyway"
                )
    check_contents(folder)
    ggufs = sorted(folder.glob("*.gguf"))
    if ggufs and not (folder / "config.json").is_file():  # `edit X.gguf --out DIR`, or a gguf-lora folder
        from hedit.io.gguf_header import read_gguf_header

        for g in ggufs:
            read_gguf_header(g)  # a GGUF file llama.cpp can read, or its one-line error
        return "gguf-lora adapter" if (folder / "adapter.gguf").is_file() else "GGUF"
    if (folder / MLX_WEIGHTS).is_file():  # export-adapter --format mlx-lora
        from hedit.io.jsonfile import expect, read_json
        from hedit.io.safetensors_header import read_header

        expect(read_json(folder / ADAPTER_CONFIG), dict, str(folder / ADAPTER_CONFIG))
        read_header(folder / MLX_WEIGHTS)
        return "mlx-lora adapter"
    if (folder / ADAPTER_CONFIG).is_file():
        read_adapter(folder)
        return "adapter"
    open_checkpoint(folder)  # config, shards and index, down_proj tensors per the registry
    return "checkpoint"


def push(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    force: bool = False,
) -> PushResult:
    check_repo_id(repo_id)
    if revision:
        check_revision(revision, f"{repo_id}@{revision}")
    kind = check_folder(folder, force)
    files = sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())
    info = upload(folder, repo_id, private, revision, commit_message or f"hedit: upload {kind}")
    return PushResult(repo_id, revision or "main", info, kind, files)


def upload(folder: str | Path, repo_id: str, private: bool, revision: str | None, message: str) -> str:
    """``folder`` to ``repo_id`` (created if missing; ``revision`` a branch, created from main): the commit URL."""
    from huggingface_hub import HfApi

    url = endpoint()
    api = HfApi(endpoint=url)
    with hub_errors(repo_id, url, revision):
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return str(
            api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision, commit_message=message)
        )
