"""Neuron sets on the Hub: `hedit push neurons.json --repo-id owner/name`, and ``--neurons owner/name[@rev]``.

Identification is the expensive stage; its result is a small neurons file with its evidence. A neuron-set
repo is a model repo (tagged ``hedit-neurons``) holding ``neurons.json``, the probe's ``report.json``, its
PNG plots and a card that shows the evidence. ``push_neurons`` uploads exactly those from the neurons
file's folder, which must hold nothing else (an identify work folder holds the answers and features too:
copy the four kinds of file into a folder of their own), and never a local path: a string in the JSON
files that names an absolute path of this machine is refused.

``fetch_neurons`` downloads those files with huggingface_hub into its cache (``HF_HUB_CACHE``), so the
set works offline once fetched (``HF_HUB_OFFLINE``). ``check_found_on`` refuses to apply a set found on
another model or revision than the one named (``force``: a fine-tune of that model; the caller then says
so in the card).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hedit.errors import HeditError
from hedit.io.files import allowed_root, check_inside, read_bytes
from hedit.io.hub import check_repo_id, check_revision, endpoint, hub_errors, is_repo_id, parse_spec
from hedit.io.jsonfile import loads
from hedit.neurons import NeuronSet

NEURONS_FILE, REPORT = "neurons.json", "report.json"
ALLOWED = (NEURONS_FILE, REPORT, "*.png")
TAG = "hedit-neurons"


@dataclass
class NeuronPush:
    repo_id: str
    revision: str
    commit_url: str
    files: list[str]


def _local_paths(obj, found: list[str]) -> list[str]:
    """Strings of a JSON value that look like absolute paths of this machine (walked without recursion:
    a value nested as deep as the parser allows is walked too)."""
    stack = [obj]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str) and (v.startswith(("/", "~")) or (len(v) > 2 and v[1:3] in (":\\", ":/"))):
            found.append(v)
    return found


def neuron_files(neurons: str | Path) -> list[Path]:
    """The files a neuron-set repo gets from ``neurons``'s folder, or a HeditError naming what is wrong."""
    path = Path(neurons)
    if not path.is_file():
        raise HeditError(f"not a neurons file: {neurons}")
    NeuronSet.load(path)  # a neurons file hedit reads, or its one-line error
    folder = path.parent
    extra = sorted(
        p.name + ("/" if p.is_dir() else "")
        for p in folder.iterdir()
        if p != path and not (p.name == REPORT or p.suffix.lower() == ".png")
    )
    if extra:
        shown = ", ".join(extra[:6]) + (f" and {len(extra) - 6} more" if len(extra) > 6 else "")
        raise HeditError(
            f"{folder} holds more than a neuron set ({shown}); a neuron-set repo gets only the neurons file, "
            f"{REPORT} and the PNG plots: copy those into a folder of their own"
        )
    root = allowed_root(folder)
    files = [path] + sorted(p for p in folder.iterdir() if p != path)
    for f in files:
        check_inside(f, root, "a neuron set's file")
        data = read_bytes(f, f.name, "plot" if f.suffix.lower() == ".png" else "json")  # bounded
        if f.suffix == ".json":
            local = _local_paths(loads(data, f.name), [])
            if local:
                raise HeditError(f"{f.name} names a local path ({local[0][:80]}); a pushed neuron set must not")
    return files


def neuron_card(ns: NeuronSet, repo_id: str, plots: list[str]) -> str:
    """The card of a neuron-set repo: what was found on which model, the evidence, how to apply it."""
    from hedit.edit.card import evidence, evidence_text

    m = ns.model
    base = m.name_or_path or "unknown"
    front = ["---", "library_name: hedit", "tags:", "- hedit", f"- {TAG}"]
    if is_repo_id(base):
        front.append(f"base_model: {base}")
    shape = f"{m.num_layers} layers, intermediate size {m.intermediate_size}" + (
        f", {m.num_experts} experts" if m.num_experts else ""
    )
    lines = front + [
        "---",
        "",
        f"# H-neurons of {base}",
        "",
        f"{len(ns.neurons)} hallucination-associated MLP neurons (H-neurons; Gao et al., arXiv 2512.01797) found "
        f"by [hedit](https://pypi.org/project/hedit/) on `{base}`"
        + (f" at revision `{m.revision}`" if m.revision else "")
        + f" ({m.model_type}, {shape}).",
        "",
        "## Evidence",
        "",
        evidence_text(evidence(ns), []).rstrip(),
        "",
    ]
    lines += [f"![{Path(p).stem}]({p})" for p in plots]
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        f"hedit edit {base} --neurons {repo_id} --alpha 0 --out edited",
        f"hedit sweep {base} --neurons {repo_id} --out sweep",
        "```",
        "",
        "A set found on another model, revision or shape is refused; `--force` applies it to a fine-tune of "
        "this model, and the edited model's card says so.",
        "",
    ]
    return "\n".join(lines)


