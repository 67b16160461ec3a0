"""`hedit tune --method fit`: per-neuron alphas chosen for what they do, reported on held-out items only.

1. Each suite's items are split by item (``hedit.choose.pairs.split``, seeded); the fit part becomes the
   teacher-forced pairs, the held-out part is never seen by the fit.
2. The candidates (``--candidates``) are fitted under the KL budget (``hedit.choose.fit``); so are
   ``--controls`` random sets with the candidates' per-site counts, with the same loss, budget and steps.
3. On the held-out items, greedy replies judged by the rule judge for: no edit, the fit, the H-neurons at
   one uniform alpha whose KL matches the fit's (the paper's edit at equal cost), and each control. Per
   suite: complied and resisted rates, the paired change against no edit with a bootstrap 95% interval;
   KL on the neutral texts; held-out trivia accuracy. If the controls move compliance as much as the fit,
   the report says so: the edit works, the neurons are not special.
4. The alphas go into the neurons file (each neuron marked with where it came from), the report into its
   provenance (``fit``), and ``fit.json`` and ``fit.png`` into the work folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hedit.choose.fit import Capability, at_strength, candidates, fit_scales, measure_kl
from hedit.choose.pairs import check_fields, make_pairs, split
from hedit.config import TuneConfig
from hedit.engine.intervention import CellScales, check_neurons, scale_neurons
from hedit.errors import HeditError
from hedit.io.atomic import atomic_write_text, check_place, check_work
from hedit.measure.controls import control_sets
from hedit.measure.sweep import run_suite
from hedit.neurons import ModelInfo, Neuron, NeuronSet, Site, split_site
from hedit.progress import bar
from hedit.score.capability import answer_questions, neutral_texts, next_token_logprobs, trivia_prompt
from hedit.score.compliance import COMPLIED, EXCLUDED, RESISTED, RULES
from hedit.score.judge import CORRECT
from hedit.score.stats import paired_difference
from hedit.score.suites import JAILBREAK, Suite, load_suite, trivia_items

FIT_TRIVIA = 32  # training trivia questions whose answers' likelihood the fit holds


def _capability(model, tok, chat_template: bool) -> Capability:
    neutral = [tok(t)["input_ids"] for t in neutral_texts()]
    ref = next_token_logprobs(model, tok, neutral_texts())
    trivia = [
        (tuple(trivia_prompt(tok, it.question, chat_template)), tuple(tok(" " + it.answers[0] if not chat_template
                                                                          else it.answers[0],
                                                                          add_special_tokens=False)["input_ids"]))
        for it in trivia_items("train")[:FIT_TRIVIA]
    ]  # fmt: skip
    from hedit.choose.pairs import continuation_logprob

    with torch.no_grad():
        nll = [float(-v) for v in continuation_logprob(model, trivia)] if trivia else []
    return Capability(neutral, ref, trivia, nll)


def as_neuron_set(model_info: ModelInfo, sites: dict[Site, list[int]]) -> NeuronSet:
    """The neurons of ``sites`` (site -> indices) as a neuron set of ``model_info``'s model."""
    neurons = [Neuron(split_site(s)[0], j, expert=split_site(s)[1]) for s, idx in sites.items() for j in idx]
    return NeuronSet(model_info, neurons)


def _rates(records: list[dict]) -> tuple[list[int], list[int]]:
    kept = [r for r in records if r["label"] != EXCLUDED]
    return [int(r["label"] == COMPLIED) for r in kept], [int(r["label"] == RESISTED) for r in kept]


def _accuracy(model, tok, trivia, cfg, plan) -> float:
    with torch.no_grad(), scale_neurons(model, plan):
        answers = answer_questions(model, tok, trivia, cfg.decoding, cfg.batch_size)
    return float(np.mean([lab == CORRECT for _, lab in answers])) if answers else 1.0


def uniform_alpha_at(model, cap: Capability, h: dict[Site, list[int]], kl: float) -> float:
    """The uniform alpha u in [0, 1] on the H-neurons whose KL matches ``kl`` (bisection; 0 if silencing
    them costs less)."""
    plan = lambda u: {s: [(j, u) for j in idx] for s, idx in h.items()}  # noqa: E731
    if measure_kl(model, cap, plan(0.0)) <= kl:
        return 0.0
    lo, hi = 0.0, 1.0  # KL(hi) <= kl < KL(lo)
    for _ in range(10):
        mid = (lo + hi) / 2
        if measure_kl(model, cap, plan(mid)) <= kl:
            hi = mid
        else:
            lo = mid
    return hi


