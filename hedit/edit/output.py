"""One shape for every artifact hedit writes (edited checkpoint, adapter, GGUF): the output is checked
before any work (``hedit.io.atomic.check_target``), the source weight files are hashed in background
threads beside the work, the artifact is built in a temporary folder (or file) beside ``--out`` and
renamed into place, and ``hedit.json`` (provenance and evidence) and a ``README.md`` model card, with
the evidence plots under ``evidence/``, go with it. A single-file output (``x.gguf``) gets its
provenance as ``x.gguf.hedit.json`` beside it and no card; write to a folder for a pushable one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hedit.edit.card import plots_beside, provenance
from hedit.edit.plan import EditPlan
from hedit.errors import HeditError
from hedit.io.atomic import (
    SIDECAR,
    atomic_dir,
    atomic_file,
    check_target,
    fingerprint,
    is_hedit_output,
    stage_text,
)
from hedit.io.hashing import Hasher

PROVENANCE, CARD = "hedit.json", "README.md"


@dataclass
class Writer:
    path: Path  # the temporary folder (or file) to write the artifact into
    info: dict[str, Any] = field(default_factory=dict)  # extra provenance
    card: Callable[..., str] | None = None  # (plan, out name, evidence, plot names) -> README.md text


@contextlib.contextmanager
def artifact(
    out: str | Path,
    plan: EditPlan,
    kind: str,
    overwrite: bool = False,
    neurons_file: str | Path | None = None,
    folder: bool = True,
) -> Iterator[Writer]:
    """Yield a ``Writer`` whose ``path`` the caller fills; on success the artifact, its ``hedit.json`` and
    its card are in place at ``out``; on any error (or signal) nothing is left."""
    out = Path(out)
    sources = [plan.source, ("neurons file", neurons_file)]
    check_target(out, sources, overwrite, "artifact" if folder else "file")
    sidecar = Path(f"{out}{SIDECAR}")
    if not folder:
        _check_sidecar(out, sidecar, overwrite)
    hasher = Hasher(plan.weight_files)
    plots = plots_beside(neurons_file)
    try:
        if folder:
            with atomic_dir(out, overwrite, sources, kind="artifact") as tmp:
                w = Writer(tmp)
                yield w
                data = provenance(plan, kind, hasher.result(), str(neurons_file) if neurons_file else None, w.info)
                if plots and w.card is not None:
                    (tmp / "evidence").mkdir()
                    for p in plots:
                        shutil.copyfile(p, tmp / "evidence" / p.name)
                (tmp / PROVENANCE).write_text(json.dumps(data, indent=2) + "\n")
                if w.card is not None:
                    (tmp / CARD).write_text(w.card(plan, out.name, data["evidence"], [p.name for p in plots]))
        else:
            staged = None
            try:
                with atomic_file(out, overwrite, sources, kind="file") as tmp:
                    w = Writer(tmp)
                    yield w
                    data = provenance(plan, kind, hasher.result(), str(neurons_file) if neurons_file else None, w.info)
                    data["output"] = fingerprint(tmp)  # what makes x.gguf a hedit output --overwrite may replace
                    # the sidecar is written before the artifact is installed (a full disk: nothing is), and
                    # renamed into place after it (until then the previous sidecar still names the previous
                    # output, which the install checks); a crash between leaves an artifact hedit will not
                    # overwrite, never a user's file taken for hedit's
                    staged = stage_text(sidecar, json.dumps(data, indent=2) + "\n")
                os.replace(staged, sidecar)
                staged = None
            finally:
                if staged is not None:
                    with contextlib.suppress(OSError):
                        staged.unlink()
    finally:
        hasher.cancel()


def _check_sidecar(out: Path, sidecar: Path, overwrite: bool) -> None:
    """``x.gguf.hedit.json`` may exist only as the sidecar of an earlier hedit output ``x.gguf`` that
    ``--overwrite`` replaces; a folder or a user's file of that name is never replaced."""
    if not os.path.lexists(sidecar):
        return
    if sidecar.is_symlink() or not sidecar.is_file():
        raise HeditError(f"{sidecar} exists and is not a file; hedit writes {out}'s provenance there")
    if not (overwrite and is_hedit_output(out, "file")):
        raise HeditError(
            f"{sidecar} already exists and is not the provenance of a hedit output {out.name}; move it away "
            "(hedit writes the provenance there)"
        )


def neurons_path(neurons: Any) -> str | None:
    """The neurons file's path when the caller gave one (not a NeuronSet object)."""
    return None if hasattr(neurons, "neurons") else str(neurons)
