"""Runs inside the vLLM environment (it imports nothing from hedit): one vLLM engine kept alive for a whole
hedit command, answering requests over a pipe.

Usage: python vllm_server.py ENGINE.json
ENGINE.json (written by hedit.engine.vllm.VllmEngine, every key present):
  {"model", "dtype", "seed", "max_model_len", "enable_lora", "max_lora_rank", "max_loras",
   "enable_mixed_moe_lora_format" (with enable_lora),
              "tensor_parallel_size", "pipeline_parallel_size", "distributed_executor_backend",
              "gpu_memory_utilization", "kv_cache_memory_bytes"}
Then one JSON request per line on stdin, one JSON answer per line on the original stdout (vLLM's own
output goes to stderr):
  {"op": "generate", "prompts": [[ids]], "n", "temperature", "top_p", "top_k", "max_tokens",
   "stop_token_ids": [ids], "ignore_eos", "logprobs": bool, "prompt_logprobs": bool,
   "lora": null | ADAPTER | [null | ADAPTER per prompt]}
  ->  {"outputs": [[[ids] * n] per prompt]} (with "logprobs": the same shape, each generated token's
  logprob; with "prompt_logprobs": per prompt, each prompt token's logprob given the tokens before it,
  null for the first), where ADAPTER is {"name", "id", "path", "is_3d"} (is_3d: a mixture's experts in
  PEFT's 3-D layout, vLLM's is_3d_lora_weight); prompts under
  different adapters share the engine's batches (up to max_loras adapters at a time)
  {"op": "shutdown"}  ->  {"ok": true}
Every answer to a failed request is {"error": "..."}; the engine stays up.
"""

import json
import os
import sys


def main(engine_path: str) -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever vLLM prints goes to stderr; the protocol keeps the real stdout

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    cfg = json.load(open(engine_path))
    kwargs = dict(
        model=cfg["model"],
        dtype=cfg["dtype"],
        skip_tokenizer_init=True,
        seed=cfg["seed"],
        max_model_len=cfg["max_model_len"],
        generation_config="vllm",
        enforce_eager=True,
        tensor_parallel_size=cfg["tensor_parallel_size"],
        pipeline_parallel_size=cfg["pipeline_parallel_size"],
    )
    for key in ("distributed_executor_backend", "gpu_memory_utilization", "kv_cache_memory_bytes"):
        if cfg.get(key) is not None:
            kwargs[key] = cfg[key]
    if cfg.get("enable_lora"):
        kwargs.update(enable_lora=True, max_lora_rank=cfg["max_lora_rank"], max_loras=cfg["max_loras"])
        if cfg.get("enable_mixed_moe_lora_format"):
            kwargs["enable_mixed_moe_lora_format"] = True
    llm = LLM(**kwargs)
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        try:
            req = json.loads(line)
            if req["op"] == "shutdown":
                proto.write(json.dumps({"ok": True}) + "\n")
                break
            lora = req.get("lora")
            if lora:
                from vllm.lora.request import LoRARequest

                def request(a):
                    if not a:
                        return None
                    return LoRARequest(a["name"], a["id"], a["path"], is_3d_lora_weight=a.get("is_3d", False))

                lora = [request(a) for a in lora] if isinstance(lora, list) else request(lora)
            params = SamplingParams(
                n=req.get("n", 1),
                temperature=req.get("temperature", 0.0),
                top_p=req.get("top_p", 1.0),
                top_k=req.get("top_k", -1) or -1,
                max_tokens=req["max_tokens"],
                stop_token_ids=req.get("stop_token_ids") or None,
                ignore_eos=req.get("ignore_eos", False),
                logprobs=1 if req.get("logprobs") else None,
                prompt_logprobs=0 if req.get("prompt_logprobs") else None,
                detokenize=False,
            )
            outs = llm.generate(
                [TokensPrompt(prompt_token_ids=p) for p in req["prompts"]], params, lora_request=lora, use_tqdm=False
            )
            answer = {"outputs": [[list(c.token_ids) for c in o.outputs] for o in outs]}
            if req.get("logprobs"):
                answer["logprobs"] = [
                    [[step[t].logprob for t, step in zip(c.token_ids, c.logprobs)] for c in o.outputs] for o in outs
                ]
            if req.get("prompt_logprobs"):
                answer["prompt_logprobs"] = [
                    [None if step is None else step[t].logprob for t, step in zip(p, o.prompt_logprobs)]
                    for p, o in zip(req["prompts"], outs)
                ]
        except Exception as e:  # report and keep serving
            answer = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        proto.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
