"""Which route to pick in llama.cpp: a GGUF LoRA adapter whose scale chooses alpha, or a rewritten GGUF?

For each embedded model's own GGUF (SmolLM2-135M-Instruct Q4_1, Gemma-3-270M Q4_K_M) and its neuron set:
one `gguf-lora` adapter written at alpha 0 and loaded by llama.cpp at S = 1, 0.5, -1 (alpha' = 0, 0.5, 2),
and the two rewritten-GGUF routes (`hedit edit --target up` and `--target down`) at the same alphas, each
against the runtime intervention at alpha' on the dequantized model in transformers (float32), over the
logits of one prompt. Beside them: llama.cpp unedited against transformers (the floor every route sits
on) and the edit's own effect. Needs `.venv-llama` (`make llama-env`).

    python benchmarks/llama_routes.py --neurons smollm2=demo-out/identify/neurons.json \
        --neurons gemma3-270m=gemma-demo/identify/neurons.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from hedit.edit.adapters import export_adapter
from hedit.edit.adapters.gguf_lora import scale_to_alpha
from hedit.edit.gguf import edit_gguf
from hedit.engine.intervention import scale_neurons
from hedit.errors import HeditError
from hedit.model.builtin import BUILTINS, gguf_path, resolve_model
from hedit.model.load import load_model, load_tokenizer
from hedit.neurons import NeuronSet

PROMPT = "The capital of France is"
SCALES = (1.0, 0.5, -1.0)
WORKER = Path(__file__).parents[1] / "tests" / "workers" / "llama_logits.py"  # the tests' llama.cpp worker


def llama(python: str, model: Path, ids: list[int], lora: Path | None = None, scale: float = 1.0) -> np.ndarray:
    spec = {"path": str(model), "lora": str(lora), "scale": scale} if lora else str(model)
    with tempfile.TemporaryDirectory(prefix="hedit-llama-") as tmp:
        req, res = Path(tmp) / "req.json", Path(tmp) / "res.json"
        req.write_text(json.dumps({"models": [spec], "ids": ids}))
        r = subprocess.run([python, str(WORKER), str(req), str(res)], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"llama.cpp failed on {model}: {r.stderr.strip().splitlines()[-1:]}")
        return np.array(json.loads(res.read_text())["logits"][0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--neurons", action="append", required=True, help="MODEL=neurons.json (a built-in model)")
    ap.add_argument("--llama-python", default=".venv-llama/bin/python")
    args = ap.parse_args()
    print("| model | alpha' | adapter (S) | rewritten, up | rewritten, down | llama.cpp unedited | edit effect |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for spec in args.neurons:
        name, _, nf = spec.partition("=")
        name = {"smollm2": "smollm2-135m-instruct"}.get(name, name)
        gg = gguf_path(BUILTINS[name])
        ns = NeuronSet.load(nf)
        path = resolve_model(name)
        tok, model = load_tokenizer(path), load_model(path)
        ids = tok(PROMPT)["input_ids"]
        with torch.no_grad():
            plain = model(torch.tensor([ids])).logits[0].double().numpy()
        floor = np.abs(llama(args.llama_python, gg, ids) - plain).max()
        with tempfile.TemporaryDirectory() as tmp:
            ad = export_adapter(gg, nf, Path(tmp) / "ad.gguf", "gguf-lora", alpha=0.0, target="down")
            for s in SCALES:
                a = scale_to_alpha(s, 0.0)
                with torch.no_grad(), scale_neurons(model, ns.plan(a)):
                    ref = model(torch.tensor([ids])).logits[0].double().numpy()
                got = np.abs(llama(args.llama_python, gg, ids, ad, s) - ref).max()
                routes = []
                for target in ("up", "down"):
                    try:
                        out = edit_gguf(
                            gg, nf, Path(tmp) / f"{target}-{a:g}.gguf", alpha=a, target=target, progress=False
                        )
                        routes.append(f"{np.abs(llama(args.llama_python, Path(out.out), ids) - ref).max():.3f}")
                    except HeditError as e:
                        routes.append(f"refused ({str(e)[:40]}...)")
                print(
                    f"| {name} | {a:g} | {got:.3f} (S={s:g}) | {routes[0]} | {routes[1]} | {floor:.3f} | "
                    f"{np.abs(ref - plain).max():.3f} |"
                )


if __name__ == "__main__":
    main()
