"""Writers of one shape, found by name (as PEFT's tuners and mergekit's merge methods are).

Every output format is one module with one ``Writer`` subclass registered in ``WRITERS``:

    name          module                  what it writes
    checkpoint    hedit.edit.checkpoint   a float safetensors checkpoint, the edit folded into its weights
    quantized     hedit.edit.quantized    a quantized safetensors checkpoint, the edit in its channel scales
    gguf          hedit.edit.gguf         a GGUF file, the edit in its block scales or values
    lora          hedit.edit.adapters.lora  an exact PEFT LoRA over the unmodified source
    ia3           hedit.edit.adapters.ia3   an exact PEFT IA3 over the unmodified source
    gguf-lora     hedit.edit.adapters.gguf_lora  a llama.cpp LoRA adapter (GGUF) over the unmodified GGUF
    mlx-lora      hedit.edit.adapters.mlx_lora   an mlx-lm LoRA adapter over the unmodified MLX checkpoint

and the same entry points: ``check(plan)`` refuses a plan the format cannot hold exactly; ``write(plan,
dst, progress, name)`` fills the temporary folder (or file) ``dst`` of the output ``name`` and returns a
``Report``; ``card(plan, out_name, evidence, plots, report)`` is its model card; ``expected(plan)``
recomputes what the artifact must hold, which ``hedit verify --runtime structure`` compares byte for byte
(``Patches``: the source's files with these byte ranges rewritten; or ``Built``: new tensors and config);
``rules(report)`` are the runtime rules a server needs (vLLM's LoRA ranks). ``write_artifact`` runs any
of them through one plan builder (``hedit.edit.plan.make_plan``) and one output shape
(``hedit.edit.output.artifact``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hedit.edit.plan import EditPlan, make_plan
from hedit.errors import HeditError

WRITERS = {
    "checkpoint": "hedit.edit.checkpoint:FloatCheckpoint",
    "quantized": "hedit.edit.quantized:QuantizedCheckpoint",
    "gguf": "hedit.edit.gguf:Gguf",
    "lora": "hedit.edit.adapters.lora:Lora",
    "ia3": "hedit.edit.adapters.ia3:Ia3",
    "gguf-lora": "hedit.edit.adapters.gguf_lora:GgufLora",
    "mlx-lora": "hedit.edit.adapters.mlx_lora:MlxLora",
}
ADAPTERS = ("lora", "ia3", "gguf-lora", "mlx-lora")
FILE_WRITERS = ("checkpoint", "quantized")  # safetensors: ``auto`` takes up_proj rows (``plan.resolve_target``)


@dataclass
class TensorEdit:
    name: str
    type: str
    neurons: int
    changed_bytes: int  # bytes of the file that differ from the source in this tensor
    max_abs_error: float  # the result against alpha times the (dequantized) source, over edited values


@dataclass
class Report:
    """What a writer did: where, which format and target, each edited tensor, and its provenance."""

    out: str
    file: str  # the artifact's main file or folder (the GGUF file inside a folder output)
    format: str
    target: str
    tensors: list[TensorEdit] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # recorded in hedit.json

    @property
    def max_abs_error(self) -> float:
        return max((t.max_abs_error for t in self.tensors), default=0.0)

    @property
    def types(self) -> list[str]:
        return sorted({t.type for t in self.tensors})

    @property
    def changed_bytes(self) -> int:
        return sum(t.changed_bytes for t in self.tensors)


@dataclass
class Patch:
    """``data`` written at ``offset`` of ``file`` (relative to the artifact) over the source's bytes."""

    file: str
    offset: int
    data: Any  # bytes or a buffer


@dataclass
class Patches:
    """An artifact that is the source's files with byte ranges rewritten: ``files`` (relative names) in
    order, ``patches`` in file order and by offset within each, ``copied`` files identical to the source's."""

    files: list[str]
    patches: Iterator[Patch]
    copied: list[str] = field(default_factory=list)


