"""hedit's one vLLM client: a vLLM engine in its own environment (it pins its own torch), alive for a whole
hedit command, spoken to over one JSON-lines protocol (``vllm_server.py``). Generation (collect, sweeps)
and ``verify --runtime vllm`` (greedy tokens with their logprobs) use the same engine.

The environment's Python is found from ``--vllm-python``, ``$HEDIT_VLLM_PYTHON``, or ``.venv-vllm`` in
the current folder.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
from pathlib import Path

from hedit.config import EngineConfig
from hedit.errors import HeditError

MAX_MODEL_LEN = 4096  # the longest context hedit asks of an engine (the model's own, when shorter)
MAX_LORAS = 32  # adapters an engine holds at once (a sweep's batches mix up to that many cells)
TIMEOUT = 900  # seconds an engine may take to start or to answer one request
CPU_KV_CACHE = 1 << 30  # bytes of KV cache on CPU (vLLM's CPU build otherwise takes a share of RAM)


# Why a LoRA on a mixture's experts needs vLLM on a GPU (seen in vLLM 0.32's CPU build with a tiny qwen3_moe:
# the engine does not start).
EXPERT_LORAS_NEED_GPU = (
    "vLLM's CPU build cannot serve a LoRA on a mixture of experts: with LoRA enabled its fused-MoE layer runs "
    "Triton kernels, which have no CPU backend (\"module 'triton.language' has no attribute 'float32'\")"
)


def check_expert_loras(device: str, instead: str) -> None:
    """Refuse, in one line ending with ``instead``, to serve expert LoRAs anywhere but a CUDA GPU."""
    if not device.startswith("cuda"):
        raise HeditError(f"{EXPERT_LORAS_NEED_GPU}; {instead}")


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


def last_error(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (errors or lines or ["no output"])[-1][:500]


def model_len(path: str | Path, cap: int = MAX_MODEL_LEN) -> int:
    """The context an engine is opened with: the model's ``max_position_embeddings``, at most ``cap``."""
    from hedit.io.checkpoint import read_config

    config = read_config(Path(path))
    n = config.get("max_position_embeddings") or (config.get("text_config") or {}).get("max_position_embeddings")
    return min(cap, n) if isinstance(n, int) and n > 0 else cap


class VllmEngine:
    """One vLLM engine (``vllm_server.py`` in the vLLM environment). ``max_lora_rank``: vLLM's
    ``--max-lora-rank`` when adapters will be served (the LoRA writer's rule gives it), ``max_loras``
    adapters at a time; ``max_model_len``: by default the model's own context, at most ``MAX_MODEL_LEN``;
    ``expert_loras``: the adapters carry a mixture's experts in PEFT's 3-D layout (``lora.build_experts``),
    which vLLM loads into its fused-MoE LoRA layer (``--enable-mixed-moe-lora-format``, on a GPU only)."""

    def __init__(
        self,
        python: str,
        model: str | Path,
        dtype: str = "auto",
        seed: int = 0,
        max_model_len: int | None = None,
        max_lora_rank: int | None = None,
        engine: EngineConfig = EngineConfig(),
        device: str = "cpu",
        max_loras: int = 1,
        kv_cache_bytes: int | None = None,
        timeout: int = TIMEOUT,
        expert_loras: bool = False,
    ):
        if expert_loras and max_lora_rank is not None:
            check_expert_loras(device, "use transformers (--engine hf, or verify --runtime transformers)")
        cfg = {
            "model": str(Path(model).resolve()),
            "dtype": dtype,
            "seed": seed,
            "max_model_len": max_model_len or model_len(model),
            "tensor_parallel_size": engine.tensor_parallel_size,
            "pipeline_parallel_size": engine.pipeline_parallel_size,
            "distributed_executor_backend": engine.distributed_executor_backend,
        }
        if device.startswith("cpu"):
            cfg["kv_cache_memory_bytes"] = kv_cache_bytes or CPU_KV_CACHE
        if max_lora_rank is not None:
            cfg |= {"enable_lora": True, "max_lora_rank": max_lora_rank, "max_loras": max_loras}
            cfg["enable_mixed_moe_lora_format"] = expert_loras
        self._expert_loras = expert_loras
        self._dir = tempfile.TemporaryDirectory(prefix="hedit-vllm-")
        (Path(self._dir.name) / "engine.json").write_text(json.dumps(cfg))
        self._log = open(Path(self._dir.name) / "vllm.log", "w+")
        self._lora_ids: dict[str, int] = {}
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
        ready, _, _ = select.select([self._proc.stdout], [], [], self._timeout)
        if not ready:
            self._proc.kill()
            self.close()
            raise HeditError(f"the vLLM engine did not answer within {self._timeout} s")
        line = self._proc.stdout.readline()
        if not line:
            self._log.seek(0)
            log = self._log.read()
            self.close()
            raise HeditError(f"the vLLM engine stopped: {last_error(log)}")
        answer = json.loads(line)
        if "error" in answer:
            raise HeditError(f"vLLM: {answer['error']}")
        return answer

    def request(
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
        logprobs: bool = False,
        prompt_logprobs: bool = False,
    ) -> dict:
        """The engine's answer to one generate request: ``outputs`` (per prompt, ``n`` token-id lists) and,
        with ``logprobs``, each generated token's logprob beside them; with ``prompt_logprobs``, each prompt
        token's logprob given the ones before it (teacher-forced: the same sequences as a reference)."""
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
            "logprobs": logprobs,
            "prompt_logprobs": prompt_logprobs,
        }
        if isinstance(lora, list):
            req["lora"] = [self._adapter(a) for a in lora]
        elif lora is not None:
            req["lora"] = self._adapter(lora)
        self._proc.stdin.write(json.dumps(req) + "\n")
        self._proc.stdin.flush()
        return self._answer()

    def generate(self, prompts: list[list[int]], max_tokens: int, **kw) -> list[list[list[int]]]:
        """For each prompt, ``n`` generated token-id lists (greedy at temperature 0), under ``lora``: one
        adapter for all prompts, or a list with each prompt's (None: the model alone)."""
        return self.request(prompts, max_tokens, **kw)["outputs"]

    def _adapter(self, lora: str | Path | None) -> dict | None:
        if lora is None:
            return None
        lid = self._lora_ids.setdefault(str(lora), len(self._lora_ids) + 1)
        return {"name": f"cell{lid}", "id": lid, "path": str(lora), "is_3d": self._expert_loras}

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(json.dumps({"op": "shutdown"}) + "\n")
                self._proc.stdin.flush()
                self._proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self._proc.kill()
        if not self._log.closed:
            self._log.close()
        self._dir.cleanup()

    def __enter__(self) -> VllmEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
