"""hedit's decoding against `model.generate`, side by side on the embedded model: sweep cells and sampling.

sweep: a sweep's greedy replies for every cell: alpha 1, and ``--sets`` random sets of ``--neurons``
neurons (the demo's H-neuron count) scaled by each alpha of ``--alphas`` (the README sweep's shape:
16 cells), over ``--limit`` items of each suite (sycophancy with its second turns). The arms:

- ``generate``: what sweeps ran before: one cell at a time under the intervention hooks,
  `model.generate` in batches of ``--old-batch`` prompts (the old default), every row decoded until the
  longest reply of its batch ends;
- ``pruned``: one cell at a time, hedit's decoder (finished replies leave the batch, the shared chat
  start prefilled once), same batches;
- ``shared``: what sweeps run now: every cell of a suite in the same batches
  (``hedit.engine.intervention.CellScales``: each row scaled by its own cell), ``--batch-size``
  sequences (the sweep default), so one decoding step reads the weights once for all cells.

All arms run in one process on the same items; every cell's replies must be identical across arms,
and the script prints seconds and ratios against the first arm.

sample: collect's job (``--questions`` bundled held-out questions x 5 samples, temperature 1, top-p 0.9,
top-k 50, 24 new tokens, batches of 32 questions) through `model.generate` and through hedit's sampler
(``hedit.engine.decoder.sample``: one prefill per question for its 5 samples, finished replies leave
the batch). The draws differ (another random stream), so the script compares what they measure: reply
length, share of correct samples, and questions answered consistently.

    python benchmarks/bench_decode.py [--jobs sweep,sample] [--limit 16] [--arms generate,shared]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from hedit.config import SweepConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--suites", default="false-premise,misleading-context,sycophancy")
    ap.add_argument("--alphas", default="0,0.5,1.5,2,3", help="the edited cells' alphas (alpha 1 is one cell)")
    ap.add_argument("--sets", type=int, default=3, help="random neuron sets (the H-neurons and 2 controls)")
    ap.add_argument("--neurons", type=int, default=31, help="neurons per set")
    ap.add_argument("--batch-size", type=int, default=SweepConfig.batch_size)
    ap.add_argument("--old-batch", type=int, default=16, help="prompts per generate call before cells shared batches")
    ap.add_argument("--arms", default="generate,shared", help="of generate, pruned, shared")
    ap.add_argument("--jobs", default="sweep,sample")
    ap.add_argument("--questions", type=int, default=64)
    args = ap.parse_args()
    jobs = args.jobs.split(",")

    import hedit.engine.decoder as gen
    from hedit.config import Decoding
    from hedit.engine.intervention import CellScales, scale_neurons
    from hedit.measure.sweep import run_suite
    from hedit.model.builtin import resolve_model
    from hedit.model.load import load_model, load_tokenizer
    from hedit.score.suites import load_suite

    path = resolve_model(args.model)
    model, tok = load_model(path), load_tokenizer(path)
    model.eval()
    if "sample" in jobs:
        bench_sample(model, tok, args)
    if "sweep" not in jobs:
        return
    layers, inter = model.config.num_hidden_layers, model.config.intermediate_size
    g = torch.Generator().manual_seed(0)
    sets = []
    for _ in range(args.sets):
        by_layer: dict[int, list[int]] = {}
        for j in torch.randperm(layers * inter, generator=g)[: args.neurons].tolist():
            by_layer.setdefault(j // inter, []).append(j % inter)
        sets.append(by_layer)
    alphas = [float(a) for a in args.alphas.split(",")]
    cells = [{}] + [{la: [(i, a) for i in idx] for la, idx in s.items()} for a in alphas for s in sets]
    dec = Decoding()
    real = gen.plain_greedy
    arms = args.arms.split(",")
    times = dict.fromkeys(arms, 0.0)
    same = total = 0
    print(
        f"{args.model}: suites {args.suites}, {args.limit} items each, {len(cells)} cells "
        f"(alpha 1, {args.sets} sets of {args.neurons} neurons x alphas {args.alphas}), {dec.max_new_tokens} new "
        f"tokens; generate/pruned: one cell at a time, batch {args.old_batch}; shared: batch {args.batch_size} "
        f"sequences; {torch.get_num_threads()} threads"
    )
    for suite in args.suites.split(","):
        items = load_suite(suite).items[: args.limit]
        replies = {}
        for arm in arms:
            gen.plain_greedy = (lambda m: False) if arm == "generate" else real
            t = time.perf_counter()
            if arm == "shared":
                with CellScales(model, cells) as scales:
                    recs = run_suite(model, tok, suite, items, dec, args.batch_size, scales=scales)
            else:
                recs = []
                for c in cells:
                    with scale_neurons(model, c):
                        recs.append(run_suite(model, tok, suite, items, dec, args.old_batch))
            sec = time.perf_counter() - t
            gen.plain_greedy = real
            times[arm] += sec
            replies[arm] = [[r["replies"] for r in cell] for cell in recs]
            print(f"  {suite:20s} {arm:9s} {sec:7.1f} s", flush=True)
        first = replies[arms[0]]
        for arm in arms[1:]:
            eq = sum(a == b for ca, cb in zip(first, replies[arm]) for a, b in zip(ca, cb))
            n = sum(len(c) for c in first)
            same, total = same + eq, total + n
            print(f"  {suite:20s} {arm} identical to {arms[0]}: {eq}/{n} cell items", flush=True)
    base = times[arms[0]]
    ratios = ", ".join(f"{arm} {times[arm]:.1f} s ({base / times[arm]:.2f}x)" for arm in arms)
    print(f"sweep: {ratios}; identical replies {same}/{total}")


def bench_sample(model, tok, args) -> None:
    import hedit.engine.decoder as dec
    import hedit.find.collect as col
    from hedit.config import SamplingConfig
    from hedit.io.questions import bundled_questions

    qs = bundled_questions("heldout")[: args.questions]
    cfg = SamplingConfig(samples=5, max_new_tokens=24)
    real = dec.plain_greedy
    print(f"{args.model}: sampling {len(qs)} questions x {cfg.samples}, {cfg.max_new_tokens} new tokens, batch 32")
    res = {}
    for arm in ("generate", "hedit"):
        dec.plain_greedy = real if arm == "hedit" else (lambda m: False)
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            out = col.collect(model, tok, qs, f"{d}/r.jsonl", cfg, 32, progress=False)
            sec = time.perf_counter() - t
            recs = col.read_responses(out)[1]
        dec.plain_greedy = real
        samples = [s for r in recs for s in r["samples"]]
        toks = sum(len(s["response_ids"]) for s in samples)
        res[arm] = sec
        print(
            f"  {arm:9s} {sec:6.1f} s, {toks / sec:6.1f} tokens/s; mean reply {toks / len(samples):.1f} tokens, "
            f"correct {sum(s['label'] == 'correct' for s in samples) / len(samples):.3f}, "
            f"consistent questions {len(col.consistent(recs))}",
            flush=True,
        )
    print(f"sampling: hedit's sampler {res['generate'] / res['hedit']:.2f}x faster than model.generate")


if __name__ == "__main__":
    main()
