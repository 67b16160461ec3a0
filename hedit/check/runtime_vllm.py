"""`hedit verify --runtime vllm`: load the artifact in vLLM and compare greedy decoding with transformers.

vLLM lives in its own environment (it pins its own torch); hedit runs ``vllm_worker.py`` with that
environment's Python, found from ``--vllm-python``, ``$HEDIT_VLLM_PYTHON``, or ``.venv-vllm`` in the
current folder.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from hedit.check.verify import VACUOUS, check_artifact, check_tolerance, prompt_ids, reference_generation, vacuous
from hedit.edit.adapters import read_adapter
from hedit.edit.adapters.lora import vllm_max_lora_rank
from hedit.edit.neurons import NeuronSet
from hedit.edit.plan import make_plan
from hedit.errors import HeditError

LOGPROB_TOLERANCE = 1e-3


def find_vllm_python(explicit: str | None = None) -> str:
    """The vLLM environment's Python: ``explicit`` (which must exist), else $HEDIT_VLLM_PYTHON, else
    ./.venv-vllm/bin/python."""
    if explicit:
        if not Path(explicit).is_file():
            raise HeditError(f"no vLLM environment found: {explicit} is not a file (--vllm-python)")
        return os.path.abspath(explicit)
    for cand in (os.environ.get("HEDIT_VLLM_PYTHON"), ".venv-vllm/bin/python"):
        if cand and Path(cand).is_file():
            return os.path.abspath(cand)  # not resolve(): the venv python is a symlink
    raise HeditError(
        "no vLLM environment found: pass --vllm-python or set HEDIT_VLLM_PYTHON "
        "(`make vllm-env` builds one in .venv-vllm)"
    )


def _last_error(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (errors or lines or ["no output"])[-1][:500]


def run_worker(python: str, request: dict, timeout: int = 900) -> dict:
    """Greedy tokens and logprobs from ``vllm_worker.py`` in the vLLM environment (``request``: model,
    prompts, max_tokens; optionally adapter, max_lora_rank, dtype)."""
    worker = Path(__file__).with_name("vllm_worker.py")
    with tempfile.TemporaryDirectory(prefix="hedit-vllm-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(request))
        env = os.environ | {
            "VLLM_TARGET_DEVICE": os.environ.get("VLLM_TARGET_DEVICE", "cpu"),
            "VLLM_LOGGING_LEVEL": "WARNING",
        }
        proc = subprocess.run(
            [python, "-P", str(worker), str(req), str(res)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=tmp,
        )
        if proc.returncode != 0 or not res.exists():
            raise HeditError(f"vLLM failed to run the artifact: {_last_error(proc.stderr + proc.stdout)}")
        return json.loads(res.read_text())


@dataclass
class VllmResult:
    artifact: str
    token_agreement: float
    max_abs_logprob_diff: float
    effect: float  # max abs logprob change the edit itself causes, for scale
    prompts: int
    new_tokens: int
    tolerance: float

    @property
    def passed(self) -> bool:
        return (
            self.token_agreement == 1.0
            and math.isfinite(self.max_abs_logprob_diff)
            and self.max_abs_logprob_diff <= self.tolerance
            and not self.vacuous
        )

    @property
    def vacuous(self) -> bool:
        return vacuous(self.effect, self.tolerance)

    def to_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed, "vacuous": self.vacuous}

    def summary(self) -> str:
        return (
            f"{'PASS' if self.passed else 'FAIL'} vllm: greedy-token agreement {self.token_agreement:.1%}, "
            f"max abs logprob diff {self.max_abs_logprob_diff:.2e} (tolerance {self.tolerance:g}), "
            f"edit effect {self.effect:.2e}{VACUOUS if self.vacuous else ''}"
        )


def verify_vllm(
    source: str | Path,
    neurons: str | Path | NeuronSet,
    alpha: float | None = None,
    edited: str | Path | None = None,
    adapter: str | Path | None = None,
    allow_negative: bool = False,
    new_tokens: int = 8,
    vllm_python: str | None = None,
    tolerance: float = LOGPROB_TOLERANCE,
    timeout: int = 900,
) -> VllmResult:
    check_tolerance(tolerance)
    python = find_vllm_python(vllm_python)
    plan = make_plan(source, neurons, alpha, allow_negative)
    check_artifact(plan, edited, adapter)
    artifact = Path(edited or adapter)
    request = {"model": str(Path(edited or plan.checkpoint.path).resolve()), "max_tokens": new_tokens}
    if adapter is not None:
        cfg = read_adapter(artifact, plan.checkpoint)
        if cfg["peft_type"] != "LORA":
            raise HeditError(f"vLLM serves LoRA adapters, not {cfg['peft_type']}: {artifact}")
        request |= {"adapter": str(artifact.resolve()), "max_lora_rank": vllm_max_lora_rank(cfg["r"])}
    source = plan.checkpoint.path
    prompts = prompt_ids(source, plan.checkpoint.arch.text_config_dict(plan.checkpoint.config)["vocab_size"])
    ref_tokens, ref_logprobs, effect = reference_generation(plan, prompts, new_tokens)

    request["prompts"] = prompts
    out = run_worker(python, request, timeout)
    total = sum(len(t) for t in ref_tokens)
    agree = sum(a == b for r, g in zip(ref_tokens, out["tokens"]) for a, b in zip(r, g))
    diffs = [abs(a - b) for r, g in zip(ref_logprobs, out["logprobs"]) for a, b in zip(r, g)]
    diff = max(diffs) if diffs and all(math.isfinite(d) for d in diffs) else math.inf
    return VllmResult(str(artifact), agree / total, diff, effect, len(prompts), new_tokens, tolerance)


class VllmEngine:
    """One vLLM engine, in its own environment, alive for a whole hedit command (``vllm_server.py``)."""

    def __init__(
        self,
        python: str,
        model: str | Path,
        dtype: str = "auto",
        seed: int = 0,
        max_model_len: int = 2048,
        lora_rank: int | None = None,
        tensor_parallel_size: int = 1,
        pipeline_parallel_size: int = 1,
        device: str = "cpu",
        distributed_executor_backend: str | None = None,
        timeout: int = 900,
        max_loras: int = 1,
    ):
        cfg = {
            "model": str(Path(model).resolve()),
            "dtype": dtype,
            "seed": seed,
            "max_model_len": max_model_len,
            "tensor_parallel_size": tensor_parallel_size,
            "pipeline_parallel_size": pipeline_parallel_size,
            "distributed_executor_backend": distributed_executor_backend,
        }
        if device.startswith("cpu"):
            cfg["kv_cache_memory_bytes"] = 1 << 30
        if lora_rank is not None:
            cfg |= {"enable_lora": True, "max_lora_rank": vllm_max_lora_rank(lora_rank), "max_loras": max_loras}
        self._dir = tempfile.TemporaryDirectory(prefix="hedit-vllm-")
        (Path(self._dir.name) / "engine.json").write_text(json.dumps(cfg))
        self._log = open(Path(self._dir.name) / "vllm.log", "w+")
        env = os.environ | {
            "VLLM_TARGET_DEVICE": "cuda" if device.startswith("cuda") else "cpu",
            "VLLM_LOGGING_LEVEL": "WARNING",
        }
        server = Path(__file__).with_name("vllm_server.py")
        self._proc = subprocess.Popen(
            [python, "-P", str(server), str(Path(self._dir.name) / "engine.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
            cwd=self._dir.name,
        )
        self._timeout = timeout
        self._answer()  # {"ready": true}, or the engine's own error

    def _answer(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            self._log.seek(0)
            self.close()
            raise HeditError(f"the vLLM engine stopped: {_last_error(self._log.read())}")
        answer = json.loads(line)
        if "error" in answer:
            raise HeditError(f"vLLM: {answer['error']}")
        return answer

    def generate(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_token_ids: list[int] | None = None,
        lora: str | Path | None | list[str | Path | None] = None,
        ignore_eos: bool = False,
    ) -> list[list[list[int]]]:
        """For each prompt, ``n`` generated token-id lists (greedy at temperature 0), under ``lora``: one
        adapter for all prompts, or a list with each prompt's (None: the model alone)."""
        req = {
            "op": "generate",
            "prompts": prompts,
            "n": n,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "max_tokens": max_tokens,
            "stop_token_ids": stop_token_ids or [],
            "ignore_eos": ignore_eos,
        }
        if isinstance(lora, list):
            req["lora"] = [self._adapter(a) for a in lora]
        elif lora is not None:
            req["lora"] = self._adapter(lora)
        self._proc.stdin.write(json.dumps(req) + "\n")
        self._proc.stdin.flush()
        return self._answer()["outputs"]

    def _adapter(self, lora: str | Path | None) -> dict | None:
        if lora is None:
            return None
        self._lora_ids = getattr(self, "_lora_ids", {})
        lid = self._lora_ids.setdefault(str(lora), len(self._lora_ids) + 1)
        return {"name": f"cell{lid}", "id": lid, "path": str(lora)}

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(json.dumps({"op": "shutdown"}) + "\n")
                self._proc.stdin.flush()
                self._proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self._proc.kill()
        self._log.close()
        self._dir.cleanup()

    def __enter__(self) -> VllmEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
