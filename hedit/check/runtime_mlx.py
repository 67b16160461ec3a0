"""`hedit verify --runtime mlx`: load an edited MLX checkpoint with mlx-lm (its own environment,
``make mlx-env``) and compare its logits with the runtime intervention on the dequantized MLX weights.

An mlx-lm adapter (``hedit export-adapter --format mlx-lora``) is checked the same way: mlx-lm loads the
source with ``adapter_path``, against the intervention on the source (dequantized when it is an MLX one).

The reference is exact for what MLX computes: the source's quantized tensors are dequantized
(``hedit.io.quant.dequant_mlx``, float32) into a float checkpoint in a temporary folder, transformers loads
it, and the neurons are scaled at run time. mlx-lm then runs the edited checkpoint on the same token
sequences (the reference's greedy continuations) in a subprocess that writes its logits as raw float32
(no pickle), and the two are compared over every position. The unedited source in MLX against the
unedited reference gives the floor (how far MLX and transformers differ with no edit at all).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hedit.check.common import (
    VACUOUS,
    Checked,
    adapter_format,
    artifact_path,
    check_tolerance,
    greedy,
    logits,
    prompt_ids,
)
from hedit.edit.plan import make_plan
from hedit.engine.intervention import scale_neurons
from hedit.errors import HeditError
from hedit.model.load import load_model

MLX_TOLERANCE = 1e-3  # float32 logits: MLX's quantized matmul and torch's dense one round differently
TIMEOUT = 600

WORKER = r"""
import json, sys
import mlx.core as mx
import numpy as np
from mlx_lm import load
model, _ = load(sys.argv[1], adapter_path=sys.argv[4] if len(sys.argv) > 4 else None)
seqs = json.loads(open(sys.argv[2]).read())
with open(sys.argv[3], "wb") as out:
    for seq in seqs:
        logits = model(mx.array([seq]))[0].astype(mx.float32)
        out.write(np.array(logits, dtype=np.float32).tobytes())
"""


def find_mlx_python(explicit: str | None = None) -> str:
    """The MLX environment's Python: ``explicit``, else $HEDIT_MLX_PYTHON, else ./.venv-mlx/bin/python."""
    if explicit:
        if not Path(explicit).is_file():
            raise HeditError(f"no MLX environment found: {explicit} is not a file")
        return os.path.abspath(explicit)
    for cand in (os.environ.get("HEDIT_MLX_PYTHON"), ".venv-mlx/bin/python"):
        if cand and Path(cand).is_file():
            return os.path.abspath(cand)
    raise HeditError("no MLX environment found: set HEDIT_MLX_PYTHON (`make mlx-env` builds one in .venv-mlx)")


