"""`hedit features`: CETT of every MLP neuron, averaged over answer tokens and over other tokens.

CETT of neuron j at token t = |z_j,t| * ||W_down[:, j]|| / ||down_proj output at t||, z being the
input of ``mlp.down_proj``. A forward hook on each layer's down_proj computes it for the whole padded
batch and reduces it to per-region means right there:

    mean_r[b, j] = ||W[:, j]|| * sum_t m_r[b, t] |z[b, t, j]| / (||y[b, t]|| * n_r[b])

so no [layers x tokens x neurons] tensor is ever kept. Rows go to a float32 memory-mapped matrix
``features.f32`` of shape [rows, layers * intermediate] (layer-major), described by ``meta.json``
and ``rows.jsonl`` (question id, sample, class, label, region, split).

A mixture of experts' features are sparse instead (CSR files, only the experts the router sent some of
a region's tokens to; ``hedit.find.cett_moe``), with the expert neuron's CETT defined there.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hedit import __version__
from hedit.config import BATCH, FeaturesConfig
from hedit.engine.intervention import down_proj_module, experts_shape, model_shape
from hedit.errors import HeditError
from hedit.find.spans import answer_positions
from hedit.io.atomic import check_target
from hedit.io.files import pwrite_all
from hedit.io.jsonfile import expect, loads, read_json
from hedit.model.load import input_device
from hedit.progress import bar
from hedit.score.judge import matched_alias

FEATURES, META, ROWS = "features.f32", "meta.json", "rows.jsonl"


@dataclass
class Item:
    ids: list[int]  # prompt + response
    masks: dict[str, list[int]]  # region -> positions in ids
    row: dict[str, Any]


def region_positions(tokenizer, record: dict, sample: dict) -> dict[str, list[int]]:
    p, r = len(record["prompt_ids"]), sample["response_ids"]
    alias = matched_alias(sample["response"], record["aliases"]) if sample["label"] == "correct" else None
    ans = [p + k for k in answer_positions(tokenizer, r, sample["label"], alias, record.get("question", ""))]
    ans_set = set(ans)
    return {
        "answer": ans,
        "output": list(range(p, p + len(r))),
        "other": [k for k in range(p + len(r)) if k not in ans_set],
    }


def items(tokenizer, records: list[dict], regions: tuple[str, ...], samples_per_question: int) -> list[Item]:
    out = []
    for rec in records:
        for s_i, sample in enumerate(rec["samples"][:samples_per_question]):
            if not sample["response_ids"]:
                continue
            pos = region_positions(tokenizer, rec, sample)
            if not all(pos[r] for r in regions):  # e.g. a response of only filler has no answer tokens
                continue
            meta = {
                "question_id": rec["question_id"],
                "sample": s_i,
                "class": rec.get("class"),
                "label": sample["label"],
                "split": rec.get("split"),
                "answer_tokens": len(pos["answer"]),
                "response_tokens": len(sample["response_ids"]),
            }
            out.append(Item(rec["prompt_ids"] + sample["response_ids"], {r: pos[r] for r in regions}, meta))
    return out


def _column_norms(module: torch.nn.Module) -> torch.Tensor:
    """||W[:, j]|| of a down_proj, also when accelerate keeps its weight offloaded (meta) between calls."""
    from accelerate.utils import align_module_device

    with (
        torch.no_grad(),
        align_module_device(
            module, torch.device("cpu") if module.weight.device.type == "meta" else module.weight.device
        ),
    ):
        return module.weight.detach().to(torch.float32).norm(dim=0)


class CettHooks:
    """Forward hooks that reduce CETT to per-region means for every layer of a batch."""

    def __init__(self, model: torch.nn.Module):
        _, self.layers, self.inter = model_shape(model)
        self.modules = [down_proj_module(model, layer) for layer in range(self.layers)]
        self.colnorm = [_column_norms(m) for m in self.modules]
        self.weights: torch.Tensor | None = None  # [regions, batch, tokens]: m_r / (n_r) per token
        self.out: list[torch.Tensor | None] = [None] * self.layers
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.modules)]

    def _hook(self, layer: int):
        def hook(module, args, output):
            z = args[0].to(torch.float32).abs()
            ynorm = output.to(torch.float32).norm(dim=-1).clamp_min(1e-12)  # [B, T]
            w = self.weights.to(ynorm.device) / ynorm  # [R, B, T]
            self.out[layer] = torch.einsum("rbt,btj->rbj", w, z) * self.colnorm[layer].to(z.device)

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def batch_features(
    model: torch.nn.Module,
    hooks: CettHooks,
    batch: list[Item],
    regions: tuple[str, ...],
    pad_id: int,
    device: str = "cpu",
    collect: bool = True,
) -> torch.Tensor | None:
    """[regions, batch, layers * intermediate] mean CETT, for left-padded sequences (``collect`` False:
    the hooks keep what they computed, as a mixture's sparse hooks do)."""
    width = max(len(it.ids) for it in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    w = torch.zeros((len(regions), len(batch), width), dtype=torch.float32)
    for b, it in enumerate(batch):
        off = width - len(it.ids)
        ids[b, off:] = torch.tensor(it.ids)
        mask[b, off:] = 1
        for r, name in enumerate(regions):
            pos = torch.tensor(it.masks[name], dtype=torch.long) + off
            w[r, b, pos] = 1.0 / len(pos)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    dev = input_device(model)
    hooks.weights = w.to(dev)
    model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev))
    return torch.cat([o.cpu() for o in hooks.out], dim=-1) if collect else None


