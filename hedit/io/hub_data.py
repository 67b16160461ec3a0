"""Datasets on the Hugging Face Hub by id: ``hf://datasets/OWNER/NAME[@REVISION][:CONFIG][/SPLIT]``.

``hf://datasets/mandarjoshi/trivia_qa:rc.nocontext/validation`` is the ``datasets`` library's
``load_dataset("mandarjoshi/trivia_qa", "rc.nocontext", split="validation")``. A revision holding a ``/``
is written with ``%2F``, as in huggingface_hub's own ``hf://`` paths.

Which files make a config's split is read as the ``datasets`` library reads it: the ``configs:`` block of
the repository's README (``data_files`` by split, glob patterns), else the file layout
(a folder is a config, except ``data/``; the split is the first split word in the folders below it or the
file name, ``dev``/``valid``/``val`` read as ``validation``: ``CONFIG/SPLIT-00000-of-00001.parquet``,
``data/SPLIT-*.parquet``, ``CONFIG/SPLIT/0000.parquet``). Where ``datasets`` puts every file that names no
split into ``train``, hedit makes each such file a split of its own name
(``hf://datasets/meg-tong/sycophancy-eval/answer`` is ``answer.jsonl``). Only those files (Parquet, JSON
lines, JSON, CSV) and the README are downloaded, into the usual Hub cache, through huggingface_hub;
offline (``HF_HUB_OFFLINE=1``) a split downloaded before is read from the cache. The files' rows then go
through the same checks and layout adapters as a local file's.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from hedit.errors import HeditError
from hedit.io.hub import _hub_name, check_revision, endpoint, hub_errors

PREFIX = "hf://datasets/"
DATA_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
    "eval": "test",
    "evaluation": "test",
}
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
SPEC = re.compile(rf"([^/@:\s]+/[^/@:\s]+)(?:@([^:/\s]+))?(?::({NAME}))?(?:/({NAME}))?")
FORM = "hf://datasets/OWNER/NAME[@REVISION][:CONFIG][/SPLIT]"


@dataclass(frozen=True)
class DatasetSpec:
    text: str  # as the user wrote it
    repo_id: str
    revision: str | None
    config: str | None
    split: str | None


def is_dataset(text: object) -> bool:
    return isinstance(text, str) and text.startswith(PREFIX)


def parse(text: str) -> DatasetSpec:
    """The parts of ``hf://datasets/...``, the id and revision checked as the Hub checks them."""
    m = SPEC.fullmatch(text[len(PREFIX) :]) if is_dataset(text) else None
    if m is None:
        raise HeditError(f"{text[:160]!r} is not a Hub dataset id of the form {FORM}")
    repo_id, revision, config, split = m.groups()
    revision = unquote(revision) if revision is not None else None
    return DatasetSpec(
        text, _hub_name(repo_id), check_revision(revision, text) if revision is not None else None, config, split
    )


def _safe(name: str) -> bool:
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and not any(c.startswith(".") for c in p.parts)


def _data(name: str) -> bool:
    return _safe(name) and name.lower().endswith(DATA_SUFFIXES)


