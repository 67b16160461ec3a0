"""`hedit export-adapter --format gguf-lora`: a LoRA adapter in GGUF, as llama.cpp loads it (`--lora FILE`,
`--lora-scaled FILE S`; llama-cpp-python `lora_path`/`lora_scale`; Ollama's `ADAPTER`), over the user's
own (quantized) GGUF.

llama.cpp's adapter contract (``llama_adapter_lora_init``): ``general.type`` = "adapter",
``general.architecture`` the base model's, ``adapter.type`` = "lora", ``adapter.lora.alpha``; for each
base tensor ``NAME`` a pair ``NAME.lora_a`` [rank, n_in] and ``NAME.lora_b`` [n_out, rank] (numpy order)
with n_in, n_out the base tensor's; the output gains ``scale * B (A x)``, where ``scale = S * alpha /
rank``, or ``S`` when alpha is 0. hedit writes alpha 0, so every layer's scale is S whatever its rank.

The edit is linear in (alpha - 1): with ``down``, B = (alpha_j - 1) W_down[:, j] and A selects activation j;
with ``up``, A = W_up[j, :] and B puts (alpha_j - 1) on output j. Loaded at scale S, the adapter applies
alpha' = 1 + S (alpha - 1): written at alpha 0, S = 1 silences, S = 0.5 halves, S = -1 doubles, S = -2
triples. The factors come from the source's own weights, dequantized (gguf-py) for a GGUF source, so on
that GGUF the adapter adds exactly what scaling the dequantized column or row does (up to the factors'
float32 products). From a safetensors source they are the float weights: exact against a float GGUF of
that model, close to it on a quantized one.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from hedit.edit.card import card
from hedit.edit.plan import EditPlan
from hedit.edit.writers import Built, Report, TensorEdit, Writer
from hedit.errors import HeditError
from hedit.neurons import split_site

LORA_ALPHA = 0.0  # llama.cpp: 0 means scale = S for every tensor, whatever its rank


def scale_to_alpha(scale: float, alpha: float) -> float:
    """The alpha an adapter written at ``alpha`` applies when loaded with ``--lora-scaled FILE scale``."""
    return 1.0 + scale * (alpha - 1.0)


def _gguf_rows(plan: EditPlan, name: str, rows: list[int]) -> np.ndarray:
    """Rows of a GGUF tensor (numpy order [rows, row length]), dequantized to float32."""
    from hedit.edit.gguf import _dequant, _rows

    t = plan.gguf.tensors[name]
    raw = np.asarray(_rows(plan.source, t)[rows])
    return _dequant(raw, t.type_name).reshape(len(rows), -1).astype(np.float32)


def _gguf_columns(plan: EditPlan, name: str, cols: list[int]) -> np.ndarray:
    """Columns of a GGUF tensor [rows, len(cols)], dequantized to float32 (the tensor read row by row)."""
    from hedit.edit.gguf import _dequant, _rows

    t = plan.gguf.tensors[name]
    mm = _rows(plan.source, t)
    out = np.empty((t.rows, len(cols)), dtype=np.float32)
    for r0 in range(0, t.rows, 1024):
        block = _dequant(np.asarray(mm[r0 : r0 + 1024]), t.type_name).reshape(-1, t.shape[0])
        out[r0 : r0 + len(block)] = block[:, cols]
    return out


def _checkpoint_slices(plan: EditPlan, layer: int, which: str, axis: int, index: list[int]) -> np.ndarray:
    from hedit.io.safetensors_header import read_slices

    ckpt = plan.checkpoint
    file, info = ckpt.site_tensors(layer, which)["weight"]
    return read_slices(ckpt.path / file, info, axis, index).float().numpy()


class GgufLora(Writer):
    name, kind, single_file = "gguf-lora", "adapter", True
    suffix = ".gguf"

    def check(self, plan: EditPlan) -> None:
        if plan.arch.moe is not None:
            raise HeditError("the gguf-lora format does not take mixtures of experts yet")
        if plan.gguf is None and plan.arch.gguf_arch is None:
            raise HeditError(f"llama.cpp has no LoRA tensor names hedit knows for {plan.model_type}")
        if plan.gguf is None and plan.checkpoint.quant_method is not None:
            raise HeditError("a gguf-lora adapter is built from a float checkpoint or a GGUF file")

    def arch_name(self, plan: EditPlan) -> str:
        if plan.gguf is not None:
            return str(plan.gguf.metadata.get("general.architecture"))
        return plan.arch.gguf_arch

    def build(self, plan: EditPlan) -> tuple[dict[str, np.ndarray], list[TensorEdit]]:
        """{tensor name: factor} in numpy order, and one record per adapted base tensor."""
        tensors, records = {}, []
        inter = plan.intermediate_size
        for site, pairs in sorted(plan.layers.items()):
            layer, _ = split_site(site)
            pairs = [(j, a) for j, a in pairs if a != 1.0]
            if not pairs:
                continue
            base = plan.arch.gguf_tensor(layer, plan.target)
            delta = np.array([a - 1.0 for _, a in pairs], dtype=np.float32)
            if plan.target == "down":
                cols = [j for j, _ in pairs]
                w = (
                    _gguf_columns(plan, base, cols)
                    if plan.gguf is not None
                    else _checkpoint_slices(plan, layer, "down", 1, cols)
                )
                a = np.zeros((len(cols), inter), dtype=np.float32)
                a[np.arange(len(cols)), cols] = 1.0
                b = w * delta[None, :]
            else:
                rows = [plan.arch.up_row(j, inter) for j, _ in pairs]
                a = (
                    _gguf_rows(plan, base, rows)
                    if plan.gguf is not None
                    else _checkpoint_slices(plan, layer, "up", 0, rows)
                )
                n_out = (
                    plan.gguf.tensors[base].rows
                    if plan.gguf is not None
                    else plan.checkpoint.site_tensors(layer, "up")["weight"][1].shape[0]
                )
                b = np.zeros((n_out, len(rows)), dtype=np.float32)
                b[rows, np.arange(len(rows))] = delta
            tensors[f"{base}.lora_a"], tensors[f"{base}.lora_b"] = a, b
            records.append(TensorEdit(base, "F32", len(pairs), int(a.nbytes + b.nbytes), 0.0))
        if not tensors:
            raise HeditError("every chosen neuron has alpha 1: the adapter would change nothing")
        return tensors, records

    def expected(self, plan: EditPlan) -> Built:
        tensors, _ = self.build(plan)
        return Built(tensors, self.metadata(plan))

    def metadata(self, plan: EditPlan) -> dict[str, Any]:
        return {
            "general.type": "adapter",
            "general.architecture": self.arch_name(plan),
            "adapter.type": "lora",
            "adapter.lora.alpha": LORA_ALPHA,
        }

    def write(self, plan: EditPlan, dst: Path, progress: bool, name: str) -> Report:
        import gguf

        folder = dst.is_dir()
        file_name = "adapter.gguf" if folder else name
        path = dst / file_name if folder else dst
        tensors, records = self.build(plan)
        w = gguf.GGUFWriter(str(path), self.arch_name(plan))
        w.add_type("adapter")
        w.add_string("adapter.type", "lora")
        w.add_float32("adapter.lora.alpha", LORA_ALPHA)
        w.add_string("general.name", f"hedit H-neuron edit of {plan.base_model}")
        for tname, t in tensors.items():
            w.add_tensor(tname, np.ascontiguousarray(t))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        alphas = sorted({a for pairs in plan.layers.values() for _, a in pairs})
        report = Report("", file_name if folder else "", self.name, plan.target, records)
        report.info = {
            "format": "gguf-lora",
            "target": plan.target,
            "gguf_file": file_name,
            "lora_alpha": LORA_ALPHA,
            "ranks": {r.name: r.neurons for r in records},
            "scale_to_alpha": "alpha' = 1 + S * (alpha - 1) for --lora-scaled FILE S",
            "tensors": [asdict(r) for r in records],
        }
        if len(alphas) == 1:
            a = alphas[0]
            report.info["scale_to_alpha"] = f"alpha' = 1 + S * ({a:g} - 1) for --lora-scaled FILE S: " + ", ".join(
                f"S={s:g} -> {scale_to_alpha(s, a):g}" for s in (1, 0.5, -1, -2)
            )
        return report

    def card(self, plan: EditPlan, out_name: str, ev: dict[str, Any], plots: list[str], report: Report) -> str:
        base = plan.source.name if plan.gguf is not None else f"{plan.base_model} as GGUF"
        use = f"""llama.cpp (S chooses alpha when the model is served: {report.info["scale_to_alpha"]}):
```bash
llama-cli -m {base} --lora-scaled adapter.gguf 1.0 -p "..."
```
Ollama (a Modelfile):
```
FROM ./{base}
ADAPTER ./adapter.gguf
```
"""
        how = (
            "A GGUF LoRA adapter (F32 factors, one pair per edited tensor, rank = that layer's neuron count, "
            "adapter.lora.alpha 0 so llama.cpp scales every pair by S alone) over the unmodified base GGUF."
        )
        return card(plan, "gguf", ["hedit", "h-neurons", "gguf", "lora"], out_name, how, use, ev, plots)