def dequantized_copy(source: Path, dst: Path) -> Path:
    """A float32 checkpoint of an MLX affine checkpoint in ``dst``: every quantized weight dequantized,
    its scales and biases dropped, the quantization keys removed from config.json."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from hedit.io.quant import dequant_mlx

    config = json.loads((source / "config.json").read_text())
    q = config.pop("quantization", None) or {}
    config.pop("quantization_config", None)
    if q.get("mode", "affine") != "affine":
        raise HeditError(f"--runtime mlx dequantizes MLX affine checkpoints; {source} is {q.get('mode')}")
    out = {}
    for f in sorted(source.glob("*.safetensors")):
        with safe_open(str(f), "np") as st:
            names = set(st.keys())
            for name in sorted(names):
                base = name[: -len(".weight")] if name.endswith(".weight") else None
                if name.endswith((".scales", ".biases")) and name.rsplit(".", 1)[0] + ".weight" in names:
                    continue
                t = st.get_tensor(name)
                if base is not None and f"{base}.scales" in names:
                    own = q.get(base) if isinstance(q.get(base), dict) else q
                    t = dequant_mlx(
                        t,
                        st.get_tensor(f"{base}.scales"),
                        st.get_tensor(f"{base}.biases"),
                        own["bits"],
                        own["group_size"],
                    )
                out[name] = np.ascontiguousarray(t.astype(np.float32) if t.dtype.kind == "f" else t)
    dst.mkdir(parents=True, exist_ok=True)
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    config["torch_dtype"] = "float32"
    (dst / "config.json").write_text(json.dumps(config))
    for p in source.iterdir():
        if p.name.startswith(("tokenizer", "special_tokens", "chat_template", "generation_config")):
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


def mlx_logits(
    python: str, model: Path, seqs: list[list[int]], vocab: int, adapter: Path | None = None, timeout: int = TIMEOUT
) -> list[np.ndarray]:
    """mlx-lm's float32 logits [len(seq), vocab] of ``model`` (with an mlx-lm ``adapter``) for each sequence,
    from its own environment."""
    with tempfile.TemporaryDirectory(prefix="hedit-mlx-") as tmp:
        ids, out, script = Path(tmp) / "ids.json", Path(tmp) / "logits.f32", Path(tmp) / "worker.py"
        ids.write_text(json.dumps(seqs))
        script.write_text(WORKER)
        try:
            r = subprocess.run(
                [python, str(script), str(model), str(ids), str(out), *([str(adapter)] if adapter else [])],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise HeditError(f"mlx-lm did not finish within {timeout} s") from None
        if r.returncode != 0:
            last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1:] or ["no output"]
            raise HeditError(f"mlx-lm could not run {model}: {last[0][:300]}")
        flat = np.fromfile(out, dtype=np.float32)
    res, at = [], 0
    for s in seqs:
        n = len(s) * vocab
        res.append(flat[at : at + n].reshape(len(s), vocab))
        at += n
    return res


@dataclass
class MlxResult(Checked):
    artifact: str
    max_abs_logit_diff: float
    unedited_diff: float  # MLX's unedited source against the unedited reference: the floor
    effect: float  # max abs logit change the edit itself causes
    token_agreement: float
    prompts: int
    new_tokens: int
    tolerance: float

    @property
    def passed(self) -> bool:
        return (
            math.isfinite(self.max_abs_logit_diff)
            and self.max_abs_logit_diff <= self.tolerance
            and self.token_agreement == 1.0
            and not self.vacuous
        )

    def summary(self) -> str:
        return (
            f"{'PASS' if self.passed else 'FAIL'} mlx: max abs logit diff {self.max_abs_logit_diff:.2e} "
            f"(tolerance {self.tolerance:g}; unedited MLX against the dequantized reference "
            f"{self.unedited_diff:.2e}), greedy-token agreement {self.token_agreement:.1%}, edit effect "
            f"{self.effect:.2e}{VACUOUS if self.vacuous else ''}"
        )


def verify_mlx(
    source: str | Path,
    neurons,
    alpha: float | None = None,
    edited: str | Path | None = None,
    adapter: str | Path | None = None,
    allow_negative: bool = False,
    new_tokens: int = 8,
    mlx_python: str | None = None,
    tolerance: float = MLX_TOLERANCE,
) -> MlxResult:
    check_tolerance(tolerance)
    artifact = artifact_path(edited, adapter)
    if adapter is not None and adapter_format(artifact) != "mlx-lora":
        raise HeditError(
            f"--runtime mlx checks an mlx-lm adapter (mlx-lora: adapters.safetensors); {adapter} is not one"
        )
    python = find_mlx_python(mlx_python)
    plan = make_plan(source, neurons, alpha, allow_negative)
    if plan.checkpoint.quant_method not in ("mlx", None) or (adapter is None and plan.checkpoint.quant_method is None):
        what = "MLX checkpoints, or an mlx-lora adapter over an MLX or float one"
        raise HeditError(f"--runtime mlx checks {what}; {plan.checkpoint.path} is not one")
    src = plan.checkpoint.path
    vocab = plan.checkpoint.arch.text_config_dict(plan.checkpoint.config)["vocab_size"]
    prompts = prompt_ids(src, vocab)
    with tempfile.TemporaryDirectory(prefix="hedit-mlx-ref-") as tmp:
        ref_path = dequantized_copy(src, Path(tmp) / "ref") if plan.checkpoint.quant_method == "mlx" else src
        model = load_model(ref_path, torch.float32)
        seqs, refs, plain = [], [], []
        for ids in prompts:
            with scale_neurons(model, plan.layers):
                seq = greedy(model, ids, new_tokens)
                refs.append(logits(model, seq))
            plain.append(logits(model, seq))
            seqs.append(seq)
        del model
    got = (
        mlx_logits(python, src, seqs, refs[0].shape[-1], adapter=artifact)
        if adapter is not None
        else mlx_logits(python, artifact, seqs, refs[0].shape[-1])
    )
    base = mlx_logits(python, src, seqs, refs[0].shape[-1])
    diff = max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, refs))
    floor = max(float(np.abs(b - p.numpy()).max()) for b, p in zip(base, plain))
    effect = max(float((r - p).abs().max()) for r, p in zip(refs, plain))
    agree = total = 0
    for g, s, ids in zip(got, seqs, prompts):
        for pos in range(len(ids) - 1, len(s) - 1):
            total += 1
            agree += int(int(g[pos].argmax()) == s[pos + 1])
    diff = diff if math.isfinite(diff) else math.inf
    return MlxResult(str(artifact), diff, floor, effect, agree / max(1, total), len(prompts), new_tokens, tolerance)
