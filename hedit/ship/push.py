"""`hedit push`: upload an edited checkpoint or an adapter folder to the Hugging Face Hub.

Before anything is sent, the folder must be what hedit writes: ``hedit.json`` (provenance) and a
model card (``README.md``), unless forced; and a loadable checkpoint (config, safetensors shards and
down-projections that match the registry) or PEFT adapter (``adapter_config.json`` readable by PEFT
and ``adapter_model.safetensors``). Pickle files are never uploaded. Uses ``create_repo`` (exist_ok),
``create_branch`` for ``--revision`` and ``upload_folder``; the token comes from ``HF_TOKEN`` or the
login cache, read by huggingface_hub itself, and is never printed or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hedit.edit.adapters import ADAPTER_CONFIG, read_adapter
from hedit.errors import HeditError
from hedit.io.checkpoint import open_checkpoint
from hedit.io.hub import endpoint, hub_errors, is_repo_id

# Extensions of formats that can run code when loaded (pickle and its containers), in any letter case.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz", ".dill", ".pkl.gz")


def is_pickle(path: Path) -> bool:
    """A pickle by name (any case of ``PICKLE_SUFFIXES``) or by content: pickle's protocol 2-5 opcode,
    or a zip archive holding a ``.pkl`` member (``torch.save``'s format)."""
    if path.name.lower().endswith(PICKLE_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4)
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
    kind: str  # "checkpoint" or "adapter"
    files: list[str]


def check_folder(folder: str | Path, force: bool = False) -> str:
    """'checkpoint' or 'adapter' when ``folder`` is fit to push, else a HeditError naming the problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HeditError(f"not a folder: {folder}")
    if not force:
        for name, what in (("hedit.json", "provenance"), ("README.md", "model card")):
            if not (folder / name).is_file():
                raise HeditError(
                    f"{folder} has no {name} ({what}); it was not written by hedit. Pass --force to push it anyway"
                )
    for p in folder.rglob("*"):
        if p.is_symlink() and folder.resolve() not in p.resolve().parents:
            raise HeditError(f"{folder}: {p.relative_to(folder)} is a link to outside the folder; not pushed")
    pickles = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and is_pickle(p))
    if pickles:
        raise HeditError(f"{folder} holds pickle files ({', '.join(pickles)}); hedit pushes safetensors only")
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
    if not is_repo_id(repo_id) or "@" in repo_id:
        raise HeditError(f"--repo-id must look like owner/name, got {repo_id!r}")
    kind = check_folder(folder, force)
    from huggingface_hub import HfApi

    url = endpoint()
    api = HfApi(endpoint=url)
    files = sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())
    with hub_errors(repo_id, url, revision):
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            revision=revision,
            commit_message=commit_message or f"hedit: upload {kind}",
        )
    return PushResult(repo_id, revision or "main", str(info), kind, files)
