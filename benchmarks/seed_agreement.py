"""Would a second sample find the same H-neurons? `identify` twice (or more), with different sampling seeds,
on the demo's settings, and the agreement of the neuron sets it finds.

For each pair of seeds: the sizes of both sets, their Jaccard overlap, and the share of each set's probe
weight (the sum of its neurons' positive weights) that the other set holds; the same for the stable sets
of stability selection (``probe --stability``). Each seed's run is cached in ``--work``/seed-<k> like any
``hedit identify`` work folder, so a rerun only recomputes what changed (and ``make demo``'s identify
folder can be copied in as seed 0: the demo is seed 0 of these settings).

    python benchmarks/seed_agreement.py [--model smollm2-135m-instruct] [--seeds 0,1] [--work bench-out/seeds]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

from hedit.config import EngineConfig
from hedit.find.identify import identify
from hedit.model.builtin import DEFAULT_MODEL
from hedit.neurons import NeuronSet
from hedit.run.demo import DEMO, demo_questions


def _key(n) -> tuple:
    return (n.layer, n.expert, n.index)


def agreement(a: NeuronSet, b: NeuronSet) -> dict:
    wa, wb = {_key(n): n.weight or 0.0 for n in a.neurons}, {_key(n): n.weight or 0.0 for n in b.neurons}
    both = set(wa) & set(wb)
    union = set(wa) | set(wb)
    return {
        "sizes": [len(wa), len(wb)],
        "common": len(both),
        "jaccard": len(both) / len(union) if union else None,
        "weight_held_by_other": [
            sum(wa[k] for k in both) / sum(wa.values()) if wa else None,
            sum(wb[k] for k in both) / sum(wb.values()) if wb else None,
        ],
    }


def stable_set(folder: Path) -> set:
    st = json.loads((folder / "report.json").read_text()).get("stability") or {}
    return {
        (p["layer"], p.get("expert"), p["index"]) for p in st.get("per_neuron", []) if p["frequency"] >= st["threshold"]
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--work", default="bench-out/seeds")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    sets, stable, times = {}, {}, {}
    for s in seeds:
        folder = Path(args.work) / f"seed-{s}"
        t = time.perf_counter()
        cfg = dataclasses.replace(DEMO, seed=s)
        identify(args.model, demo_questions(), folder, cfg, engine=EngineConfig(engine="hf"))
        times[s] = time.perf_counter() - t
        sets[s], stable[s] = NeuronSet.load(folder / "neurons.json"), stable_set(folder)
    out = {"model": args.model, "settings": "make demo's (hedit.run.demo.DEMO)", "seconds": times, "pairs": []}
    for a, b in itertools.combinations(seeds, 2):
        ag = agreement(sets[a], sets[b])
        sa, sb = stable[a], stable[b]
        ag["stable"] = {
            "sizes": [len(sa), len(sb)],
            "common": len(sa & sb),
            "jaccard": len(sa & sb) / len(sa | sb) if sa | sb else None,
        }
        out["pairs"].append({"seeds": [a, b]} | ag)
        w = ag["weight_held_by_other"]
        print(
            f"seeds {a} and {b}: {ag['sizes'][0]} and {ag['sizes'][1]} H-neurons, {ag['common']} in common "
            f"(Jaccard {ag['jaccard']:.2f}); each set's probe weight held by the other: {w[0]:.0%} and {w[1]:.0%}; "
            f"stable sets {len(sa)} and {len(sb)}, {len(sa & sb)} in common "
            f"(Jaccard {ag['stable']['jaccard'] or 0:.2f})"
        )
    print(f"identify wall time per seed: {', '.join(f'{s}: {t:.0f} s' for s, t in times.items())}")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    (Path(args.work) / "agreement.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