def push_neurons(
    neurons: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
) -> NeuronPush:
    """Upload a neuron set (its file, report and plots, and a card) to ``repo_id``."""
    check_repo_id(repo_id)
    if revision:
        check_revision(revision, f"{repo_id}@{revision}")
    files = neuron_files(neurons)
    ns = NeuronSet.load(neurons)
    from hedit.ship.push import check_contents, upload

    with tempfile.TemporaryDirectory(prefix="hedit-neurons-") as tmp:
        stage = Path(tmp)
        for f in files:
            data = read_bytes(f, f.name, "plot" if f.suffix.lower() == ".png" else "json")
            (stage / (NEURONS_FILE if f == files[0] else f.name)).write_bytes(data)
        plots = sorted(p.name for p in stage.glob("*.png"))
        (stage / "README.md").write_text(neuron_card(ns, repo_id, plots))
        check_contents(stage, shown=Path(neurons).parent)  # the checks every push runs (pickles by content)
        names = sorted(p.name for p in stage.iterdir())
        info = upload(stage, repo_id, private, revision, commit_message or "hedit: upload neuron set")
    return NeuronPush(repo_id, revision or "main", info, names)


def fetch_neurons(spec: str) -> Path:
    """The cached ``neurons.json`` of the neuron-set repo ``owner/name[@revision]`` (its report and plots
    beside it), downloaded when needed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    repo_id, revision = parse_spec(spec)
    url = endpoint()
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    quiet = are_progress_bars_disabled()
    disable_progress_bars()  # a few small files: no bar (and an error stays one line)
    try:
        folder = _snapshot(snapshot_download, repo_id, revision, url, offline)
    finally:
        if not quiet:
            enable_progress_bars()
    path = folder / NEURONS_FILE
    if not os.path.lexists(path):
        raise HeditError(f"{spec} on the Hub holds no {NEURONS_FILE}: not a neuron-set repo")
    root = allowed_root(folder)  # the repository's cache folder: a cached file linking elsewhere is not used
    for p in [path, *(q for q in folder.iterdir() if q.name == REPORT or q.suffix.lower() == ".png")]:
        check_inside(p, root, f"the cached neuron set {spec}")
    return path


def _snapshot(snapshot_download, repo_id: str, revision: str, url: str, offline: bool) -> Path:
    import logging

    log = logging.getLogger("huggingface_hub._snapshot_download")
    level = log.level
    log.setLevel(logging.ERROR)  # "no files matched" is hedit's own one-line error below
    try:
        with hub_errors(repo_id, url, revision, offline):
            return Path(
                snapshot_download(
                    repo_id,
                    revision=revision or None,
                    allow_patterns=list(ALLOWED),
                    endpoint=url,
                    cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                    local_files_only=offline,
                )
            )
    finally:
        log.setLevel(level)


def _model_id(source: str) -> tuple[str, str | None] | None:
    """(name, revision) of a model named by id (a Hub id or a built-in name), None for a local folder."""
    from hedit.model.builtin import BUILTINS

    if source not in BUILTINS and Path(source).exists():
        return None
    name, _, rev = source.partition("@")
    return name, rev or None


def check_found_on(ns: NeuronSet, source: str, force: bool = False) -> str | None:
    """None when ``ns`` was found on the model ``source`` names (or ``source`` is a local folder, which
    has no name to compare; its shape is checked where it is loaded), else a one-line refusal; with
    ``force`` the same text comes back as the warning to carry into the card."""
    found, named = ns.model.name_or_path, _model_id(source)
    if found is None or named is None:
        return None
    name, rev = named
    why = None
    if name != found:
        why = f"this neuron set was found on {found}, not {name}"
    elif rev and ns.model.revision and rev != ns.model.revision:
        why = f"this neuron set was found on {found} at revision {ns.model.revision}, not {rev}"
    if why is None:
        return None
    if not force:
        raise HeditError(f"{why}; --force applies it anyway (a fine-tune of {found})")
    return f"{why}: applied with --force (a fine-tune of {found}?)"


def forced_copy(neurons: str | Path, spec: str, warning: str) -> Path:
    """A copy of a fetched neuron set (file, report, plots) whose provenance carries ``warning``, so the
    card of what is made from it says the set was applied to another model; removed when hedit exits."""

    def warn(ns: NeuronSet) -> NeuronSet:
        ns.provenance = dict(ns.provenance) | {"hub": {"repo": spec, "warning": warning}}
        return ns

    return transformed_copy(neurons, warn)


def transformed_copy(neurons: str | Path, change) -> Path:
    """A copy of a neuron set's file (with its report and plots beside it) as ``change(NeuronSet)`` returns
    it, in a temporary folder removed when hedit exits: what a command applies without touching the user's
    file (``--force`` on a Hub set, ``--strength`` on a fitted one)."""
    import atexit

    folder = Path(tempfile.mkdtemp(prefix="hedit-neurons-copy-"))
    atexit.register(shutil.rmtree, folder, True)
    src = Path(neurons)
    root = allowed_root(src.parent)
    for f in [src, *(p for p in src.parent.iterdir() if p.name == REPORT or p.suffix.lower() == ".png")]:
        check_inside(f, root, "a neuron set's file")
        shutil.copyfile(f, folder / f.name)
    change(NeuronSet.load(src)).save(folder / src.name)
    return folder / src.name
