"""CETT of a mixture of experts, stored sparse.

For a routed expert e of an MoE layer, neuron j at token t:

    CETT = |g_e,t * z_e,j,t| * ||W_down_e[:, j]|| / ||MoE layer output at t||

with g_e,t the router's weight of e at t, z the expert's activation (its down projection's input), and 0
at tokens the router did not send to e. A shared expert's neuron is the same with the shared expert's own
gate for g (a sigmoid in qwen2_moe; 1 where there is none), and a dense layer's neuron is today's CETT.
Each is averaged over a region's tokens as for dense models.

Most expert neurons are 0 for any one answer (top-8 of 128 experts), so rows are written as CSR
(``csr.data.f32``, ``csr.indices.i32``, ``csr.indptr.i64``): only the experts routed somewhere in the
region have entries. ``routing`` is CSR too: per row and (MoE layer, expert), the share of the region's
tokens the router sent to that expert, from which the report says how often each H-neuron's expert was
routed on the answers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from hedit.engine.experts import ExpertsScope, down_column_norms
from hedit.engine.intervention import experts_shape, site_module
from hedit.find.columns import Columns
from hedit.registry import get_architecture

CSR = ("csr.data.f32", "csr.indices.i32", "csr.indptr.i64")
ROUTING = ("routing.data.f32", "routing.indices.i32", "routing.indptr.i64")


class MoeCettHooks:
    """Hooks that reduce a mixture's CETT to per-region means for a batch, site by site."""

    def __init__(self, model: torch.nn.Module):
        self.shape = experts_shape(model)
        self.columns = Columns.of(self.shape)
        self.moe_layers = [layer for layer in range(self.shape.num_layers) if layer not in self.shape.dense]
        arch = get_architecture(model.config.model_type)
        self.weights: torch.Tensor | None = None  # [regions, batch, tokens]
        self.out: dict = {}  # dense layer or shared expert site -> [R, B, width]
        self.experts_out: dict[int, torch.Tensor] = {}  # MoE layer -> [R, B, experts, I]
        self.routed: dict[int, torch.Tensor] = {}  # layer -> [R, B, experts] share of region tokens
        self._numpy = None
        self._captured: dict[int, list] = {}
        self._shared: dict[int, tuple] = {}
        self._gate: dict[int, torch.Tensor] = {}
        self.handles, self.scopes = [], []
        for layer in range(self.shape.num_layers):
            if layer in self.shape.dense:
                mod, _ = site_module(model, layer)
                norm = _colnorm(mod)
                self.handles.append(mod.register_forward_hook(self._dense_hook(layer, norm)))
                continue
            experts, _ = site_module(model, (layer, 0))
            block = model.get_submodule(arch.site_module(layer, 0)[0].rsplit(".", 1)[0])  # the experts' parent
            norms = down_column_norms(experts, arch.moe.transposed)
            scope = ExpertsScope(experts, capture=self._capture(layer, norms), routing=arch.moe.routing)
            self.scopes.append(scope.__enter__())
            self.handles.append(block.register_forward_hook(self._block_hook(layer)))
            if self.shape.shared_intermediate_size:
                shared, _ = site_module(model, (layer, "shared"))
                self.handles.append(shared.register_forward_hook(self._shared_hook(layer, _colnorm(shared))))
                gate = arch.moe.shared.get("gate")
                if gate:
                    g = model.get_submodule(f"{arch.layers_module}.{layer}.{gate}")
                    self.handles.append(g.register_forward_hook(self._gate_hook(layer)))

    def _flat_weights(self, device) -> torch.Tensor:
        r, b, t = self.weights.shape
        return self.weights.to(device).reshape(r, b * t)

    def _dense_hook(self, layer: int, norm: torch.Tensor):
        def hook(module, args, output):
            z = args[0].to(torch.float32).abs()
            ynorm = output.to(torch.float32).norm(dim=-1).clamp_min(1e-12)
            w = self.weights.to(ynorm.device) / ynorm
            self.out[layer] = torch.einsum("rbt,btj->rbj", w, z) * norm.to(z.device)

        return hook

    def _capture(self, layer: int, norms: torch.Tensor):
        def capture(expert: int, tok: torch.Tensor, g: torch.Tensor, z: torch.Tensor) -> None:
            vals = (g.to(torch.float32).unsqueeze(-1) * z.to(torch.float32)).abs() * norms[expert].to(z.device)
            self._captured.setdefault(layer, []).append((expert, tok, vals))

        return capture

    def _shared_hook(self, layer: int, norm: torch.Tensor):
        def hook(module, args, output):
            self._shared[layer] = (args[0].to(torch.float32).abs() * norm.to(args[0].device)).reshape(-1, norm.numel())

        return hook

    def _gate_hook(self, layer: int):
        def hook(module, args, output):
            self._gate[layer] = torch.sigmoid(output.to(torch.float32)).reshape(-1, 1)

        return hook

    def _block_hook(self, layer: int):
        def hook(module, args, output):
            y = output[0] if isinstance(output, tuple) else output
            ynorm = y.to(torch.float32).reshape(-1, y.shape[-1]).norm(dim=-1).clamp_min(1e-12)  # [N]
            w = self._flat_weights(ynorm.device)  # [R, N]
            r, b, t = self.weights.shape
            rows = torch.arange(b * t, device=ynorm.device) // t
            experts, inter = self.shape.num_experts, self.shape.intermediate_size
            captured = self._captured.pop(layer, [])
            acc = torch.zeros(r, b * experts, inter, device=ynorm.device)  # [R, B x E, I]
            routed = torch.zeros(r, b * experts, device=ynorm.device)
            if captured:  # every expert's tokens in one index_add: (row, expert) -> row * E + expert
                tok = torch.cat([t_ for _, t_, _ in captured])
                slot = rows[tok] * experts + torch.cat([torch.full_like(t_, e) for e, t_, _ in captured])
                vals = torch.cat([v for _, _, v in captured]) / ynorm[tok].unsqueeze(-1)
                wt = w[:, tok]  # [R, n]
                acc.index_add_(1, slot, wt.unsqueeze(-1) * vals.unsqueeze(0))
                routed.index_add_(1, slot, wt)
            self.experts_out[layer] = acc.reshape(r, b, experts, inter)
            self.routed[layer] = routed.reshape(r, b, experts)
            if layer in self._shared:
                vals = self._shared.pop(layer) * self._gate.pop(layer, torch.ones(1, 1, device=ynorm.device))
                acc = torch.zeros(r, b, vals.shape[1], device=vals.device)
                acc.index_add_(1, rows, w.unsqueeze(-1) * (vals / ynorm.unsqueeze(-1)).unsqueeze(0))
                self.out[(layer, "shared")] = acc

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        for s in self.scopes:
            s.__exit__()

    def rows(self, r: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(columns, values) of row (region r, item b) over every site, then its routing entries
        (columns over (MoE layer, expert), shares), each sorted by column. Only the experts the router
        sent some of the region's tokens to have entries."""
        if self._numpy is None:  # once per batch: every site's tensor to numpy
            self._numpy = (
                {site: t.cpu().numpy() for site, t in self.out.items()},
                {layer: t.cpu().numpy() for layer, t in self.experts_out.items()},
                {layer: t.cpu().numpy() for layer, t in self.routed.items()},
            )
        out, experts_out, routed = self._numpy
        inter, n = self.shape.intermediate_size, self.shape.num_experts
        cols, vals, rcols, rvals = [], [], [], []
        block = np.arange(inter, dtype=np.int64)
        for layer in range(self.shape.num_layers):
            if layer in self.shape.dense:
                v = out[layer][r, b]
                cols.append(self.columns.offset(layer) + np.arange(len(v)))
                vals.append(v)
                continue
            share = routed[layer][r, b]
            hit = np.flatnonzero(share)
            first = self.columns.offset((layer, 0))
            cols.append((first + hit[:, None] * inter + block).ravel())
            vals.append(experts_out[layer][r, b, hit].ravel())
            k = self.moe_layers.index(layer)
            rcols.append(k * n + hit)
            rvals.append(share[hit])
            if (layer, "shared") in out:
                v = out[(layer, "shared")][r, b]
                cols.append(self.columns.offset((layer, "shared")) + np.arange(len(v)))
                vals.append(v)
        cols_, vals_ = np.concatenate(cols), np.concatenate(vals).astype(np.float32)
        nz = vals_ != 0
        cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
        return cols_[nz], vals_[nz], cat(rcols, np.int64), cat(rvals, np.float32)

    def clear(self) -> None:
        self.out.clear()
        self.experts_out.clear()
        self.routed.clear()
        self._numpy = None


def _colnorm(module: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return module.weight.detach().to(torch.float32).norm(dim=0)


class CsrWriter:
    """Rows appended to three files (values, column indices, row pointers), never all in memory."""

    def __init__(self, folder: Path, names: tuple[str, str, str]):
        self.paths = [folder / n for n in names]
        self.files = [open(p, "xb") for p in self.paths[:2]]
        self.indptr = [0]

    def add(self, cols: np.ndarray, vals: np.ndarray) -> None:
        self.files[0].write(vals.astype(np.float32).tobytes())
        self.files[1].write(cols.astype(np.int32).tobytes())
        self.indptr.append(self.indptr[-1] + len(cols))

    def close(self) -> int:
        for f in self.files:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        np.asarray(self.indptr, dtype=np.int64).tofile(self.paths[2])
        return self.indptr[-1]


def open_csr(folder: Path, names: tuple[str, str, str], shape: tuple[int, int]):
    """A scipy CSR matrix over the memory-mapped files, checked for consistency."""
    from scipy.sparse import csr_matrix

    from hedit.errors import HeditError

    paths = [folder / n for n in names]
    for p in paths:
        if not p.is_file():
            raise HeditError(f"{folder} has no {p.name}")
    indptr = np.fromfile(paths[2], dtype=np.int64)
    nnz = int(indptr[-1]) if len(indptr) else -1
    sizes = (paths[0].stat().st_size // 4, paths[1].stat().st_size // 4)
    if len(indptr) != shape[0] + 1 or sizes != (nnz, nnz) or np.any(np.diff(indptr) < 0):
        raise HeditError(f"{folder}: {names[0]} and its indices do not match {shape[0]} rows (truncated?)")
    data = np.memmap(paths[0], dtype=np.float32, mode="r") if nnz else np.zeros(0, np.float32)
    indices = np.memmap(paths[1], dtype=np.int32, mode="r") if nnz else np.zeros(0, np.int32)
    if nnz and (int(indices.max()) >= shape[1] or int(indices.min()) < 0):
        raise HeditError(f"{folder}: {names[1]} names a column outside the {shape[1]} columns")
    return csr_matrix((data, indices, indptr), shape=shape)
