"""Benchmark `hedit edit` against a plain copy and the naive transformers way, in one run.

Builds a random bf16 Llama-shaped checkpoint of about 2 GB in 4 shards, then times, each in a fresh
process so peak RSS is its own:
  copy   - shutil.copytree of the checkpoint folder (the floor: every byte must be written once)
  edit   - `hedit edit` with a cold hash cache (sha256 of every source file computed)
  edit*  - `hedit edit` again, sha256 from hedit's stat-keyed cache
  naive  - transformers from_pretrained, scale columns, save_pretrained
  verify-s - `hedit verify --runtime structure` of the edit (no model loaded; every byte against the plan)
Each is run --repeats times; the median time is reported with ratios to the copy.

Then a GGUF row (--gguf, on by default): the built-in Gemma-3-270M Q4_K_M file (253 MB), 20 neurons
per layer at alpha 0, timed the same way:
  gcopy  - shutil.copyfile of the GGUF file
  gup    - `hedit edit --target up` (the chosen ffn_up rows' block scales)
  gdown  - `hedit edit --target down` (the chosen ffn_down values re-rounded under their block scales)

    python benchmarks/bench_edit.py [--size-gb 2] [--repeats 3] [--dir bench-out]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, shutil, sys, time
mode, src, dst, neurons, cache = sys.argv[1:6]
os.environ["HEDIT_CACHE"] = cache
import torch  # imports stay outside the timed region
from transformers import AutoModelForCausalLM
from hedit.edit.checkpoint import edit_checkpoint
from hedit.edit.neurons import NeuronSet
t = time.perf_counter()
if mode == "copy":
    shutil.copytree(src, dst)
elif mode.startswith("edit"):
    edit_checkpoint(src, neurons, dst, alpha=0.0, progress=False)
elif mode == "verify-s":
    from hedit.check.structure import verify_structure
    assert verify_structure(src, neurons, 0.0, edited=dst, progress=False).passed
elif mode == "gcopy":
    shutil.copyfile(src, dst)
elif mode in ("gup", "gdown"):
    from hedit.edit.gguf import edit_gguf
    edit_gguf(src, neurons, dst, alpha=0.0, progress=False, target=mode[1:])
elif mode == "naive":
    m = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    for layer, pairs in NeuronSet.load(neurons).plan(0.0).items():
        w = m.model.layers[layer].mlp.down_proj.weight.data
        for i, a in pairs:
            w[:, i] *= a
    m.save_pretrained(dst, max_shard_size="600MB")
seconds = time.perf_counter() - t
# VmHWM: this process's peak resident memory (unlike ru_maxrss, not inherited across exec)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": seconds, "peak_rss_mb": hwm / 1024}))
"""


def build(root: Path, size_gb: float) -> tuple[Path, Path]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hedit.edit.neurons import ModelInfo, Neuron, NeuronSet
    from hedit.model.tiny import random_neurons

    # Llama-like proportions; layers chosen so the bf16 checkpoint is about size_gb
    hidden, inter, vocab = 2048, 8192, 32000
    per_layer = 2 * (4 * hidden * hidden // 2 + 3 * hidden * inter)  # GQA: k, v are half width
    layers = max(2, round((size_gb * 1e9 - 2 * 2 * vocab * hidden) / per_layer))
    src = root / "src"
    if not (src / "config.json").exists():
        cfg = LlamaConfig(
            hidden_size=hidden,
            intermediate_size=inter,
            num_hidden_layers=layers,
            num_attention_heads=16,
            num_key_value_heads=8,
            vocab_size=vocab,
        )
        with torch.device("meta"):
            model = LlamaForCausalLM(cfg)
        model = model.to_empty(device="cpu").to(torch.bfloat16)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).mul_(0.02))
        total = sum(p.numel() * 2 for p in model.parameters())
        model.save_pretrained(src, max_shard_size=f"{int(total * 1.02) // 4 // 1_000_000}MB")
        del model
    ns = NeuronSet(
        ModelInfo("llama", layers, inter, "bench"),
        [Neuron(layer, i) for layer, i in random_neurons(layers, inter, 20, seed=0)],
    )
    ns.save(root / "neurons.json")
    return src, root / "neurons.json"


