"""`hedit verify --runtime structure`: check an artifact without loading any model, in bounded memory.

For an edited safetensors checkpoint: every header and every tensor hedit did not edit is
byte-identical to the source (compared in 16 MiB chunks), and every edited tensor equals the source's
tensor scaled as the plan says, recomputed here with the same arithmetic (bytes compared exactly). For
an adapter: every factor equals what the plan implies. For a GGUF file: every byte outside the edited
tensors is identical, and the edited tensors' bytes equal the ones recomputed from the source. Memory is
bounded by the largest edited tensor, so it runs on a 70B checkpoint on a laptop.

What the artifact must hold is each writer's own recomputation (``Writer.expected``: the same code that
wrote it); this module only compares. It proves the artifact is the edit the plan describes; the runtime
checks (transformers, vLLM) prove that such an edit behaves like the intervention.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hedit.check.common import adapter_format, artifact_path, check_artifact
from hedit.edit.adapters import ADAPTER_CONFIG, canonical_config
from hedit.edit.output import CARD, PROVENANCE
from hedit.edit.plan import EditPlan, make_plan
from hedit.edit.writers import Built, Patches, PatchStream, get_writer, writer_for
from hedit.errors import HeditError
from hedit.io.atomic import SIDECAR
from hedit.io.jsonfile import read_json
from hedit.io.safetensors_header import read_header
from hedit.neurons import NeuronSet
from hedit.progress import bar

CHUNK = 16 << 20


@dataclass
class StructureResult:
    artifact: str
    kind: str  # "checkpoint", "adapter", "gguf" or "gguf-lora adapter"
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
    artifact = artifact_path(edited, adapter)
    kind = adapter_format(artifact) if adapter is not None else None
    if kind == "gguf-lora":
        return _gguf_lora(source, neurons, alpha, artifact, allow_negative)
    if str(source).endswith(".gguf"):
        if edited is None:
            raise HeditError("a GGUF source is checked against an edited GGUF (--edited), not an adapter")
        return _gguf(Path(source), neurons, alpha, artifact, allow_negative)
    if kind == "mlx-lora":
        writer = get_writer(kind)
        plan = make_plan(source, neurons, alpha, allow_negative, _target(artifact), down_exact=writer.down_exact)
        return _built(plan, artifact, writer.expected(plan))
    plan = make_plan(source, neurons, alpha, allow_negative, _target(artifact))
    check_artifact(plan, edited, adapter)
    if adapter is not None:
        kind = read_json(artifact / ADAPTER_CONFIG)["peft_type"]
        return _built(plan, artifact, get_writer({"LORA": "lora", "IA3": "ia3"}[kind]).expected(plan))
    writer = get_writer(writer_for(plan))
    return _checkpoint(plan, artifact, writer.expected(plan), progress)


def _same_range(src: Path, dst: Path, start: int, end: int) -> bool:
    sfd, dfd = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDONLY)
    try:
        return _same_bytes(sfd, dfd, start, end)
    finally:
        os.close(sfd)
        os.close(dfd)


def _checkpoint(plan: EditPlan, out: Path, exp: Patches, progress: bool) -> StructureResult:
    """Each weight file: the header and every tensor no patch touches byte-identical to the source's; each
    patched tensor equal to the source's with the writer's patches applied.

    The byte-identical ranges (nearly every byte) are compared by a pool of threads, one per core: reads
    of source and artifact overlap each other and the main thread's patched tensors (``os.pread`` releases
    the GIL), and memory stays at two 16 MiB chunks per thread beside one edited tensor."""
    ckpt = plan.checkpoint
    res = StructureResult(str(out), "checkpoint", 0, 0, 0)
    stream = PatchStream(exp.patches)
    total = sum((ckpt.path / f).stat().st_size for f in exp.files)
    checks: list[tuple[Future[bool] | bool, str]] = []  # in file order, so the messages keep it
    with bar(total, "verify structure", "B", progress) as pbar, ThreadPoolExecutor(os.cpu_count() or 1) as pool:

        def same(src: Path, dst: Path, start: int, end: int, message: str) -> None:
            job = pool.submit(_same_range, src, dst, start, end)
            job.add_done_callback(lambda _, n=end - start: pbar.update(n))
            checks.append((job, message))

        for f in exp.files:
            src, dst = ckpt.path / f, out / f
            if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
                res.mismatches.append(f"{f}: missing or of another size")
                stream.skip(f)
                continue
            h = read_header(src)
            same(src, dst, 0, h.data_start, f"{f}: header differs")
            sfd, dfd = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDONLY)
            try:
                patches, pending, need = stream.of(f), None, True
                for name, info in sorted(h.tensors.items(), key=lambda kv: kv[1].start):
                    res.tensors_checked += 1
                    res.bytes_compared += info.nbytes
                    inside = []  # this tensor's patches (by offset), fetched only when needed: one tensor in memory
                    while True:
                        if need:
                            pending, need = next(patches, None), False
                        if pending is None or pending.offset >= info.end:
                            break
                        inside.append(pending)
                        covered = pending.offset + len(memoryview(pending.data).cast("B"))
                        pending, need = None, True
                        if covered >= info.end:
                            break
                    if not inside:
                        same(src, dst, info.start, info.end, f"{name}: changed, but the plan does not edit it")
                        continue
                    want = bytearray(os.pread(sfd, info.nbytes, info.start))
                    for q in inside:
                        data = memoryview(q.data).cast("B")
                        want[q.offset - info.start : q.offset - info.start + len(data)] = data
                    ok = os.pread(dfd, info.nbytes, info.start) == want
                    checks.append((ok, f"{name}: not the source scaled as planned"))
                    res.edited_tensors += ok
                    pbar.update(info.nbytes)
                    del want, inside
                left = ([pending] if pending is not None and not need else []) + list(patches)  # lets the stream go on
                if left:
                    raise RuntimeError(f"{f}: the writer patches bytes outside every tensor")  # a bug, never input
            finally:
                os.close(sfd)
                os.close(dfd)
        res.mismatches += [message for job, message in checks if not (job if isinstance(job, bool) else job.result())]
    _copied_files(plan, out, exp, res)
    return res


def _copied_files(plan: EditPlan, out: Path, exp: Patches, res: StructureResult) -> None:
    """Every file the edit copied (config, generation config, tokenizer, chat template, the index) is
    byte-identical to the source's, and the folder holds nothing else but hedit's own files: a changed
    ``rms_norm_eps`` or chat template changes the model as surely as a changed tensor."""
    ckpt = plan.checkpoint
    for name in exp.copied:
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
    _nothing_else(out, {*exp.copied, *exp.files}, res, "in the edit, but neither copied from the source nor")


def _built(plan: EditPlan, folder: Path, exp: Built) -> StructureResult:
    """An adapter: every tensor equal to the writer's, ``adapter_config.json`` the one the plan implies
    (rank, scaling, targets: a changed ``lora_alpha`` rescales the whole edit), and nothing else."""
    from safetensors.torch import load_file

    config_file, weights = exp.files
    got = load_file(folder / weights)
    res = StructureResult(str(folder), "adapter", len(got), 0, sum(t.numel() * t.element_size() for t in got.values()))
    want = exp.tensors
    for name in sorted(set(want) | set(got)):
        if name not in got or name not in want:
            res.mismatches.append(f"{name}: {'missing' if name not in got else 'not in the plan'}")
        elif not torch.equal(got[name], want[name]):
            res.mismatches.append(f"{name}: not the factor the plan implies")
        else:
            res.edited_tensors += 1
    cfg = read_json(folder / config_file)
    config = exp.config
    if "peft_type" in config:  # PEFT's: the base model's name is the user's to set; its sets in any order
        config = canonical_config(config | {"base_model_name_or_path": cfg.get("base_model_name_or_path")})
        cfg = canonical_config(cfg) if isinstance(cfg, dict) else cfg
    if config != cfg:
        keys = sorted(k for k in set(config) | set(cfg) if k not in config or k not in cfg or config[k] != cfg[k])
        res.mismatches.append(f"{config_file}: not the one the plan implies ({', '.join(keys[:5])} differ)")
    _nothing_else(folder, set(exp.files), res, "in the adapter folder, but not")
    return res


def _nothing_else(folder: Path, made: set[str], res: StructureResult, what: str) -> None:
    """A mismatch for every entry of ``folder`` that is neither in ``made`` nor one of hedit's own files."""
    for p in sorted(folder.iterdir()):
        if p.name not in made | {PROVENANCE, CARD, "evidence"}:
            res.mismatches.append(f"{p.name}: {what} written by hedit")


