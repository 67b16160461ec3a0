"""Runs in the llama.cpp environment (llama-cpp-python; `make llama-env`), never imports hedit: the logits
llama.cpp computes for given token ids, for each GGUF file asked, alone or with a LoRA adapter in GGUF at a
scale (llama.cpp's `--lora-scaled FILE S`).

Usage: python llama_logits.py REQUEST.json RESULT.json
REQUEST: {"models": [path | {"path", "lora", "scale"}], "ids": [token ids]}
RESULT: {"logits": [[[float] per position] per model]}
"""

import json
import sys


def main(request: str, result: str) -> None:
    from llama_cpp import Llama

    req = json.load(open(request))
    out = []
    for model in req["models"]:
        spec = model if isinstance(model, dict) else {"path": model}
        lora = {"lora_path": spec["lora"], "lora_scale": spec.get("scale", 1.0)} if spec.get("lora") else {}
        llm = Llama(model_path=spec["path"], n_ctx=256, logits_all=True, verbose=False, seed=0, n_threads=2, **lora)
        llm.eval(req["ids"])
        out.append(llm.scores[: len(req["ids"])].tolist())
        del llm
    json.dump({"logits": out}, open(result, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