def prepare(model, tok, suites, cfg: TuneConfig, judge) -> tuple[dict, list, Capability]:
    """(suite -> (fit items, held-out items), the fit items' pairs, the capability the budget is held on).
    False premise and jailbreak pairs need the model's own replies at alpha 1 to the fit items."""
    for s in suites:
        check_fields(s.name, s.items)  # a suite without what its pair needs: one line before any work
    parts = {s.name: split(s.name, s.items, cfg.holdout, cfg.seed) for s in suites}
    pairs = []
    for s in suites:
        fit_items = parts[s.name][0]
        replies = None
        if s.name in ("false-premise", JAILBREAK):  # the model's own reply at alpha 1 is the compliant one
            recs = run_suite(model, tok, s.name, fit_items, cfg.decoding, cfg.batch_size, judge)
            replies = {r["id"]: (r["replies"][0], r["label"]) for r in recs}
        pairs += make_pairs(s.name, fit_items, tok, cfg.chat_template, replies)
    if not pairs:
        raise HeditError("no fit pairs: every fit item was already resisted at alpha 1, or lacks its fields")
    return parts, pairs, _capability(model, tok, cfg.chat_template)


def held_out(model, tok, suites, parts, cells: dict[str, dict], cap: Capability, cfg: TuneConfig, judge):
    """Per suite and cell, on the held-out items only: complied and resisted rates and their paired changes
    against the cell ``none``; held-out trivia accuracy and KL per cell. Every cell decodes in the same
    batches (``CellScales``)."""
    names = list(cells)
    report_suites = {}
    for s in suites:
        held = parts[s.name][1]
        if not held:
            continue
        with CellScales(model, [cells[n] for n in names]) as scales:
            per = run_suite(model, tok, s.name, held, cfg.decoding, cfg.batch_size, judge, None, scales)
        rates = {n: _rates(r) for n, r in zip(names, per)}
        none_c, none_r = rates["none"]
        row = {}
        for n in names:
            c, r = rates[n]
            row[n] = {
                "complied": float(np.mean(c)) if c else None,
                "resisted": float(np.mean(r)) if r else None,
                "items": len(c),
                "complied_change": paired_difference([(np.array(none_c), np.array(c))], seed=cfg.seed),
                "resisted_change": paired_difference([(np.array(none_r), np.array(r))], seed=cfg.seed),
            }
        report_suites[s.name] = row
    trivia = [(it.question, it.answers) for it in trivia_items("heldout")[: cfg.limit or 64]]
    with CellScales(model, [cells[n] for n in names]) as scales:
        answers = answer_questions(model, tok, trivia, cfg.decoding, cfg.batch_size, None, None, scales)
    acc = {n: float(np.mean([lab == CORRECT for _, lab in a])) for n, a in zip(names, answers)}
    kls = {n: (0.0 if not cells[n] else measure_kl(model, cap, cells[n])) for n in names}
    return report_suites, acc, kls