def _gguf_lora(source, neurons, alpha, adapter: Path, allow_negative: bool) -> StructureResult:
    """A gguf-lora adapter: its metadata (type, architecture, ``adapter.lora.alpha``, on which llama.cpp's
    scale depends) and every factor equal to what the gguf-lora writer recomputes from the source, and no
    tensor beyond them (a stray pair would be applied too)."""
    import gguf
    import numpy as np

    path = adapter / "adapter.gguf" if adapter.is_dir() else adapter
    if not path.is_file():
        raise HeditError(f"gguf-lora adapter not found: {path}")
    sidecar = adapter / PROVENANCE if adapter.is_dir() else Path(f"{adapter}{SIDECAR}")
    target = _target(adapter, sidecar)
    if target == "auto":
        raise HeditError(f"{sidecar} does not say which target the adapter used")
    plan = make_plan(source, neurons, alpha, allow_negative, target)
    exp = get_writer("gguf-lora").expected(plan)
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # gguf-py raises ValueError, struct.error, ... on a damaged file
        raise HeditError(f"{path} is not a readable GGUF file ({e})") from None
    got = {t.name: t for t in reader.tensors}
    res = StructureResult(str(path), "gguf-lora adapter", len(got), 0, path.stat().st_size)
    for key, want in exp.config.items():
        kv = reader.get_field(key)
        value = kv.contents() if kv is not None else None
        if value != want:
            res.mismatches.append(f"{key}: {value!r}, the plan implies {want!r}")
    for name in sorted(set(got) | set(exp.tensors)):
        if name not in got or name not in exp.tensors:
            res.mismatches.append(f"{name}: {'missing' if name not in got else 'not in the plan'}")
            continue
        t, want = got[name], exp.tensors[name]
        data = np.asarray(t.data).reshape(want.shape) if t.data.size == want.size else None
        if t.tensor_type != gguf.GGMLQuantizationType.F32 or data is None or not np.array_equal(data, want):
            res.mismatches.append(f"{name}: not the factor the plan implies")
        else:
            res.edited_tensors += 1
    if adapter.is_dir():
        _nothing_else(adapter, {path.name}, res, "in the adapter folder, but not")
    return res


