"""Benchmark CETT extraction, in one run, on the same sequences:

  plain     - forward passes with no hooks, batched and left-padded as hedit does
  hedit     - the same passes with hedit's CETT hooks (reduced to per-region means inside the hook)
  reference - batch 1, every layer's down_proj input and output kept ([layers x tokens x neurons]),
              CETT and region means computed afterwards

The reference also checks hedit's numbers (max abs difference). Each mode runs --repeats times,
interleaved; medians are reported with ratios. Target: hedit within 1.15x of plain.

    python benchmarks/bench_features.py [--model smollm2-135m-instruct] [--sequences 64] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hedit.engine.intervention import down_proj_module, model_shape
from hedit.find.features import CettHooks, Item, batch_features
from hedit.model.builtin import resolve_model
from hedit.model.load import load_model

REGIONS = ("answer", "other")


def make_items(n: int, vocab: int, seed: int = 0) -> list[Item]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(60, 110, (1,), generator=g))
        ids = torch.randint(0, vocab, (length,), generator=g).tolist()
        out.append(Item(ids, {"answer": list(range(length - 6, length - 1)), "other": list(range(length - 6))}, {}))
    return sorted(out, key=lambda it: len(it.ids))


@torch.no_grad()
def plain(model, batches):
    for batch in batches:
        width = max(len(it.ids) for it in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, it in enumerate(batch):
            ids[b, width - len(it.ids) :] = torch.tensor(it.ids)
            mask[b, width - len(it.ids) :] = 1
        model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0))


def hedit(model, batches):
    hooks = CettHooks(model)
    try:
        return [batch_features(model, hooks, batch, REGIONS, 0) for batch in batches]
    finally:
        hooks.remove()


@torch.no_grad()
def reference(model, items):
    _, layers, _ = model_shape(model)
    mods = [down_proj_module(model, i) for i in range(layers)]
    store = {}
    handles = [
        m.register_forward_hook(lambda mod, a, o, i=i: store.__setitem__(i, (a[0][0], o[0])))
        for i, m in enumerate(mods)
    ]
    rows = []
    try:
        for it in items:
            model(torch.tensor([it.ids]))
            z = torch.stack([store[i][0] for i in range(layers)])  # [layers, T, inter]
            y = torch.stack([store[i][1] for i in range(layers)])  # [layers, T, hidden]
            norms = torch.stack([m.weight.norm(dim=0) for m in mods])  # [layers, inter]
            cett = z.abs() * norms[:, None, :] / y.norm(dim=-1, keepdim=True)
            rows.append(torch.stack([cett[:, it.masks[r]].mean(1).reshape(-1) for r in REGIONS]))
    finally:
        for h in handles:
            h.remove()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--sequences", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model = load_model(resolve_model(args.model))
    _, layers, inter = model_shape(model)
    items = make_items(args.sequences, model.config.vocab_size)
    batches = [items[i : i + args.batch_size] for i in range(0, len(items), args.batch_size)]
    tokens = sum(len(it.ids) for it in items)
    print(
        f"{args.model}: {layers} layers x {inter} neurons; {len(items)} sequences, {tokens} tokens, "
        f"batch {args.batch_size} (reference: batch 1)"
    )

    got = hedit(model, batches)
    ref = reference(model, items)
    flat = [g[:, b] for g in got for b in range(g.shape[1])]
    diff = max((a - b).abs().max().item() for a, b in zip(flat, ref))
    print(f"hedit vs reference: max abs CETT difference {diff:.2e}")

    times = {"plain": [], "hedit": [], "reference": []}
    for _ in range(args.repeats):
        for mode in times:
            t = time.perf_counter()
            {
                "plain": lambda: plain(model, batches),
                "hedit": lambda: hedit(model, batches),
                "reference": lambda: reference(model, items),
            }[mode]()
            times[mode].append(time.perf_counter() - t)
    med = {m: statistics.median(v) for m, v in times.items()}
    print(f"{'mode':10s} {'median s':>9s} {'x plain':>8s} {'tokens/s':>9s}")
    for m, sec in med.items():
        print(f"{m:10s} {sec:9.2f} {sec / med['plain']:8.2f} {tokens / sec:9.0f}")
    print(
        f"hedit / plain = {med['hedit'] / med['plain']:.3f} (target <= 1.15); "
        f"reference / hedit = {med['reference'] / med['hedit']:.1f}x speed-up"
    )


if __name__ == "__main__":
    main()
