"""Do the H-neurons found on hedit's bundled trivia carry over to real QA data nobody here wrote?

1. identify on the bundled set with the demo's settings (reuses a `make demo` folder with --demo);
2. for each real set (default: ../shared/data TriviaQA sample and NQ-Open sample): collect with the same
   sampling, keep consistently answered questions, balance the classes, extract CETT features;
3. refit the probe on the bundled features and score, on each real set's answer tokens, the L1 probe,
   a probe on the H-neurons alone, and probes on random neurons of the same number (the paper's claim,
   out of distribution).

Every stage is resumable or cached in --work. On 2 CPU cores with the defaults: about 29 minutes,
23 when --demo reuses identify.

    python benchmarks/transfer.py [--demo demo-out] [--work transfer-out] [--limit N] [DATA.jsonl ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hedit.find.collect import balance, class_counts, collect, consistent, read_responses
from hedit.find.features import META, extract
from hedit.find.identify import identify
from hedit.find.probe import run_probe
from hedit.io.questions import load_questions
from hedit.model.builtin import DEFAULT_MODEL, resolve_model
from hedit.model.load import load_model, load_tokenizer
from hedit.run.demo import DEMO, demo_questions

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_SETS = [SHARED / "triviaqa-sample-600.jsonl", SHARED / "nq-open-dev-sample-1000.jsonl"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="*", type=Path, default=DEFAULT_SETS, help="Question files (TriviaQA/NQ/flat).")
    ap.add_argument("--demo", type=Path, default=None, help="A `make demo` output folder to reuse.")
    ap.add_argument("--work", type=Path, default=Path("transfer-out"))
    ap.add_argument("--limit", type=int, default=None, help="Only the first N questions of each set.")
    ap.add_argument("--random-draws", type=int, default=20)
    args = ap.parse_args()
    t0 = time.time()

    found = (args.demo or args.work) / "identify"
    if not (found / "features" / META).is_file():
        identify(DEFAULT_MODEL, demo_questions(), found, DEMO)
    path = resolve_model(DEFAULT_MODEL)
    model, tok = load_model(path), load_tokenizer(path)

    tests = []
    for data in args.data:
        work = args.work / data.stem
        qs = load_questions(data)[: args.limit]
        responses = collect(model, tok, qs, work / "responses.jsonl", DEMO.sampling, DEMO.batch_size, DEFAULT_MODEL)
        records = read_responses(responses)[1]
        kept = consistent(records)
        print(f"{data.name}: {len(records)} questions, consistently answered {class_counts(kept)}", flush=True)
        kept = balance(kept, DEMO.seed)
        extract(model, tok, kept, work / "features", DEFAULT_MODEL, batch_size=DEMO.batch_size)
        tests.append(work / "features")

    r = run_probe(
        found / "features",
        args.work / "probe" / "neurons.json",
        DEMO.probe.replace(random_draws=args.random_draws),
        test_features=tuple(tests),
    )
    print(
        f"\n{r['h_neurons']} H-neurons from the bundled set (C={r['C']:g}); AUROC on answer tokens, "
        f"random neurons as mean +- std over {args.random_draws} draws of {r['h_neurons']}:\n"
    )

    def auroc(m: dict) -> str:
        return f"{m['auroc']:.3f} [{m['auroc_ci95'][0]:.2f}, {m['auroc_ci95'][1]:.2f}]"

    print("| questions | answers (hallucinated) | L1 probe [95% CI] | H-neurons only [95% CI] | random neurons |")
    print("| --- | --- | --- | --- | --- |")
    rnd = r["random_neurons_only"]["auroc"]
    print(
        f"| bundled held-out | {r['rows']['heldout_answers']} ({r['rows']['heldout_positive']}) | "
        f"{auroc(r['heldout'])} | {auroc(r['h_neurons_only'])} | {rnd['mean']:.3f} +- {rnd['std']:.3f} |"
    )
    for name, t in r["transfer"].items():
        rnd = t["random_neurons_only"]["auroc"]
        print(
            f"| {Path(name).parent.name} | {t['answers']} ({t['hallucinated']}) | {auroc(t['probe'])} | "
            f"{auroc(t['h_neurons_only'])} | {rnd['mean']:.3f} +- {rnd['std']:.3f} |"
        )
    (args.work / "transfer.json").write_text(json.dumps(r, indent=2) + "\n")
    print(f"\n{(time.time() - t0) / 60:.1f} min; full report in {args.work / 'transfer.json'}")


if __name__ == "__main__":
    main()
