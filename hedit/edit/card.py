"""What every hedit output carries: ``hedit.json`` (provenance and evidence) and ``README.md`` (the model
card: this module's frame, around each writer's own sections on how the edit is held and how to load
it). Neither holds an absolute local path: sources and files are named by Hub id or file name, and
identified by SHA-256.

The evidence is what the neurons file already knows (the probe's held-out figures against random
neurons, its confound check, tune's decision with the sweep table) plus the plots found beside it, so a
person who finds the model on the Hub can tell whether the edit does anything.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from hedit import __version__
from hedit.edit.plan import EditPlan

EVIDENCE_PLOTS = ("neurons_per_layer.png", "c_sweep.png", "confounds.png", "stability.png", "sweep.png", "fit.png")
INTRO = (
    "H-neurons are the few MLP neurons whose activations predict when a model hallucinates "
    "(Gao et al., *H-Neurons: On the Existence, Impact, and Origin of Hallucination-Associated Neurons "
    "in LLMs*, arXiv 2512.01797). Scaling them moves the model's over-compliance."
)


def provenance(
    plan: EditPlan,
    kind: str,
    weight_sha256: dict[str, str],
    neurons_file: str | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ns = plan.neurons
    data = {
        "hedit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": kind,
        "target": plan.target,
        "source": {
            "base_model": plan.base_model,
            "name": plan.source.name,
            "revision": ns.model.revision,
            "model_type": plan.model_type,
            "num_layers": plan.num_layers,
            "intermediate_size": plan.intermediate_size,
            "weight_sha256": weight_sha256,
        },
        "neurons": {
            "file": Path(neurons_file).name if neurons_file else None,
            "sha256": hashlib.sha256(json.dumps(ns.to_dict(), sort_keys=True).encode()).hexdigest(),
            "count": plan.num_neurons,
            "per_layer": {str(layer): len(v) for layer, v in plan.layers.items()},
        },
        "alpha": plan.cli_alpha if plan.cli_alpha is not None else ns.alpha,
        "alphas_used": plan.alphas(),
        "evidence": evidence(ns),
    }
    if plan.checkpoint is not None:
        data["skipped_source_files"] = plan.checkpoint.skipped_entries()
    if extra:
        data.update(extra)
    return data


def evidence(ns) -> dict[str, Any]:
    """The neurons file's own record of why these neurons: probe figures and tune's decision."""
    prov = ns.provenance if isinstance(ns.provenance, dict) else {}
    out: dict[str, Any] = {}
    probe = prov.get("probe")
    if isinstance(probe, dict):
        out["probe"] = {
            k: probe[k]
            for k in ("mode", "control", "select", "C", "heldout", "h_neurons_only", "random_neurons_only")
            + ("confounds", "stability", "transfer")
            if k in probe
        }
    tune = prov.get("tune")
    if isinstance(tune, dict):
        out["tune"] = {
            k: tune[k] for k in ("alpha", "reason", "bounds", "candidates", "paired", "compliance_at_1") if k in tune
        }
    for key in ("sweep", "verify", "hub", "fit", "strength"):
        if isinstance(prov.get(key), (dict, float, int)) and not isinstance(prov.get(key), bool):
            out[key] = prov[key]
    if isinstance(out.get("fit"), dict):  # the report without its item lists and optimisation history
        out["fit"] = {k: v for k, v in out["fit"].items() if k not in ("split", "history")}
    return out


def plots_beside(neurons_file: str | Path | None) -> list[Path]:
    """The evidence plots that probe, tune or sweep left beside the neurons file (or in its tune/sweep
    folders), to copy into the artifact."""
    if neurons_file is None:
        return []
    from hedit.io.files import allowed_root, check_inside

    folder = Path(neurons_file).parent
    root = allowed_root(folder)  # the folder, or a cached Hub neuron set's cache folder
    found = []
    for name in EVIDENCE_PLOTS:
        for where in (folder, folder / "sweep", folder / "tune", folder / "fit"):
            if os.path.lexists(where / name):
                found.append(check_inside(where / name, root, "an evidence plot beside the neurons file"))
                break
    return found


def _front_matter(base: str | None, library: str, tags: list[str], relation: str) -> str:
    """The card's YAML metadata as the Hub reads it: ``base_model`` only when it is a Hub id (a local
    folder's name would be a broken link), ``base_model_relation`` (adapter or finetune)."""
    lines = ["---"] + ([f"base_model: {base}", f"base_model_relation: {relation}"] if base else [])
    lines += [f"library_name: {library}", "tags:"]
    lines += [f"- {t}" for t in tags]
    return "\n".join(lines + ["---", ""])