def model_signature(model: torch.nn.Module, name: str) -> dict[str, Any]:
    model_type, layers, inter = model_shape(model)
    return {"name": name, "model_type": model_type, "num_layers": layers, "intermediate_size": inter}


def features_columns(meta: dict[str, Any]):
    """The ``hedit.find.columns.Columns`` of a features folder's meta."""
    from hedit.find.columns import Columns

    return Columns.from_meta(meta)


def extract(
    model: torch.nn.Module,
    tokenizer,
    records: list[dict],
    out: str | Path,
    model_name: str = "",
    regions: tuple[str, ...] = ("answer", "other"),
    samples_per_question: int = 1,
    batch_size: int = BATCH,
    device: str = "cpu",
    progress: bool = True,
    sources=(),
) -> Path:
    """Write the feature matrix and its row index into the folder ``out`` (which may replace only an
    earlier features folder; ``sources``: the inputs it must not touch, see ``check_place``)."""
    from hedit.io.atomic import atomic_dir

    todo = items(tokenizer, records, regions, samples_per_question)
    if not todo:
        raise HeditError(f"no responses with tokens in every region ({', '.join(regions)}) to extract features from")
    if experts_shape(model) is not None:
        return _extract_sparse(model, tokenizer, todo, out, model_name, regions, batch_size, device, progress, sources)
    sig = model_signature(model, model_name)
    width = sig["num_layers"] * sig["intermediate_size"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(todo)), key=lambda i: len(todo[i].ids))  # similar lengths batch together
    shape = (len(todo) * len(regions), width)
    with atomic_dir(out, overwrite=True, sources=sources, kind="features") as tmp:
        mat = _preallocated(tmp / FEATURES, shape)
        hooks = CettHooks(model)
        try:
            with bar(len(todo), "features", "seq", progress) as pbar:
                for start in range(0, len(order), batch_size):
                    idx = order[start : start + batch_size]
                    feats = batch_features(model, hooks, [todo[i] for i in idx], regions, pad, device)
                    for r in range(len(regions)):
                        for b, i in enumerate(idx):
                            mat[i * len(regions) + r] = feats[r, b].numpy()
                    pbar.update(len(idx))
        finally:
            hooks.remove()
        mat.flush()
        del mat
        with open(tmp / ROWS, "w") as f:
            for it in todo:
                for region in regions:
                    f.write(json.dumps(it.row | {"region": region}) + "\n")
        meta = sig | {
            "hedit_version": __version__,
            "rows": len(todo) * len(regions),
            "columns": width,
            "regions": list(regions),
            "dtype": "float32",
            "layout": "row-major [rows, layers * intermediate]",
        }
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    return Path(out)


def _extract_sparse(model, tokenizer, todo, out, model_name, regions, batch_size, device, progress, sources) -> Path:
    """``extract`` for a mixture of experts: rows as CSR (``hedit.find.cett_moe``), in the order they are
    computed (rows.jsonl follows the same order)."""
    from hedit.find.cett_moe import CSR, ROUTING, CsrWriter, MoeCettHooks
    from hedit.io.atomic import atomic_dir

    sig = model_signature(model, model_name)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(todo)), key=lambda i: len(todo[i].ids))
    with atomic_dir(out, overwrite=True, sources=sources, kind="features") as tmp:
        hooks = MoeCettHooks(model)
        feats, routing = CsrWriter(tmp, CSR), CsrWriter(tmp, ROUTING)
        written = []
        try:
            with bar(len(todo), "features", "seq", progress) as pbar:
                for start in range(0, len(order), batch_size):
                    idx = order[start : start + batch_size]
                    batch_features(model, hooks, [todo[i] for i in idx], regions, pad, device, collect=False)
                    for b, i in enumerate(idx):
                        for r, region in enumerate(regions):
                            cols, vals, rcols, rvals = hooks.rows(r, b)
                            feats.add(cols, vals)
                            routing.add(rcols, rvals)
                            written.append(todo[i].row | {"region": region})
                    hooks.clear()
                    pbar.update(len(idx))
        finally:
            hooks.remove()
            nnz, rnnz = feats.close(), routing.close()
        with open(tmp / ROWS, "w") as f:
            for row in written:
                f.write(json.dumps(row) + "\n")
        cols = hooks.columns
        meta = sig | {
            "hedit_version": __version__,
            "rows": len(written),
            "columns": cols.total,
            "regions": list(regions),
            "dtype": "float32",
            "layout": "csr",
            "nonzeros": nnz,
            "num_experts": hooks.shape.num_experts,
            "sites": cols.to_meta(),
            "routing": {"moe_layers": hooks.moe_layers, "nonzeros": rnnz},
        }
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    return Path(out)


