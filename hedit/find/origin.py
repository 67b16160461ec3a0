"""`hedit origin`: do the H-neurons already exist in the pre-trained base model? (The paper's third claim.)

1. **Parameter drift.** For every neuron of every layer, how much its weights changed from base to instruct:
   the neuron's gate row, up row and down column taken together as one vector v, drift = 1 - cos(v_base,
   v_instruct), with the relative L2 change ||v_instruct - v_base|| / ||v_base|| beside it. Each neuron's
   normalized rank of drift within the whole model (0 = changed least, 1 = most). The H-neurons' mean
   rank is set against random neuron sets with the same count in each layer (how many draws have a mean
   rank as low: a one-sided test of "lower than chance") and given a bootstrap interval. Streamed layer
   by layer from the two checkpoints' files: neither model is ever loaded, memory is one layer's MLP.
2. **Probe transfer.** CETT of the base model on the instruct model's own responses (the same token ids,
   from ``identify``'s work folder), scored on the held-out rows of the same split by the probe fitted on
   the instruct model's features, by the H-neurons alone and by random neurons. With base = instruct the
   figures equal the probe's own held-out ones, exactly.

Pairs of different architecture or shape are refused in one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hedit.config import BATCH
from hedit.errors import HeditError
from hedit.io.atomic import atomic_write_text, check_work, save_png
from hedit.io.checkpoint import Checkpoint, open_checkpoint
from hedit.io.jsonfile import expect, read_json
from hedit.io.safetensors_header import read_tensor, slot_info
from hedit.neurons import NeuronSet
from hedit.progress import bar

REPORT = "origin.json"


def _read(ckpt: Checkpoint, layer: int, which: str) -> torch.Tensor:
    group = ckpt.tensors(layer, which)
    if "weight" not in group:
        raise HeditError(f"{ckpt.path} is quantized; hedit compares unquantized base and instruct checkpoints")
    f, info = group["weight"]
    return _read_info(ckpt, f, info)


def _read_info(ckpt: Checkpoint, f: str, info) -> torch.Tensor:
    fd = os.open(ckpt.path / f, os.O_RDONLY)
    try:
        return read_tensor(fd, info).to(torch.float32)
    finally:
        os.close(fd)


def neuron_vectors(ckpt: Checkpoint, layer: int) -> torch.Tensor:
    """[intermediate, 3 * hidden]: each neuron's gate row, up row and down column, one layer."""
    return site_vectors(ckpt, layer)


def site_vectors(ckpt: Checkpoint, site) -> torch.Tensor:
    """[width, 3 * hidden]: each neuron's gate row, up row and down column at a site (a layer, or in a
    mixture of experts (layer, expert): read through ``Checkpoint.locus``, either expert layout)."""
    layer, expert = (site, None) if isinstance(site, int) else site

    def matrix(loc) -> torch.Tensor:
        return _read_info(ckpt, loc.file, slot_info(loc.info, loc.slot))

    def pick(m: torch.Tensor, axis: int, offset: int, stride: int, width: int) -> torch.Tensor:
        part = slice(offset, offset + stride * width, stride)  # a view: no copy of the matrix
        return m[part] if axis == 0 else m[:, part].T  # [width, hidden]

    down_loc = ckpt.locus(site, "down")
    down = matrix(down_loc)
    width = down.shape[down_loc.axis]
    down = down.T if down_loc.axis == 1 else down
    up_loc = ckpt.locus(site, "up")
    up_m = matrix(up_loc)
    up = pick(up_m, up_loc.axis, up_loc.offset, up_loc.stride, width)
    if up_loc.offset:  # gate and up in one tensor (fused, stacked or interleaved): the gate comes first
        gate = pick(up_m, up_loc.axis, 0, up_loc.stride, width)
    elif expert is None:
        gate = _read(ckpt, layer, "gate")
    else:
        gate = _gate_of(ckpt, site, width)
    return torch.cat([gate, up, down], dim=1)


def _gate_of(ckpt: Checkpoint, site, width: int) -> torch.Tensor:
    """A shared expert's or a per-expert tensor's gate rows (its own tensor)."""
    layer, expert = site
    moe = ckpt.arch.moe
    name = (
        f"{moe.shared['module']}.gate_proj.weight"
        if expert == "shared"
        else moe.per_expert["gate"].format(expert=expert)
    )
    f, info = ckpt.inside_tensor(layer, [name], f"expert {expert}'s gate projection")
    return _read_info(ckpt, f, info)[:width]


def sites_of(ckpt: Checkpoint):
    """The ``hedit.find.columns.Columns`` of a checkpoint: its layers, or a mixture's sites."""
    from hedit.find.columns import Columns

    return Columns.dense(ckpt.num_layers, ckpt.intermediate_size) if ckpt.experts is None else Columns.of(ckpt.experts)