def _alpha_text(plan: EditPlan) -> str:
    alphas = plan.alphas()
    if len(alphas) == 1:
        return f"alpha = {alphas[0]:g}"
    return f"per-neuron alphas from {min(alphas):g} to {max(alphas):g}"


def _change_text(plan: EditPlan) -> str:
    where = (
        "row *j* of each edited `up_proj.weight` (in a gated MLP the neuron's activation is linear in it)"
        if plan.target == "up"
        else "column *j* of each edited `down_proj.weight`"
    )
    return (
        f"{plan.num_neurons} MLP neurons in {len(plan.layers)} of {plan.num_layers} layers "
        f"of `{plan.base_model}` ({plan.model_type}) are scaled by {_alpha_text(plan)}: "
        "each chosen neuron's activation, the input of `mlp.down_proj`, is multiplied by its alpha "
        f"(0 silences it, 1 leaves it unchanged). The scale is folded into {where}."
    )


def fit_lines(fit: dict[str, Any] | None, strength: float | None) -> list[str]:
    """The card's lines for per-neuron alphas from ``tune --method fit``: the alphas by source, the budget,
    and per suite the held-out effect against no edit, the uniform alpha at equal KL and fitted controls."""
    try:
        return _fit_lines(fit, strength)
    except (KeyError, TypeError, ValueError, AttributeError):  # a hand-edited report: the card goes without it
        return []


def _fit_lines(fit: dict[str, Any] | None, strength: float | None) -> list[str]:
    if not isinstance(fit, dict) or "heldout" not in fit:
        return []
    src = ", ".join(
        f"{k} {v['neurons']} (mean |alpha - 1| {v['mean_abs_change']:.2f})" for k, v in fit["by_source"].items()
    )
    b = fit["budget"]
    out = [
        f"- **Fitted alphas** (`tune --method fit`, {fit['candidates']}): {fit['neurons']} neurons, {src}; alphas "
        f"{fit['alphas']['min']:.2f} to {fit['alphas']['max']:.2f}; KL {b['kl']:.4f} under the bound {b['max_kl']:g}"
        + (f"; written at strength {strength:g}" if strength is not None else "")
        + "."
    ]
    for name, row in fit["heldout"].items():
        f, n = row["fit"], row["none"]
        if f.get("complied") is None:
            continue
        ch = f["complied_change"]
        ctl = [row[k]["complied"] for k in row if k.startswith("control-") and row[k]["complied"] is not None]
        out.append(
            f"- **{name}**, held-out items ({f['items']}): complied {n['complied']:.3f} -> {f['complied']:.3f} "
            f"({100 * ch['mean']:+.1f} points [{100 * ch['ci95'][0]:+.1f}, {100 * ch['ci95'][1]:+.1f}]), resisted "
            f"{n['resisted']:.3f} -> {f['resisted']:.3f}; one uniform alpha at equal KL "
            f"{row['uniform']['complied']:.3f}"
            + (f"; random sets fitted the same way {min(ctl):.3f}-{max(ctl):.3f}" if ctl else "")
            + f". {fit['verdict'].get(name, '')}"
        )
    return out