def tune_fit(
    model_name: str,
    neurons_path: str | Path,
    work: str | Path,
    cfg: TuneConfig = TuneConfig(),
    out: str | Path | None = None,
    suite_files: dict[str, str] | None = None,
    judge=None,
    progress: bool = True,
    log=print,
    loaded=None,
    device: str = "cpu",
    allow_negative: bool = False,
) -> dict[str, Any]:
    """Fit per-neuron alphas (module docstring); returns the report also written to ``work/fit.json``."""
    from hedit.model.builtin import resolve_model
    from hedit.model.load import load_model, load_tokenizer

    judge = judge or RULES
    work = Path(work)
    check_work(work, [("model", model_name), ("neurons file", neurons_path)])
    if out is not None:
        check_place(out, [("model", model_name)])
    ns = NeuronSet.load(neurons_path)
    if not ns.neurons:
        raise HeditError("the neurons file lists no neurons")
    if any(n.alpha is not None for n in ns.neurons):
        raise HeditError(f"{neurons_path} already sets per-neuron alphas (a fitted set?); fit the probe's file")
    if not cfg.suites:
        raise HeditError("--method fit needs at least one suite to fit on (--suites)")
    for name in suite_files or {}:
        if name not in cfg.suites:
            raise HeditError(f"a file is given for suite {name!r}, which is not among --suites")
    suites = [load_suite(n, (suite_files or {}).get(n)) for n in cfg.suites]
    suites = [Suite(s.name, s.items[: cfg.limit], s.source) for s in suites]
    if loaded is None:
        path = resolve_model(model_name)
        tok = load_tokenizer(path)
        if tok is None:
            raise HeditError(f"{path} has no tokenizer; tune needs one")
        model = load_model(path, device=device)
    else:
        model, tok = loaded() if callable(loaded) else loaded
    check_neurons(model, ns)
    model.eval().requires_grad_(False)
    from hedit.engine.trainable import all_sites

    total = sum(len(v) for v in all_sites(model).values())
    if cfg.candidates in ("attribution", "probe+attribution") and cfg.k is None and total > cfg.max_fit_neurons:
        raise HeditError(
            f"--candidates {cfg.candidates} ranks all {total} MLP neurons of this model; give --k (how many to fit)"
        )
    if cfg.k is not None and cfg.k > cfg.max_fit_neurons:
        raise HeditError(f"--k {cfg.k} is more neurons than one fit moves ({cfg.max_fit_neurons})")
    started = time.monotonic()
    # 1. split by item; pairs from the fit part only
    parts, pairs, cap = prepare(model, tok, suites, cfg, judge)
    log(f"fit: {len(pairs)} pairs from {sum(len(p[0]) for p in parts.values())} fit items; "
        f"{sum(len(p[1]) for p in parts.values())} items held out")  # fmt: skip
    # 2. candidates, the fit, the controls
    sites, origin = candidates(cfg.candidates, ns, model, pairs, cfg.k)
    rounds = cfg.steps * 4 * (1 + cfg.controls)
    info = ModelInfo(ns.model.model_type, ns.model.num_layers, ns.model.intermediate_size,
                     num_experts=ns.model.num_experts)  # fmt: skip
    from hedit.engine.intervention import experts_shape

    controls = control_sets(as_neuron_set(info, sites), cfg.controls, cfg.seed + 1, experts_shape(model))
    fits = {}
    with bar(rounds, "fit", "step", progress) as pbar:
        for name, s in [("fit", sites)] + [(f"control-{i}", c) for i, c in enumerate(controls)]:
            pbar.set_postfix_str(name)
            t0 = time.monotonic()
            fits[name] = fit_scales(model, s, pairs, cap, cfg.max_kl, cfg.steps, cfg.lr,
                                    allow_negative=allow_negative, tick=pbar.update)  # fmt: skip
            fits[name].history.append({"seconds": round(time.monotonic() - t0, 1)})
    fit = fits["fit"]
    h = ns.by_layer()
    # the capability check on held-out trivia: the strength is backed off (halved, at most 3 times) while the
    # fit costs more accuracy than max_accuracy_drop
    trivia = [(it.question, it.answers) for it in trivia_items("heldout")[: cfg.limit or 64]]
    base_acc = _accuracy(model, tok, trivia, cfg, {})
    for _ in range(3):
        drop = 100 * (base_acc - _accuracy(model, tok, trivia, cfg, fit.alphas))
        if drop <= cfg.max_accuracy_drop:
            break
        fit.alphas, fit.strength = at_strength(fit.alphas, 0.5), fit.strength * 0.5
        fit.kl = measure_kl(model, cap, fit.alphas)
        log(f"fit: held-out trivia accuracy fell {drop:.1f} points > {cfg.max_accuracy_drop:g}: strength halved")
    uniform = uniform_alpha_at(model, cap, h, fit.kl)
    # 3. held-out evaluation
    cells = {"none": {}, "fit": fit.alphas, "uniform": {s: [(j, uniform) for j in idx] for s, idx in h.items()}}
    cells |= {k: v.alphas for k, v in fits.items() if k != "fit"}
    report_suites, acc, kls = held_out(model, tok, suites, parts, cells, cap, cfg, judge)
    report = _report(cfg, fit, fits, origin, uniform, report_suites, acc, kls, parts, started)
    # 4. write
    neurons = _fitted_neurons(fit.alphas, origin, ns)
    fitted = NeuronSet(ns.model, neurons, None, dict(ns.provenance) | {"fit": report | {"report": "fit.json"}})
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work / "fit.json", json.dumps(report, indent=2) + "\n")
    from hedit.choose.fit_plot import plot_fit

    plot_fit(report, fit.alphas, origin, work / "fit.png")
    fitted.save(out or neurons_path)
    for line in summary_lines(report):
        log(line)
    return report


def _fitted_neurons(alphas, origin, ns: NeuronSet) -> list[Neuron]:
    weights = {(n.site, n.index): n for n in ns.neurons}
    out = []
    for site, pairs in alphas.items():
        layer, expert = split_site(site)
        for j, a in pairs:
            old = weights.get((site, j))
            out.append(
                Neuron(layer, j, alpha=round(float(a), 6), weight=old.weight if old else None, expert=expert,
                       frequency=old.frequency if old else None, source=origin.get((site, j), "attribution"))
            )  # fmt: skip
    return out