class PatchStream:
    """``Patches.patches`` taken file by file (``of(file)``, which must be run to its end before the next
    file's), each patch released before the next is made, so memory holds one edited tensor at a time."""

    def __init__(self, patches: Iterator[Patch]):
        self._it, self._next = patches, None
        self._pull()

    def _pull(self) -> None:
        self._next = next(self._it, None)

    def of(self, file: str) -> Iterator[Patch]:
        while self._next is not None and self._next.file == file:
            q, self._next = self._next, None
            yield q
            del q
            self._pull()

    def skip(self, file: str) -> None:
        for _ in self.of(file):
            pass


@dataclass
class Built:
    """An artifact made anew: tensors and the config file's content."""

    tensors: dict[str, Any]
    config: dict[str, Any]
    files: tuple[str, ...] = ()


class Writer:
    name = ""
    kind = ""  # hedit.json's "kind"
    single_file = False  # may the output be one file (``x.gguf``) instead of a folder?

    @property
    def suffix(self) -> str:
        """A single-file output's extension (``--out x.gguf``)."""
        return f".{self.name}"

    experts = False  # does it write mixtures of experts (expert neurons, their layouts)?
    no_experts = ""  # why it cannot, where that is the format's limit rather than hedit's
    down_exact: bool | None = None  # True: down_proj columns of a quantized source are exact (an adapter beside it)

    def check(self, plan: EditPlan) -> None:
        """Refuse a plan this format cannot hold exactly (one line naming why and what to use)."""

    def write(self, plan: EditPlan, dst: Path, progress: bool, name: str) -> Report:
        raise NotImplementedError

    def card(self, plan: EditPlan, out_name: str, ev: dict[str, Any], plots: list[str], report: Report) -> str:
        raise NotImplementedError

    def expected(self, plan: EditPlan):
        raise NotImplementedError

    def rules(self, report: Report) -> dict[str, Any]:
        return {}


def get_writer(name: str) -> Writer:
    if name not in WRITERS:
        raise HeditError(f"unknown output format {name!r}; choose one of {', '.join(WRITERS)}")
    module, cls = WRITERS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def writer_for(plan: EditPlan) -> str:
    """The format a source is edited into when none is asked for: its own."""
    if plan.checkpoint is None:
        return "gguf"
    return "quantized" if plan.checkpoint.quant_method is not None else "checkpoint"


def write_artifact(
    source: str | Path,
    neurons: Any,
    out: str | Path,
    fmt: str | None = None,
    alpha: float | None = None,
    overwrite: bool = False,
    allow_negative: bool = False,
    progress: bool = True,
    target: str = "auto",
) -> Report:
    """Edit ``source`` into ``out`` in format ``fmt`` (default: the source's own); one ``Report``."""
    from hedit.edit.output import artifact, neurons_path

    writer = get_writer(fmt) if fmt is not None else None  # an unknown name fails before any work
    down_exact = writer.down_exact if writer is not None else None
    plan = make_plan(
        source, neurons, alpha, allow_negative, target, rows=fmt in (None, *FILE_WRITERS), down_exact=down_exact
    )
    writer = writer or get_writer(writer_for(plan))
    if plan.arch.moe is not None and not writer.experts:
        why = writer.no_experts or "does not take mixture-of-experts models yet"
        raise HeditError(
            f"the {writer.name} format {why} ({plan.model_type}); hedit edit writes their expert neurons, "
            "export-adapter --format lora an exact PEFT LoRA of them"
        )
    writer.check(plan)
    out = Path(out)
    folder = not (writer.single_file and out.suffix.lower() == writer.suffix)
    with artifact(out, plan, writer.kind, overwrite, neurons_path(neurons), folder=folder) as w:
        report = writer.write(plan, w.path, progress, out.name)
        report.info |= writer.rules(report)
        w.info = report.info
        w.card = lambda plan, name, ev, plots: writer.card(plan, name, ev, plots, report)
    report.out = str(out)
    report.file = str(out / report.file) if folder and report.file else str(out)
    return report