def evidence_text(ev: dict[str, Any], plots: list[str]) -> str:
    lines = []
    hub = ev.get("hub") or {}
    if hub.get("warning"):
        lines.append(f"- **Warning**: the neuron set `{hub.get('repo')}` from the Hub: {hub['warning']}.")
    probe = ev.get("probe")
    if probe and "heldout" in probe:
        h = probe["heldout"]
        ci = h.get("auroc_ci95") or [float("nan")] * 2
        line = (
            f"- **Detection** (the probe on held-out answers): AUROC {h['auroc']:.3f} "
            f"[{ci[0]:.2f}, {ci[1]:.2f}], accuracy {h['accuracy']:.3f}"
        )
        only, rnd = probe.get("h_neurons_only"), probe.get("random_neurons_only")
        if only and rnd:
            line += (
                f"; these neurons alone {only['accuracy']:.3f} against {rnd['accuracy']['mean']:.3f} "
                f"± {rnd['accuracy']['std']:.3f} for as many random neurons"
            )
        lines.append(line + ".")
        conf = probe.get("confounds")
        if conf and conf.get("length_only"):

            def num(m):
                v = (m or {}).get("auroc")
                return "n/a" if v is None else f"{v:.3f}"

            lm = conf.get("length_matched") or {}
            lines.append(
                f"- **Confound check**: a length-only classifier reaches AUROC {num(conf['length_only'])}; "
                f"on a length-matched subset ({lm.get('answers', 0)} answers) the probe's AUROC is {num(lm)}"
                + (
                    f"; {conf['track_length_more_than_label']} H-neurons correlate more with length than with "
                    "hallucination"
                    if "track_length_more_than_label" in conf
                    else ""
                )
                + "."
            )
            beyond = (conf.get("beyond_length") or {}).get("heldout") or {}
            if beyond.get("difference"):
                d = beyond["difference"]
                lines.append(
                    f"- **Beyond length**: length alone AUROC {num(beyond['length'])}, length and these neurons "
                    f"{num(beyond['length_and_h_neurons'])}: {d['auroc']:+.3f} [{d['ci95'][0]:+.2f}, "
                    f"{d['ci95'][1]:+.2f}] (paired bootstrap, {beyond['rows']} held-out answers)"
                    + ("; the probe held length fixed (`--control length`)" if probe.get("control") == "length" else "")
                    + "."
                )
        st = probe.get("stability")
        if st:
            line = (
                f"- **Stability**: {st['stable']} neurons chosen in at least {st['threshold']:.0%} of "
                f"{st['resamples']} refits on half the training questions; {st['overlap']} of them among the "
                f"single fit's {st['single_fit']}"
            )
            if st.get("stable_only") and st.get("random_like_stable"):
                line += (
                    f"; the stable set alone reaches AUROC {st['stable_only']['auroc']:.3f} against "
                    f"{st['random_like_stable']['auroc']['mean']:.3f} for as many random neurons"
                )
            which = {"fit": "the single fit's neurons", "stable": "the stable set"}.get(probe.get("select"))
            used = f". This edit uses {which}." if which else "."
            lines.append(line + used)
    lines += fit_lines(ev.get("fit"), ev.get("strength"))
    tune = ev.get("tune")
    if tune:
        lines.append(f"- **Alpha**: {tune.get('alpha')}: {tune.get('reason', '')}")
    sweep = ev.get("sweep")
    if sweep and sweep.get("dose_response"):
        for suite, h in sweep["dose_response"].items():
            lo, hi = h["ci95"]
            c = h.get("controls_slopes")
            line = (
                f"- **{suite}**: {100 * h['slope']:+.2f} points of compliance per unit of alpha "
                f"[{100 * lo:+.2f}, {100 * hi:+.2f}] over {h['items']} items"
            )
            if c:
                line += f"; random controls {100 * c['min']:+.2f} to {100 * c['max']:+.2f}"
            if lo <= 0 <= hi:
                line += f" (no effect found; the smallest detectable slope was {100 * h['min_detectable']:.2f})"
            lines.append(line + ".")
    for name, h in ((sweep or {}).get("lm_eval") or {}).items():
        vals = ", ".join(f"{r['alpha']:g}: {r['value']:.3f}" for r in h["per_alpha"] if r["value"] is not None)
        lines.append(f"- **lm-eval {name}** ({h['metric']} of the H-neurons' edit, by alpha): {vals}.")
    verify = ev.get("verify")
    if verify:
        for runtime, r in verify.items():
            lines.append(
                f"- **Verified in {runtime}**: {'PASS' if r.get('passed') else 'FAIL'} "
                f"({', '.join(f'{k} {v:.3g}' for k, v in r.items() if isinstance(v, float))})."
            )
    if not lines:
        return (
            "No evidence travels with this edit: its neurons file carries no probe or tune record. "
            "`hedit identify` and `hedit tune` write one.\n"
        )
    text = "\n".join(lines) + "\n"
    for p in plots:
        text += f"\n![{Path(p).stem}](evidence/{Path(p).name})\n"
    return text


def card(
    plan: EditPlan, library: str, tags: list[str], title: str, how: str, use: str, ev: dict[str, Any], plots: list[str]
) -> str:
    return (
        _front_matter(plan.hub_base, library, tags, "adapter" if library == "peft" or "lora" in tags else "finetune")
        + f"""
# {title}

{INTRO}

## What was changed
{_change_text(plan)}

{how} Which neurons, the alpha and the SHA-256 of every source weight file are in `hedit.json`.

## Evidence
{evidence_text(ev, plots)}
## Use
{use}
Made with hedit {__version__}.
"""
    )