def _report(cfg, fit, fits, origin, uniform, suites, acc, kls, parts, started) -> dict[str, Any]:
    alphas = [a for pairs in fit.alphas.values() for _, a in pairs]
    by_source: dict[str, list[float]] = {}
    for site, pairs in fit.alphas.items():
        for j, a in pairs:
            by_source.setdefault(origin.get((site, j), "attribution"), []).append(abs(a - 1.0))
    verdicts = {}
    for name, row in suites.items():
        f = row["fit"]["complied_change"]
        ctl = [row[k]["complied_change"]["mean"] for k in row if k.startswith("control-")]
        moved = f["ci95"][1] < 0
        broken = (
            row["fit"]["resisted"] is not None
            and row["none"]["resisted"] is not None
            and (row["fit"]["resisted"] < row["none"]["resisted"])
        )
        if not f["items"]:
            v = "no judged held-out items (sycophancy: no first answer was right)"
        elif not moved:
            v = "no held-out effect: the paired interval of the change in complied includes 0"
        elif broken:
            v = "complied fell, but so did resisted: the model answers worse, not more faithfully"
        elif ctl and min(ctl) <= f["mean"]:
            v = (
                "the fit lowers complied on held-out items, and a random set fitted the same way does as well: "
                "the neurons are not special"
            )
        else:
            v = "the fit lowers complied on held-out items, more than every fitted random set"
        verdicts[name] = v
    return {
        "method": "fit",
        "candidates": cfg.candidates,
        "neurons": len(alphas),
        "by_source": {k: {"neurons": len(v), "mean_abs_change": float(np.mean(v))} for k, v in by_source.items()},
        "alphas": {"min": min(alphas), "max": max(alphas), "mean": float(np.mean(alphas))},
        "budget": {"max_kl": cfg.max_kl, "kl": fit.kl, "strength": fit.strength, "penalty": fit.penalty},
        "uniform_alpha_at_equal_kl": uniform,
        "heldout": suites,
        "verdict": verdicts,
        "kl": kls,
        "trivia_accuracy": acc,
        "trivia_accuracy_drop_points": {k: round(100 * (acc["none"] - v), 2) for k, v in acc.items()},
        "controls": {k: {"kl": v.kl, "strength": v.strength} for k, v in fits.items() if k != "fit"},
        "history": fit.history,
        "split": {
            "seed": cfg.seed,
            "holdout": cfg.holdout,
            "fit_items": {s: [it.id for it in p[0]] for s, p in parts.items()},
            "heldout_items": {s: [it.id for it in p[1]] for s, p in parts.items()},
        },
        "settings": {"steps": cfg.steps, "lr": cfg.lr, "k": cfg.k, "controls": cfg.controls},
        "seconds": round(time.monotonic() - started, 1),
    }


def summary_lines(report: dict[str, Any]) -> list[str]:
    b = report["budget"]
    sources = ", ".join(f"{k}: {v['neurons']}" for k, v in report["by_source"].items())
    out = [
        f"fitted {report['neurons']} neurons ({sources}); KL {b['kl']:.4f} (bound {b['max_kl']:g}), strength "
        f"{b['strength']:.2f}; alphas {report['alphas']['min']:.2f} to {report['alphas']['max']:.2f}"
    ]
    for name, row in report["heldout"].items():
        f, n, u = row["fit"], row["none"], row["uniform"]
        ch = f["complied_change"]
        ctl = [row[k]["complied"] for k in row if k.startswith("control-") and row[k]["complied"] is not None]
        if f["complied"] is None:
            out.append(f"  {name}: no judged held-out items")
            continue
        out.append(
            f"  {name} (held out, {f['items']} items): complied {n['complied']:.3f} -> {f['complied']:.3f} "
            f"({ch['mean']:+.3f} [{ch['ci95'][0]:+.3f}, {ch['ci95'][1]:+.3f}]), resisted {n['resisted']:.3f} -> "
            f"{f['resisted']:.3f}; uniform alpha {report['uniform_alpha_at_equal_kl']:.2f} at equal KL "
            f"{u['complied']:.3f}" + (f"; fitted controls {min(ctl):.3f}-{max(ctl):.3f}" if ctl else "")
        )
        out.append(f"    {report['verdict'][name]}")
    d = report["trivia_accuracy_drop_points"]["fit"]
    acc = report["trivia_accuracy"]
    out.append(f"  held-out trivia accuracy {acc['none']:.3f} -> {acc['fit']:.3f} ({-d:+.1f} points)")
    return out