def run(mode: str, src: Path, dst: Path, neurons: Path, cache: Path) -> dict:
    if mode == "verify-s":  # reads dst, the edit made beforehand
        pass
    elif dst.is_dir():
        shutil.rmtree(dst)
    for p in (dst, Path(f"{dst}.hedit.json")):
        if p.is_file():
            p.unlink()
    os.sync()  # flush earlier runs' dirty pages, so no run pays for another's write-back
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(src), str(dst), str(neurons), str(cache)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default="bench-out")
    ap.add_argument("--gguf", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--safetensors", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    if args.safetensors:
        bench_safetensors(args)
    if args.gguf:
        bench_gguf(args)


def table(results: dict[str, list[dict]], base_mode: str) -> None:
    base = statistics.median(r["seconds"] for r in results[base_mode])
    print(f"{'mode':8s} {'median s':>9s} {'x copy':>7s} {'peak RSS MB':>12s}")
    for mode, rs in results.items():
        sec = statistics.median(r["seconds"] for r in rs)
        rss = max(r["peak_rss_mb"] for r in rs)
        print(f"{mode:8s} {sec:9.2f} {sec / base:7.2f} {rss:12.0f}")


def bench_gguf(args) -> None:
    from hedit.edit.gguf import gguf_shape, open_gguf
    from hedit.edit.neurons import ModelInfo, Neuron, NeuronSet
    from hedit.model.builtin import BUILTINS, gguf_path
    from hedit.model.tiny import random_neurons

    root = Path(args.dir)
    root.mkdir(exist_ok=True)
    src = gguf_path(BUILTINS["gemma3-270m"])
    arch, layers, inter = gguf_shape(open_gguf(src))
    ns = NeuronSet(
        ModelInfo(arch.model_type, layers, inter),
        [Neuron(layer, i) for layer, i in random_neurons(layers, inter, 20, seed=0)],
    )
    ns.save(root / "gguf-neurons.json")
    print(f"\nGGUF: {src.name}, {src.stat().st_size / 1e6:.0f} MB; 20 neurons per layer, alpha 0")
    results: dict[str, list[dict]] = {m: [] for m in ("gcopy", "gup", "gdown")}
    for _ in range(args.repeats):
        for mode in results:
            results[mode].append(run(mode, src, root / "out.gguf", root / "gguf-neurons.json", root / "warm-cache"))
    for p in (root / "out.gguf", root / "out.gguf.hedit.json"):
        p.unlink(missing_ok=True)
    table(results, "gcopy")


def bench_safetensors(args) -> None:
    root = Path(args.dir)
    root.mkdir(exist_ok=True)
    src, neurons = build(root, args.size_gb)
    shards = sorted(p.name for p in src.glob("*.safetensors"))
    size = sum((src / s).stat().st_size for s in shards)
    print(
        f"checkpoint: {size / 1e9:.2f} GB bf16 in {len(shards)} shards; "
        f"largest tensor {largest_tensor(src) / 1e6:.0f} MB; 20 neurons per layer, alpha 0"
    )
    results: dict[str, list[dict]] = {m: [] for m in ("copy", "edit", "edit*", "naive", "verify-s")}
    run("edit*", src, root / "edited", neurons, root / "warm-cache")  # fills the warm cache; verify-s reads it
    for _ in range(args.repeats):  # interleaved, so drift in disk speed hits every mode alike
        for mode in results:
            cache = Path(tempfile.mkdtemp(dir=root)) if mode == "edit" else root / "warm-cache"
            results[mode].append(run(mode, src, root / ("edited" if mode == "verify-s" else "out"), neurons, cache))
            if mode == "edit":
                shutil.rmtree(cache)
    shutil.rmtree(root / "out", ignore_errors=True)
    shutil.rmtree(root / "edited", ignore_errors=True)
    table(results, "copy")


def largest_tensor(src: Path) -> int:
    from hedit.io.safetensors_header import read_header

    return max(t.nbytes for f in src.glob("*.safetensors") for t in read_header(f).tensors.values())


if __name__ == "__main__":
    main()
