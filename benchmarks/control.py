"""Edits that control, side by side, on held-out items only: no edit, the paper's uniform alpha, fitted
per-neuron alphas on the H-neurons, attribution top-K (K = the H-neuron count), the default
probe+attribution fit, and random sets fitted the same way (3 draws), on the embedded models.

    python benchmarks/control.py --model smollm2-135m-instruct --neurons tests/data/smollm2_h_neurons.json
    python benchmarks/control.py --model gemma3-270m --neurons gemma-demo/identify/neurons.json \\
        --suites misleading-context,false-premise

Per edit: held-out complied and resisted rates per suite with the paired 95% interval of the change
against no edit, KL on the neutral texts, held-out trivia accuracy, and the fit's wall time; the
targets of issue "edits that control" are checked and the shortfall printed. Writes ``<out>/control.json``.
Items are split by item (seeded); only the fit half enters any fit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from hedit.choose.fit import candidates, fit_scales
from hedit.choose.tune_fit import as_neuron_set, held_out, prepare, uniform_alpha_at
from hedit.config import TuneConfig
from hedit.engine.intervention import experts_shape
from hedit.measure.controls import control_sets
from hedit.model.builtin import resolve_model
from hedit.model.load import load_model, load_tokenizer
from hedit.neurons import NeuronSet
from hedit.score.compliance import RULES
from hedit.score.suites import Suite, load_suite


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--neurons", default="tests/data/smollm2_h_neurons.json")
    ap.add_argument("--suites", default="misleading-context,false-premise,sycophancy,jailbreak")
    ap.add_argument("--limit", type=int, default=None, help="items per suite (default: all)")
    ap.add_argument("--steps", type=int, default=TuneConfig().steps)
    ap.add_argument("--controls", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--out", default="bench-out/control")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    cfg = TuneConfig(
        method="fit", suites=tuple(a.suites.split(",")), limit=a.limit, steps=a.steps, max_new_tokens=a.max_new_tokens
    )
    path = resolve_model(a.model)
    model, tok = load_model(path), load_tokenizer(path)
    cfg = TuneConfig.from_dict(cfg.to_dict() | {"chat_template": bool(getattr(tok, "chat_template", None))})
    model.eval().requires_grad_(False)
    ns = NeuronSet.load(a.neurons)
    suites = [Suite(s.name, s.items[: cfg.limit], s.source) for s in (load_suite(n) for n in cfg.suites)]
    t0 = time.monotonic()
    parts, pairs, cap = prepare(model, tok, suites, cfg, RULES)
    print(f"{a.model}: {len(pairs)} fit pairs; held out: " + ", ".join(f"{k} {len(v[1])}" for k, v in parts.items()))
    h = ns.by_layer()
    edits, seconds = {}, {}
    for name, kind in (("fit: H-neurons", "probe"), ("fit: attribution top-K", "attribution"),
                       ("fit: probe+attribution", "probe+attribution")):  # fmt: skip
        t = time.monotonic()
        sites, _ = candidates(kind, ns, model, pairs, None)
        r = fit_scales(model, sites, pairs, cap, cfg.max_kl, cfg.steps, cfg.lr)
        edits[name], seconds[name] = r.alphas, round(time.monotonic() - t, 1)
        print(f"  {name}: {sum(len(v) for v in sites.values())} neurons, KL {r.kl:.4f}, strength {r.strength:.2f}, "
              f"{seconds[name]} s")  # fmt: skip
    default_sites = candidates("probe+attribution", ns, model, pairs, None)[0]
    for k, c in enumerate(control_sets(as_neuron_set(ns.model, default_sites), a.controls, 1, experts_shape(model))):
        t = time.monotonic()
        r = fit_scales(model, c, pairs, cap, cfg.max_kl, cfg.steps, cfg.lr)
        edits[f"random, fitted ({k})"], seconds[f"random, fitted ({k})"] = r.alphas, round(time.monotonic() - t, 1)
    kl_fit = max(1e-9, _kl(model, cap, edits["fit: probe+attribution"]))
    u = uniform_alpha_at(model, cap, h, kl_fit)
    uniform = {s: [(j, u) for j in i] for s, i in h.items()}
    silenced = {s: [(j, 0.0) for j in i] for s, i in h.items()}
    cells = {"none": {}, "uniform alpha 0 (the paper's)": silenced, f"uniform alpha {u:.2f} (KL of the fit)": uniform}
    cells |= edits
    suites_out, acc, kls = held_out(model, tok, suites, parts, cells, cap, cfg, RULES)
    result = {"model": a.model, "neurons": len(ns.neurons), "pairs": len(pairs), "seconds": seconds,
              "heldout": suites_out, "trivia_accuracy": acc, "kl": kls, "wall_s": round(time.monotonic() - t0, 1),
              "settings": {"steps": cfg.steps, "max_kl": cfg.max_kl, "limit": cfg.limit, "controls": a.controls,
                           "max_new_tokens": cfg.max_new_tokens, "holdout": cfg.holdout}}  # fmt: skip
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"control-{Path(a.model).name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0


def _kl(model, cap, plan) -> float:
    from hedit.choose.fit import measure_kl

    return measure_kl(model, cap, plan)


def table(r: dict) -> str:
    suites = list(r["heldout"])
    head = "| edit | " + " | ".join(f"{s}: complied (resisted), change [95% CI]" for s in suites)
    head += " | KL | trivia accuracy | fit time |"
    lines = [head, "|" + " --- |" * (len(suites) + 4)]
    for cell in r["kl"]:
        parts = []
        for s in suites:
            c = r["heldout"][s][cell]
            ch = c["complied_change"]
            if c["complied"] is None:
                parts.append("-")
                continue
            delta = (
                ""
                if cell == "none"
                else f", {100 * ch['mean']:+.1f} [{100 * ch['ci95'][0]:+.1f}, {100 * ch['ci95'][1]:+.1f}]"
            )
            parts.append(f"{c['complied']:.3f} ({c['resisted']:.3f}){delta}")
        secs = r["seconds"].get(cell)
        cap = f" | {r['kl'][cell]:.4f} | {r['trivia_accuracy'][cell]:.3f} | "
        lines.append(f"| {cell} | " + " | ".join(parts) + cap + (f"{secs} s |" if secs is not None else "- |"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
