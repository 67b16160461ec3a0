"""Runs inside the vLLM environment (it imports nothing from hedit): greedy decoding with logprobs.

Usage: python vllm_worker.py REQUEST.json RESULT.json
REQUEST: {"model", "adapter" (or null), "max_lora_rank", "prompts": [[ids]], "max_tokens"}
RESULT:  {"tokens": [[ids]], "logprobs": [[float]]}
"""

import json
import sys


def main(request_path: str, result_path: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    req = json.load(open(request_path))
    kwargs = dict(
        model=req["model"],
        dtype=req.get("dtype", "float32"),
        enforce_eager=True,
        skip_tokenizer_init=True,
        kv_cache_memory_bytes=req.get("kv_cache_memory_bytes", 256 << 20),
        max_model_len=max(len(p) for p in req["prompts"]) + req["max_tokens"] + 8,
        generation_config="vllm",
        seed=0,
    )
    lora = None
    if req.get("adapter"):
        from vllm.lora.request import LoRARequest

        kwargs.update(enable_lora=True, max_lora_rank=req["max_lora_rank"], max_loras=1)
        lora = LoRARequest("hedit", 1, req["adapter"])
    llm = LLM(**kwargs)
    params = SamplingParams(
        temperature=0.0, max_tokens=req["max_tokens"], logprobs=1, ignore_eos=True, detokenize=False
    )
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in req["prompts"]], params, lora_request=lora)
    tokens, logprobs = [], []
    for out in outs:
        c = out.outputs[0]
        tokens.append(list(c.token_ids))
        logprobs.append([step[t].logprob for t, step in zip(c.token_ids, c.logprobs)])
    json.dump({"tokens": tokens, "logprobs": logprobs}, open(result_path, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