def _gguf(source: Path, neurons, alpha, edited: Path, allow_negative: bool) -> StructureResult:
    """A GGUF file: every byte outside the writer's patches identical to the source's, every patch in place."""
    out = edited / source.name if edited.is_dir() else edited
    sidecar = edited / PROVENANCE if edited.is_dir() else Path(f"{edited}{SIDECAR}")
    target = _target(edited, sidecar)
    plan = make_plan(source, neurons, alpha, allow_negative, "down" if target == "auto" else target)
    if not out.is_file() or out.stat().st_size != source.stat().st_size:
        raise HeditError(f"{out} is missing or not the size of {source}")
    if out.resolve() == source.resolve():
        raise HeditError(f"--edited {edited} is the source itself; give the GGUF hedit edit wrote")
    if not sidecar.is_file():
        raise HeditError(
            f"{out} has no {sidecar.name} beside it (the provenance hedit edit writes): it is not a GGUF hedit "
            "wrote, or its sidecar was not copied with it"
        )
    if target == "auto":
        raise HeditError(f"{sidecar} does not say which target the edit used")
    res = StructureResult(str(out), "gguf", len(plan.gguf.tensors), 0, source.stat().st_size)
    records: list = []
    sfd, dfd = os.open(source, os.O_RDONLY), os.open(out, os.O_RDONLY)
    try:
        pos, size = 0, source.stat().st_size
        for patch in sorted(get_writer("gguf").expected(plan, records).patches, key=lambda q: q.offset):
            if not _same_bytes(sfd, dfd, pos, patch.offset):
                res.mismatches.append(f"bytes {pos}..{patch.offset} changed, but the plan does not edit them")
            if os.pread(dfd, len(patch.data), patch.offset) != patch.data:
                res.mismatches.append(f"bytes at {patch.offset}: not the source's edited as planned")
            pos = patch.offset + len(patch.data)
        if not _same_bytes(sfd, dfd, pos, size):
            res.mismatches.append(f"bytes {pos}..{size} changed, but the plan does not edit them")
    finally:
        os.close(sfd)
        os.close(dfd)
    res.edited_tensors = len(records)
    return res