def _front_matter(readme: str | None) -> dict:
    """The YAML block at the top of a dataset card (empty when there is none or it does not parse)."""
    import yaml

    if not readme or not readme.startswith("---"):
        return {}
    end = readme.find("\n---", 3)
    try:
        meta = yaml.safe_load(readme[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _patterns(data_files) -> dict[str, list[str]]:
    """A ``configs:`` entry's ``data_files`` as split -> glob patterns (a bare pattern or list is ``train``)."""
    if isinstance(data_files, str):
        return {"train": [data_files]}
    if isinstance(data_files, dict):
        return {str(k): [v] if isinstance(v, str) else [str(x) for x in v or []] for k, v in data_files.items()}
    out: dict[str, list[str]] = {}
    for entry in data_files or []:
        if isinstance(entry, str):
            out.setdefault("train", []).append(entry)
        elif isinstance(entry, dict) and "path" in entry:
            paths = entry["path"]
            out.setdefault(str(entry.get("split", "train")), []).extend([paths] if isinstance(paths, str) else paths)
    return out


def _glob(pattern: str, names: list[str]) -> list[str]:
    pattern = pattern.removeprefix("./")
    return [n for n in names if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n, pattern.replace("**/", ""))]


def layout(names: list[str], readme: str | None) -> tuple[dict[str, dict[str, list[str]]], str | None]:
    """{config: {split: [data files]}} of a dataset repository, and its default config (or None)."""
    names = sorted(n for n in names if _data(n))
    configs = _front_matter(readme).get("configs")
    out: dict[str, dict[str, list[str]]] = {}
    default = None
    if isinstance(configs, list) and configs:
        for c in configs:
            if not isinstance(c, dict):
                continue
            name = str(c.get("config_name", "default"))
            if c.get("default"):
                default = name
            splits = {
                s: sorted({f for p in pats for f in _glob(str(p), names)})
                for s, pats in _patterns(c.get("data_files")).items()
            }
            out[name] = {s: files for s, files in splits.items() if files}
        return out, default
    for n in names:
        parts = n.split("/")
        config = (
            parts[0] if len(parts) >= 2 and parts[0] != "data" and parts[0].lower() not in SPLIT_NAMES else "default"
        )
        words = [d.lower() for d in parts[1 if config != "default" else 0 : -1]]  # folders below the config
        words += [w.lower() for w in re.split(r"[-._ 0-9]+", parts[-1]) if w]
        split = next((SPLIT_NAMES[w] for w in words if w in SPLIT_NAMES), parts[-1].split(".")[0])
        out.setdefault(config, {}).setdefault(split, []).append(n)
    return out, ("default" if "default" in out else None)


def choose(spec: DatasetSpec, names: list[str], readme: str | None) -> list[str]:
    """The data files of the config and split ``spec`` names (or the only one there is)."""
    configs, default = layout(names, readme)
    if not configs:
        raise HeditError(f"{spec.text}: no data files ({', '.join(DATA_SUFFIXES)}) in {spec.repo_id}")
    if spec.config is not None:
        if spec.config not in configs:
            raise HeditError(f"{spec.text}: {spec.repo_id} has no config {spec.config!r} ({_listed(configs)})")
        config = spec.config
    elif len(configs) == 1 or default is not None:
        config = default if default is not None else next(iter(configs))
    else:
        raise HeditError(f"{spec.text}: {spec.repo_id} has several configs; name one with :CONFIG ({_listed(configs)})")
    splits = configs[config]
    if not splits:
        raise HeditError(f"{spec.text}: config {config!r} of {spec.repo_id} has no data files")
    if spec.split is not None:
        split = SPLIT_NAMES.get(spec.split.lower(), spec.split) if spec.split not in splits else spec.split
        if split not in splits:
            raise HeditError(
                f"{spec.text}: config {config!r} of {spec.repo_id} has no split {spec.split!r} ({_listed(splits)})"
            )
    elif len(splits) == 1:
        split = next(iter(splits))
    else:
        raise HeditError(f"{spec.text}: config {config!r} has several splits; name one with /SPLIT ({_listed(splits)})")
    return splits[split]


def _listed(names) -> str:
    names = sorted(names)
    return ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _cached(spec: DatasetSpec, cache: str | None) -> tuple[list[str], str | None]:
    """The file names (and the card) of the cached snapshot of ``spec``'s revision; offline and not
    cached, huggingface_hub's own LocalEntryNotFoundError (``hub_errors`` says so in one line)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError
    from huggingface_hub.file_download import repo_folder_name

    root = Path(cache or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=spec.repo_id, repo_type="dataset")
    ref = root / "refs" / (spec.revision or "main")
    folder = root / "snapshots" / (ref.read_text().strip() if ref.is_file() else spec.revision or "main")
    if not folder.is_dir():
        raise LocalEntryNotFoundError(f"{spec.repo_id} is not in the cache")
    names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    card = folder / "README.md"
    return names, card.read_text(encoding="utf-8", errors="replace") if card.is_file() else None


def fetch(text: str) -> list[Path]:
    """The local files (in the Hub cache) of the split ``text`` names, downloaded when needed."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    spec = parse(text)
    url, offline = endpoint(), _offline()
    cache = os.environ.get("HF_HUB_CACHE") or None
    common = {"repo_type": "dataset", "revision": spec.revision, "cache_dir": cache}
    with hub_errors(spec.repo_id, url, spec.revision, offline, what="dataset"):
        if offline:  # what an earlier download left: the names in the cached snapshot, then those files
            names, readme = _cached(spec, cache)
            try:
                chosen = choose(spec, names, readme)
            except HeditError as e:
                raise HeditError(f"{e} (offline: only what was downloaded before is in the cache)") from None
            folder = Path(snapshot_download(spec.repo_id, allow_patterns=chosen, local_files_only=True, **common))
        else:
            info = HfApi(endpoint=url).dataset_info(spec.repo_id, revision=spec.revision)
            names = [s.rfilename for s in info.siblings or []]
            readme = None
            if "README.md" in names:
                readme = Path(hf_hub_download(spec.repo_id, "README.md", endpoint=url, **common)).read_text(
                    encoding="utf-8", errors="replace"
                )
            chosen = choose(spec, names, readme)
            folder = Path(snapshot_download(spec.repo_id, allow_patterns=chosen, endpoint=url, **common))
    return [folder / name for name in chosen]
