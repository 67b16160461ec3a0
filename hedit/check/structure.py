"""`hedit verify --runtime structure`: check an artifact without loading any model, in bounded memory.

For an edited safetensors checkpoint: every header and every tensor hedit did not edit is
byte-identical to the source (compared in 16 MiB chunks), and every edited tensor equals the source's
tensor scaled as the plan says, recomputed here with the same arithmetic (bytes compared exactly). For
an adapter: every factor equals what the plan implies. For a GGUF file: every byte outside the edited
tensors is identical, and the edited tensors' bytes equal the ones recomputed from the source. Memory is
bounded by the largest edited tensor, so it runs on a 70B checkpoint on a laptop.

It proves the artifact is the edit the plan describes; the runtime checks (transformers, vLLM) prove
that such an edit behaves like the intervention.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hedit.edit.neurons import NeuronSet
from hedit.edit.plan import EditPlan, make_plan
from hedit.errors import HeditError
from hedit.io.jsonfile import read_json
from hedit.io.safetensors_header import read_header, read_tensor
from hedit.progress import bar

CHUNK = 16 << 20


@dataclass
class StructureResult:
    artifact: str
    kind: str  # "checkpoint", "adapter" or "gguf"
    tensors_checked: int
    edited_tensors: int
    bytes_compared: int
    mismatches: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.mismatches and self.edited_tensors > 0

    def to_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed}

    def summary(self) -> str:
        first = f"; first: {self.mismatches[0]}" if self.mismatches else ""
        return (
            f"{'PASS' if self.passed else 'FAIL'} structure: {self.tensors_checked} tensors of the {self.kind} "
            f"checked ({self.bytes_compared / 1e6:.1f} MB), {self.edited_tensors} edited as planned, "
            f"{len(self.mismatches)} mismatches{first}"
        )


def _same_bytes(fa, fb, start: int, end: int) -> bool:
    pos = start
    while pos < end:
        n = min(CHUNK, end - pos)
        if os.pread(fa, n, pos) != os.pread(fb, n, pos):
            return False
        pos += n
    return True


def _target(artifact: Path, sidecar: Path | None = None) -> str:
    info_path = sidecar or artifact / "hedit.json"
    try:
        info = read_json(info_path)
    except HeditError:
        return "auto"
    t = info.get("target") if isinstance(info, dict) else None
    return t if t in ("down", "up") else "auto"


def verify_structure(
    source: str | Path,
    neurons: str | Path | NeuronSet,
    alpha: float | None = None,
    edited: str | Path | None = None,
    adapter: str | Path | None = None,
    allow_negative: bool = False,
    progress: bool = True,
) -> StructureResult:
    if (edited is None) == (adapter is None):
        raise HeditError("give exactly one of --edited or --adapter")
    if str(source).endswith(".gguf"):
        if edited is None:
            raise HeditError("a GGUF source is checked against an edited GGUF (--edited), not an adapter")
        return _gguf(Path(source), neurons, alpha, Path(edited), allow_negative)
    artifact = Path(edited or adapter)
    plan = make_plan(source, neurons, alpha, allow_negative, _target(artifact))
    from hedit.check.verify import check_artifact

    check_artifact(plan, edited, adapter)
    if adapter is not None:
        return _adapter(plan, artifact)
    return _checkpoint(plan, artifact, progress)


def _checkpoint(plan: EditPlan, out: Path, progress: bool) -> StructureResult:
    from hedit.edit.checkpoint import tensor_ops
    from hedit.edit.scaling import scale_along_

    ckpt = plan.checkpoint
    ops = {op.info.name: op for op in tensor_ops(plan)}
    res = StructureResult(str(out), "checkpoint", 0, 0, 0)
    total = sum((ckpt.path / f).stat().st_size for f in ckpt.weight_files)
    with bar(total, "verify structure", "B", progress) as pbar:
        for f in ckpt.weight_files:
            src, dst = ckpt.path / f, out / f
            if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
                res.mismatches.append(f"{f}: missing or of another size")
                continue
            h = read_header(src)
            sfd, dfd = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDONLY)
            try:
                if not _same_bytes(sfd, dfd, 0, h.data_start):
                    res.mismatches.append(f"{f}: header differs")
                for name, info in h.tensors.items():
                    res.tensors_checked += 1
                    res.bytes_compared += info.nbytes
                    op = ops.get(name)
                    if op is None:
                        if not _same_bytes(sfd, dfd, info.start, info.end):
                            res.mismatches.append(f"{name}: changed, but the plan does not edit it")
                        continue
                    if op.zero:
                        row = info.nbytes // info.shape[0]
                        want = bytearray(os.pread(sfd, info.nbytes, info.start))
                        for r in op.index:
                            want[r * row : (r + 1) * row] = bytes(row)
                    else:
                        want = scale_along_(read_tensor(sfd, info), op.axis, op.index, op.alphas, name)
                        want = want.contiguous().view(torch.uint8).numpy().tobytes()
                    if os.pread(dfd, info.nbytes, info.start) != bytes(want):
                        res.mismatches.append(f"{name}: not the source scaled as planned")
                    else:
                        res.edited_tensors += 1
                    del want
            finally:
                os.close(sfd)
                os.close(dfd)
            pbar.update(src.stat().st_size)
    _copied_files(plan, out, res)
    return res


def _copied_files(plan: EditPlan, out: Path, res: StructureResult) -> None:
    """Every file the edit copied (config, generation config, tokenizer, chat template, the index) is
    byte-identical to the source's, and the folder holds nothing else but hedit's own files: a changed
    ``rms_norm_eps`` or chat template changes the model as surely as a changed tensor."""
    from hedit.io.checkpoint import INDEX

    ckpt = plan.checkpoint
    copied = [p.name for p in ckpt.aux_files()] + ([INDEX] if (ckpt.path / INDEX).is_file() else [])
    for name in copied:
        src, dst = ckpt.path / name, out / name
        if not dst.is_file() or dst.is_symlink():
            res.mismatches.append(f"{name}: copied from the source, but missing from the edit")
            continue
        size = src.stat().st_size
        sfd, dfd = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDONLY)
        try:
            if dst.stat().st_size != size or not _same_bytes(sfd, dfd, 0, size):
                res.mismatches.append(f"{name}: differs from the source's")
            res.bytes_compared += size
        finally:
            os.close(sfd)
            os.close(dfd)
    _nothing_else(out, {*copied, *ckpt.weight_files}, res, "in the edit, but neither copied from the source nor")


def _adapter(plan: EditPlan, folder: Path) -> StructureResult:
    from safetensors.torch import load_file

    from hedit.edit.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, _builder

    cfg = read_json(folder / ADAPTER_CONFIG)
    fmt = {"LORA": "lora", "IA3": "ia3"}[cfg["peft_type"]]

    def read(layer: int) -> torch.Tensor:
        f, info = plan.checkpoint.tensors(layer, plan.target)["weight"]
        fd = os.open(plan.checkpoint.path / f, os.O_RDONLY)
        try:
            return read_tensor(fd, info)
        finally:
            os.close(fd)

    built = _builder(fmt)(plan, read)
    want = built.tensors
    got = load_file(folder / ADAPTER_WEIGHTS)
    res = StructureResult(str(folder), "adapter", len(got), 0, sum(t.numel() * t.element_size() for t in got.values()))
    for name in sorted(set(want) | set(got)):
        if name not in got or name not in want:
            res.mismatches.append(f"{name}: {'missing' if name not in got else 'not in the plan'}")
        elif not torch.equal(got[name], want[name]):
            res.mismatches.append(f"{name}: not the factor the plan implies")
        else:
            res.edited_tensors += 1
    _adapter_files(plan, built, folder, cfg, res)
    return res


def _nothing_else(folder: Path, made: set[str], res: StructureResult, what: str) -> None:
    """A mismatch for every entry of ``folder`` that is neither in ``made`` nor one of hedit's own files."""
    from hedit.edit.output import CARD, PROVENANCE

    for p in sorted(folder.iterdir()):
        if p.name not in made | {PROVENANCE, CARD, "evidence"}:
            res.mismatches.append(f"{p.name}: {what} written by hedit")