def _preallocated(path: Path, shape: tuple[int, int]) -> np.memmap:
    """A float32 matrix file with every block allocated before it is memory-mapped: on a full disk the
    allocation fails with ENOSPC (one line), where writes through the mapping would raise SIGBUS."""
    size = shape[0] * shape[1] * 4
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if size:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
                    raise OSError(e.errno, e.strerror, str(path)) from None
                _write_zeros(fd, size, path)  # no fallocate here: write the zeros, which a full disk refuses
    finally:
        os.close(fd)
    return np.memmap(path, dtype=np.float32, mode="r+", shape=shape)


def _write_zeros(fd: int, size: int, path: Path) -> None:
    block = bytes(1 << 20)
    pos = 0
    while pos < size:
        n = min(len(block), size - pos)
        try:
            pwrite_all(fd, block[:n], pos)
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(path)) from None
        pos += n


def check_features_model(meta: dict[str, Any], expected: tuple[str, int, int], what: str) -> None:
    """Refuse features whose model (type, layers, intermediate size) is not ``expected``."""
    got = (meta["model_type"], meta["num_layers"], meta["intermediate_size"])
    if got != expected:
        raise HeditError(
            f"{what} come from another model: {got[0]} {got[1]}x{got[2]}, not {expected[0]} {expected[1]}x{expected[2]}"
        )


def open_features(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]], np.memmap]:
    """(meta, rows, matrix) of a features folder, each checked: meta.json complete, one row entry per
    matrix row, and a matrix file of exactly rows x columns float32 values."""
    path = Path(path)
    if not (path / META).is_file():
        raise HeditError(f"{path} is not a hedit features folder (no {META})")
    meta = expect(read_json(path / META), dict, str(path / META))
    for key, kind in (
        ("model_type", str),
        ("num_layers", int),
        ("intermediate_size", int),
        ("rows", int),
        ("columns", int),
    ):
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise HeditError(f"{path / META} is incomplete: '{key}' missing or not {kind.__name__}")
    sparse = meta.get("layout") == "csr"
    width = features_columns(meta).total if sparse else meta["num_layers"] * meta["intermediate_size"]
    if meta["columns"] != width or meta["rows"] < 0:
        raise HeditError(f"{path / META}: columns {meta['columns']} != the model's neurons ({width})")
    if not (path / ROWS).is_file():
        raise HeditError(f"{path} has no {ROWS}")
    rows = []
    with open(path / ROWS, "rb") as f:
        for n, line in enumerate(f, 1):
            row = loads(line, f"{path / ROWS}:{n}")
            if not isinstance(row, dict) or not all(k in row for k in ("question_id", "class", "region")):
                raise HeditError(f"{path / ROWS}:{n}: a row needs question_id, class and region")
            rows.append(row)
    if len(rows) != meta["rows"]:
        raise HeditError(f"{path / ROWS} has {len(rows)} rows, {META} says {meta['rows']}")
    if sparse:
        from hedit.find.cett_moe import CSR, open_csr

        return meta, rows, open_csr(path, CSR, (meta["rows"], meta["columns"]))
    want = meta["rows"] * meta["columns"] * 4
    got = (path / FEATURES).stat().st_size if (path / FEATURES).is_file() else None
    if got != want:
        raise HeditError(
            f"{path / FEATURES} has {got if got is not None else 'no'} bytes, expected {want} "
            "(truncated or from another run)"
        )
    mat = np.memmap(path / FEATURES, dtype=np.float32, mode="r", shape=(meta["rows"], meta["columns"]))
    return meta, rows, mat


def features_from_file(
    model: str,
    responses: str | Path,
    out: str | Path,
    cfg: FeaturesConfig = FeaturesConfig(),
    device: str = "cpu",
    progress: bool = True,
    placement: dict | None = None,
) -> Path:
    """``hedit features``: CETT features of a responses file (filtered, or filtered here) of ``model``.
    ``placement``: ``device_map``, ``max_memory``, ``offload_folder`` for a model larger than one device."""
    from hedit.find.collect import consistent, read_responses
    from hedit.model.builtin import resolve_model
    from hedit.model.load import DTYPES, load_model, load_tokenizer

    header, records = read_responses(responses)
    if header is None:
        raise HeditError(f"responses file not found: {responses}")
    path = resolve_model(model)
    sources = [("responses file", responses), ("model", path)]
    check_target(out, sources, overwrite=True, kind="features")
    if "filtered" not in header:
        records = consistent(records)
    tok = load_tokenizer(path)
    if tok is None:
        raise HeditError(f"{path} has no tokenizer; features needs one")
    lm = load_model(path, DTYPES[cfg.dtype], device=device, **(placement or {}))
    return extract(
        lm,
        tok,
        records,
        out,
        str(model),
        cfg.regions,
        cfg.samples_per_question,
        cfg.batch_size,
        device,
        progress,
        sources,
    )
