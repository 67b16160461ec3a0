"""hedit's decoder against `model.generate`, side by side on the embedded model: sweep cells and sampling.

sweep: the sweep's replies come from greedy decoding of batches of 32 prompts, 48 new tokens at most.
`model.generate` keeps decoding every row of a batch until its longest reply ends; hedit's decoder
(``hedit.measure.generate.greedy``) drops a reply from the batch, and its KV cache rows, once it ends.
Both run the same items (the bundled suites, ``--limit`` items each) under the same cells: alpha 1 and
the demo-sized random set of neurons scaled by 0 and by 2 (the runtime intervention's hooks), in one
process, alternating; the replies must be identical, and the script prints the seconds and the ratio.

sample: collect's job (``--questions`` bundled held-out questions x 5 samples, temperature 1, top-p 0.9,
top-k 50, 24 new tokens, batches of 32 questions) through `model.generate` and through hedit's sampler
(``hedit.measure.generate.sample``: one prefill per question for its 5 samples, finished replies leave
the batch). The draws differ (another random stream), so the script compares what they measure: reply
length, share of correct samples, and questions answered consistently.

    python benchmarks/bench_decode.py [--jobs sweep,sample] [--limit 100] [--questions 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--suites", default="false-premise,misleading-context,sycophancy")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--neurons", type=int, default=8, help="random neurons scaled in the edited cells")
    ap.add_argument("--jobs", default="sweep,sample")
    ap.add_argument("--questions", type=int, default=64)
    args = ap.parse_args()
    jobs = args.jobs.split(",")

    import hedit.measure.generate as gen
    from hedit.check.intervention import scale_neurons
    from hedit.config import Decoding
    from hedit.measure.suites import load_suite
    from hedit.measure.sweep import run_suite
    from hedit.model.builtin import resolve_model
    from hedit.model.load import load_model, load_tokenizer

    path = resolve_model(args.model)
    model, tok = load_model(path), load_tokenizer(path)
    if "sample" in jobs:
        bench_sample(model, tok, args)
    if "sweep" not in jobs:
        return
    layers, inter = model.config.num_hidden_layers, model.config.intermediate_size
    g = torch.Generator().manual_seed(0)
    picks = torch.randperm(layers * inter, generator=g)[: args.neurons].tolist()
    cells = {"alpha 1": {}}
    for alpha in (0.0, 2.0):
        cell: dict[int, list[tuple[int, float]]] = {}
        for j in picks:
            cell.setdefault(j // inter, []).append((j % inter, alpha))
        cells[f"alpha {alpha:g}"] = cell
    dec = Decoding()
    real = gen.plain_greedy
    times = {"generate": 0.0, "pruned": 0.0}
    same = total = 0
    print(
        f"{args.model}: suites {args.suites}, {args.limit} items each, batch {args.batch_size}, "
        f"{dec.max_new_tokens} new tokens, cells: {', '.join(cells)}; {torch.get_num_threads()} threads"
    )
    for suite in args.suites.split(","):
        items = load_suite(suite).items[: args.limit]
        for name, cell in cells.items():
            replies = {}
            for arm in ("generate", "pruned"):
                gen.plain_greedy = real if arm == "pruned" else (lambda m: False)
                t = time.perf_counter()
                with scale_neurons(model, cell):
                    recs = run_suite(model, tok, suite, items, dec, args.batch_size)
                times[arm] += time.perf_counter() - t
                replies[arm] = [r["replies"] for r in recs]
            gen.plain_greedy = real
            n = len(replies["generate"])
            eq = sum(a == b for a, b in zip(replies["generate"], replies["pruned"]))
            same, total = same + eq, total + n
            print(f"  {suite:20s} {name:8s} {n} items, identical replies {eq}/{n}", flush=True)
    a, b = times["generate"], times["pruned"]
    print(f"model.generate {a:.1f} s, pruned greedy {b:.1f} s: {a / b:.2f}x faster; identical replies {same}/{total}")


def bench_sample(model, tok, args) -> None:
    import hedit.find.collect as col
    from hedit.config import SamplingConfig
    from hedit.io.questions import bundled_questions

    qs = bundled_questions("heldout")[: args.questions]
    cfg = SamplingConfig(samples=5, max_new_tokens=24)
    real = col.plain_greedy
    print(f"{args.model}: sampling {len(qs)} questions x {cfg.samples}, {cfg.max_new_tokens} new tokens, batch 32")
    res = {}
    for arm in ("generate", "hedit"):
        col.plain_greedy = real if arm == "hedit" else (lambda m: False)
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            out = col.collect(model, tok, qs, f"{d}/r.jsonl", cfg, 32, progress=False)
            sec = time.perf_counter() - t
            recs = col.read_responses(out)[1]
        col.plain_greedy = real
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