def _adapter_files(plan: EditPlan, built, folder: Path, cfg: dict, res: StructureResult) -> None:
    """``adapter_config.json`` is the one the plan implies (rank, scaling, targets: a changed
    ``lora_alpha`` rescales the whole edit), and the folder holds nothing but the adapter and hedit's files."""
    import tempfile

    from hedit.edit.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    built.config.base_model_name_or_path = cfg.get("base_model_name_or_path")
    with tempfile.TemporaryDirectory(prefix="hedit-structure-") as tmp:
        built.config.save_pretrained(tmp)
        want = read_json(Path(tmp) / ADAPTER_CONFIG)
    if want != cfg:
        keys = sorted(k for k in set(want) | set(cfg) if want.get(k) != cfg.get(k))
        res.mismatches.append(f"{ADAPTER_CONFIG}: not the one the plan implies ({', '.join(keys[:5])} differ)")
    _nothing_else(folder, {ADAPTER_CONFIG, ADAPTER_WEIGHTS}, res, "in the adapter folder, but not")


def _gguf(source: Path, neurons, alpha, edited: Path, allow_negative: bool) -> StructureResult:
    from hedit.edit.gguf import _column_edit, _row_edit, gguf_shape, open_gguf
    from hedit.edit.plan import load_neurons

    out = edited / source.name if edited.is_dir() else edited
    sidecar = edited / "hedit.json" if edited.is_dir() else Path(f"{edited}.hedit.json")
    target = _target(edited, sidecar)
    header = open_gguf(source)
    arch, _, inter = gguf_shape(header)
    ns = load_neurons(neurons)
    ns.check_model(arch.model_type, *gguf_shape(header)[1:])
    if not out.is_file() or out.stat().st_size != source.stat().st_size:
        raise HeditError(f"{out} is missing or not the size of {source}")
    if target == "auto":
        raise HeditError(f"{sidecar} does not say which target the edit used")
    res = StructureResult(str(out), "gguf", len(header.tensors), 0, source.stat().st_size)
    edits: dict[int, bytes] = {}
    for layer, pairs in ns.plan(alpha, allow_negative).items():
        pairs = [(j, a) for j, a in pairs if a != 1.0]
        if not pairs:
            continue
        t = header.tensors[arch.gguf_tensor(layer, target)]
        idx = [arch.up_row(j, inter) if target == "up" else j for j, _ in pairs]
        alphas = torch.tensor([a for _, a in pairs]).numpy()
        writes, _ = (_row_edit if target == "up" else _column_edit)(source, t, idx, alphas)
        edits.update(dict(writes))
        res.edited_tensors += 1
    sfd, dfd = os.open(source, os.O_RDONLY), os.open(out, os.O_RDONLY)
    try:
        pos, size = 0, source.stat().st_size
        for offset in sorted(edits):
            if not _same_bytes(sfd, dfd, pos, offset):
                res.mismatches.append(f"bytes {pos}..{offset} changed, but the plan does not edit them")
            data = edits[offset]
            if os.pread(dfd, len(data), offset) != data:
                res.mismatches.append(f"bytes at {offset}: not the source's edited as planned")
            pos = offset + len(data)
        if not _same_bytes(sfd, dfd, pos, size):
            res.mismatches.append(f"bytes {pos}..{size} changed, but the plan does not edit them")
    finally:
        os.close(sfd)
        os.close(dfd)
    return res
