"""Benchmark CETT extraction on a tiny-but-wide mixture of experts, in one run, on the same sequences:

  plain - forward passes with no hooks, batched and left-padded as hedit does (transformers' own experts
          implementation)
  hedit - the same passes with hedit's MoE CETT hooks (each experts module's forward wrapped, region
          means reduced in the block's hook) and every row's sparse entries taken out, as
          `hedit features` writes them

Each mode runs --repeats times, interleaved; medians with ratios. Target: hedit within 1.3x of plain.

    python benchmarks/bench_features_moe.py [--model-type qwen3_moe] [--experts 64] [--top-k 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_features import make_items, plain  # the same sequences and plain forward as the dense benchmark

from hedit.find.cett_moe import MoeCettHooks
from hedit.find.features import batch_features
from hedit.model.tiny import tiny_model

REGIONS = ("answer", "other")


def hedit(model, batches):
    hooks = MoeCettHooks(model)
    nnz = 0
    try:
        for batch in batches:
            batch_features(model, hooks, batch, REGIONS, 0, collect=False)
            for b in range(len(batch)):
                for r in range(len(REGIONS)):
                    nnz += len(hooks.rows(r, b)[0])
            hooks.clear()
    finally:
        hooks.remove()
    return nnz


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-type", default="qwen3_moe")
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--expert-size", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--sequences", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model = tiny_model(
        args.model_type,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_experts=args.experts,
        num_experts_per_tok=args.top_k,
        moe_intermediate_size=args.expert_size,
        mlp_only_layers=[],
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=64,
        vocab_size=4096,
    )
    items = make_items(args.sequences, model.config.vocab_size)
    batches = [items[i : i + args.batch_size] for i in range(0, len(items), args.batch_size)]
    tokens = sum(len(it.ids) for it in items)
    neurons = args.layers * args.experts * args.expert_size
    print(
        f"{args.model_type}: {args.layers} layers x {args.experts} experts (top-{args.top_k}) x {args.expert_size} "
        f"= {neurons:,} expert neurons; {len(items)} sequences, {tokens} tokens, batch {args.batch_size}"
    )
    nnz = hedit(model, batches)
    rows = 2 * len(items)
    print(f"stored: {nnz / rows:,.0f} values per row of {neurons:,} ({nnz / rows / neurons:.1%})")
    times = {"plain": [], "hedit": []}
    with torch.no_grad():
        for _ in range(args.repeats):
            for mode in times:
                t = time.perf_counter()
                (plain if mode == "plain" else hedit)(model, batches)
                times[mode].append(time.perf_counter() - t)
    med = {m: statistics.median(v) for m, v in times.items()}
    for m, sec in med.items():
        print(f"{m:6s} {sec:7.2f} s  {sec / med['plain']:5.2f}x plain  {tokens / sec:7.0f} tokens/s")
    print(f"hedit / plain = {med['hedit'] / med['plain']:.3f} (target <= 1.3)")


if __name__ == "__main__":
    main()