def check_pair(base: Checkpoint, instruct: Checkpoint) -> None:
    a = (base.model_type, base.num_layers, base.intermediate_size)
    b = (instruct.model_type, instruct.num_layers, instruct.intermediate_size)
    if a != b or base.experts != instruct.experts:
        raise HeditError(
            f"base and instruct differ: {a[0]} {a[1]}x{a[2]} against {b[0]} {b[1]}x{b[2]}; origin "
            "compares two versions of one architecture and shape"
        )
    if base.experts is not None:
        for site in sites_of(base).sites:
            for which in ("down", "up"):
                if base.locus(site, which).info.shape != instruct.locus(site, which).info.shape:
                    raise HeditError(f"base and instruct differ in the shape of {which} at {site}")
        return
    for layer in range(base.num_layers):
        for which in ("down", "up") + (() if base.arch.up_fused else ("gate",)):
            sa, sb = (c.tensors(layer, which).get("weight") for c in (base, instruct))
            if sa is None or sb is None or sa[1].shape != sb[1].shape:
                raise HeditError(f"base and instruct differ in layer {layer}'s {base.arch.module(which)} shape")


def drift(base: Checkpoint, instruct: Checkpoint, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(1 - cosine, relative L2) per neuron, flat over ``sites_of(base)`` (a dense model: layer-major,
    layer * intermediate + index), streamed one site at a time."""
    columns = sites_of(base)
    cos = np.zeros(columns.total)
    rel = np.zeros_like(cos)
    with bar(len(columns.sites), "origin: drift", "site", progress) as pbar:
        for site, lo in zip(columns.sites, columns.offsets):
            a, b = site_vectors(base, site), site_vectors(instruct, site)
            c = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)
            cos[lo : lo + len(c)] = (1 - c).clamp_min(0).double().numpy()
            rel[lo : lo + len(c)] = ((b - a).norm(dim=1) / a.norm(dim=1).clamp_min(1e-12)).double().numpy()
            del a, b
            pbar.update(1)
    return cos, rel


def normalized_ranks(values: np.ndarray) -> np.ndarray:
    """Each value's rank among all, scaled to [0, 1] (0 = smallest; ties share their mean rank)."""
    from scipy.stats import rankdata

    flat = values.ravel()
    return ((rankdata(flat) - 1) / max(len(flat) - 1, 1)).reshape(values.shape)


def compare_to_random(ranks: np.ndarray, chosen: dict, columns, draws: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The chosen neurons' mean rank, its bootstrap 95% interval, and the random sets' (same count at each
    site, disjoint from the chosen): their mean and spread, and the share with a mean rank as low.
    ``ranks`` flat over ``columns``; ``chosen``: site -> indices."""
    rng = np.random.default_rng(seed)
    mine = ranks[_flat(chosen, columns)]
    boot = rng.choice(mine, (1000, len(mine))).mean(axis=1)
    rand = np.zeros(draws)
    pools = {
        site: columns.offset(site) + np.setdiff1d(np.arange(columns.width(site)), idx) for site, idx in chosen.items()
    }
    for d in range(draws):
        rand[d] = np.concatenate(
            [ranks[rng.choice(pools[site], len(idx), replace=False)] for site, idx in chosen.items()]
        ).mean()
    return {
        "neurons": int(len(mine)),
        "mean_rank": float(mine.mean()),
        "mean_rank_ci95": [float(v) for v in np.percentile(boot, [2.5, 97.5])],
        "random_mean_rank": {"mean": float(rand.mean()), "std": float(rand.std()), "draws": draws},
        "p_lower_than_random": float((np.sum(rand <= mine.mean()) + 1) / (draws + 1)),
    }


def _flat(chosen: dict, columns) -> np.ndarray:
    return np.concatenate([columns.offset(site) + np.asarray(idx, dtype=np.int64) for site, idx in chosen.items()])


def plot(ranks: np.ndarray, chosen: dict, columns, report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = ranks[_flat(chosen, columns)]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.hist(ranks.ravel(), bins=50, color="#95a5a6", density=True, label="all neurons")
    ax.hist(mine, bins=min(20, max(5, len(mine))), color="#c0392b", alpha=0.7, density=True, label="H-neurons")
    ax.axvline(report["mean_rank"], color="#c0392b", lw=1.2)
    ax.axvline(report["random_mean_rank"]["mean"], color="#34495e", lw=1.0, ls="--", label="random sets' mean")
    ax.set(
        xlabel="normalized rank of parameter drift, base -> instruct (0 = least changed)",
        ylabel="density",
        title=f"H-neurons: mean rank {report['mean_rank']:.3f} (p = {report['p_lower_than_random']:.3g})",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path, 110)
    plt.close(fig)


def probe_transfer(
    identify_work: Path, base_model: str, out: Path, batch_size: int = BATCH, device: str = "cpu", progress: bool = True
) -> dict[str, Any]:
    """The base model's CETT on the instruct model's own responses, scored on the held-out rows of the same
    split by the instruct-trained probe (refitted at its chosen C), the H-neurons alone and random neurons."""
    from hedit.config import ProbeConfig
    from hedit.find.collect import read_responses
    from hedit.find.features import META, extract, features_columns, open_features
    from hedit.find.labels import dataset
    from hedit.find.probe import baseline, subset_scores, with_interval
    from hedit.model.builtin import resolve_model
    from hedit.model.load import load_model, load_tokenizer

    filtered, feats = identify_work / "filtered.jsonl", identify_work / "features"
    report_path = identify_work / "report.json"
    if not (feats / META).is_file() or not report_path.is_file() or not filtered.is_file():
        raise HeditError(f"{identify_work} is not an identify work folder (filtered.jsonl, features/, report.json)")
    rep = expect(read_json(report_path), dict, str(report_path))
    meta, rows, mat = open_features(feats)
    _, records = read_responses(filtered)
    path = resolve_model(base_model)
    tok = load_tokenizer(path)
    if tok is None:
        raise HeditError(f"{path} has no tokenizer; the probe transfer needs one")
    base_feats = out / "base-features"
    extract(
        load_model(path, device=device),
        tok,
        records,
        base_feats,
        str(base_model),
        tuple(meta["regions"]),
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    bmeta, brows, bmat = open_features(base_feats)
    if (bmeta["num_layers"], bmeta["intermediate_size"]) != (meta["num_layers"], meta["intermediate_size"]) or [
        (r["question_id"], r["region"]) for r in brows
    ] != [(r["question_id"], r["region"]) for r in rows]:
        raise HeditError("the base model's features do not line up with the instruct model's (another shape?)")
    cfg = ProbeConfig(mode=rep["mode"], c_grid=(rep["C"],), grow_c=0, seed=ProbeConfig().seed)
    ds = dataset(rows, mat, cfg.mode, seed=cfg.seed)
    base_ds = dataset(brows, bmat, cfg.mode, seed=cfg.seed)
    from hedit.find.l1 import fit_l1

    fit = fit_l1(ds.x_train, ds.y_train, rep["C"], cfg.seed)
    cols = np.flatnonzero(fit.coef > 0)
    mixed = type(ds)(ds.x_train, ds.y_train, base_ds.x_test, base_ds.y_test, ds.split)
    return {
        "heldout_answers": int(len(base_ds.y_test)),
        "probe": with_interval(base_ds.y_test, fit.predict_proba(base_ds.x_test), cfg.seed),
        "h_neurons_only": with_interval(base_ds.y_test, subset_scores(mixed, cols, cfg.seed), cfg.seed),
        "random_neurons_only": baseline(mixed, cols, features_columns(meta), cfg.random_draws, cfg.seed),
        "instruct_heldout": rep["heldout"],
    }


def run_origin(
    base: str,
    instruct: str,
    neurons: str | Path | NeuronSet,
    out: str | Path,
    identify_work: str | Path | None = None,
    draws: int = 2000,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``origin.json`` and ``drift.png`` (and, with ``identify_work``, the probe transfer) into ``out``."""
    from hedit.model.builtin import resolve_model

    b, i = open_checkpoint(resolve_model(base)), open_checkpoint(resolve_model(instruct))
    check_pair(b, i)
    ns = neurons if isinstance(neurons, NeuronSet) else NeuronSet.load(neurons)
    ns.check_model(i.model_type, i.num_layers, i.intermediate_size, i.experts)
    if not ns.neurons:
        raise HeditError("the neurons file lists no neurons")
    out = Path(out)
    inputs = [("base model", b.path), ("model", i.path), ("identify work folder", identify_work)]
    check_work(out, inputs + ([] if isinstance(neurons, NeuronSet) else [("neurons file", neurons)]))
    out.mkdir(parents=True, exist_ok=True)
    cos, rel = drift(b, i, progress)
    ranks = normalized_ranks(cos)
    chosen = ns.by_layer()
    columns = sites_of(i)
    report: dict[str, Any] = {
        "base": str(base),
        "instruct": str(instruct),
        "model_type": i.model_type,
        "drift": "1 - cosine of [gate row, up row, down column]",
        "drift_all": {"mean": float(cos.mean()), "median": float(np.median(cos))},
        "h_neurons": compare_to_random(ranks, chosen, columns, draws, seed),
        "h_neurons_relative_l2": float(np.mean(rel[_flat(chosen, columns)])),
        "relative_l2_all": float(rel.mean()),
    }
    report["per_neuron"] = [
        columns.where(int(c)) | {"drift": float(cos[c]), "rank": float(ranks[c])} for c in _flat(chosen, columns)
    ]
    if identify_work is not None:
        report["probe_transfer"] = probe_transfer(Path(identify_work), base, out, device=device, progress=progress)
    atomic_write_text(out / REPORT, json.dumps(report, indent=2) + "\n")
    plot(ranks, chosen, columns, report["h_neurons"], out / "drift.png")
    return report
