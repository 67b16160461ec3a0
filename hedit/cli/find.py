"""Commands of the find stage: identify, collect, filter, features, probe."""

from __future__ import annotations

import click

from hedit.cli.options import (
    DEVICE,
    MODEL,
    NEURONS,
    QUIET,
    build,
    judge_from,
    judge_options,
    placement_from,
    placement_options,
    settings_options,
)
from hedit.config import CollectConfig, EngineConfig, FeaturesConfig, IdentifyConfig, ProbeConfig, SamplingConfig

QUESTIONS = click.option(
    "--questions",
    type=click.Path(path_type=str),
    default=None,
    help="Question file (.jsonl, .json, .csv, .parquet; BioASQ JSON too), a Hub dataset's split "
    "(hf://datasets/OWNER/NAME[@REV][:CONFIG][/SPLIT], e.g. "
    "hf://datasets/mandarjoshi/trivia_qa:rc.nocontext/validation), or a bundled set by name: trivia (the "
    "default) or fabricated (things that do not exist).",
)
LIMIT = click.option("--limit", type=int, default=None, help="Only the first N questions.")


@click.command()
@MODEL
@QUESTIONS
@click.option("--split", default=None, help="Use only this split of the question file (bundled: train).")
@click.option("--out", required=True, type=click.Path(path_type=str), help="Responses file (JSONL, appended).")
@settings_options(CollectConfig)
@LIMIT
@settings_options(EngineConfig)
@DEVICE
@QUIET
@judge_options
def collect(model, questions, split, out, limit, device, quiet, **kw):
    """Sample answers of MODEL (built-in name, folder or Hub id) to questions, judge them; resumable."""
    from hedit.find.collect import collect_model
    from hedit.io.questions import select_questions

    cfg, engine = build(CollectConfig, kw), build(EngineConfig, kw)
    grader = judge_from(kw)
    qs = select_questions(questions, split, limit, default_split="train")
    collect_model(model, qs, out, cfg, cfg.batch_size, device, not quiet, grader, engine, click.echo)
    click.echo(f"wrote responses for {len(qs)} questions to {out}")


@click.command("filter")
@click.argument("responses", type=click.Path(path_type=str))
@click.option("--out", required=True, type=click.Path(path_type=str))
@click.option(
    "--balance/--no-balance",
    "do_balance",
    default=True,
    show_default=True,
    help="Keep as many correct as hallucinated questions.",
)
@click.option("--seed", type=int, default=SamplingConfig.defaults()["seed"], show_default=True)
@QUIET
def filter_cmd(responses, out, do_balance, seed, quiet):
    """Keep questions answered consistently right or consistently wrong; balance the two classes."""
    from hedit.find.collect import class_counts, filter_file

    kept, total = filter_file(responses, out, do_balance, seed)
    click.echo(f"kept {len(kept)} of {total} questions {class_counts(kept)} -> {out}")


@click.command()
@MODEL
@click.argument("responses", type=click.Path(path_type=str))
@click.option("--out", required=True, type=click.Path(path_type=str), help="Features folder (created).")
@settings_options(FeaturesConfig)
@DEVICE
@placement_options
@QUIET
def features(model, responses, out, device, quiet, **kw):
    """CETT of every neuron, averaged per token region, for filtered RESPONSES of MODEL."""
    from hedit.find.features import features_from_file

    place = placement_from(kw)
    features_from_file(model, responses, out, build(FeaturesConfig, kw), device, not quiet, place)
    click.echo(f"wrote features to {out}")


@click.command()
@click.argument("features_dir", type=click.Path(path_type=str))
@click.option("--out", required=True, type=click.Path(path_type=str), help="neurons.json to write.")
@settings_options(ProbeConfig)
@click.option("--model", "for_model", default=None, help="Refuse features made from another model (name or folder).")
@click.option(
    "--qa-model",
    default=None,
    help="Also check held-out QA accuracy of this model (name or folder) with each C's neurons silenced.",
)
@click.option(
    "--qa-questions",
    default=None,
    type=click.Path(path_type=str),
    help="Questions for the QA check: a file or hf://datasets/... (default: the bundled trivia held-out split).",
)
@click.option("--qa-limit", type=int, default=None, help="Only the first N QA questions.")
@click.option(
    "--test-features",
    multiple=True,
    type=click.Path(path_type=str),
    help="Features of the same model on other questions (repeatable): score the probe, the H-neurons "
    "alone and random neurons on them.",
)
@DEVICE
@placement_options
@QUIET
def probe(features_dir, out, for_model, qa_model, qa_questions, qa_limit, test_features, device, quiet, **kw):
    """Fit the sparse L1 probe on FEATURES_DIR and write the H-neurons."""
    from hedit.find.probe import probe_features

    place = placement_from(kw)
    r = probe_features(
        features_dir,
        out,
        build(ProbeConfig, kw),
        for_model,
        qa_model,
        qa_questions,
        qa_limit,
        test_features,
        not quiet,
        device,
        place,
    )
    probe_summary(r, out)


def _auroc(m: dict) -> str:
    lo, hi = m["auroc_ci95"]
    return f"{m['auroc']:.3f} [{lo:.2f}, {hi:.2f}]"


def probe_summary(r: dict, out: str) -> None:
    from hedit.find.confounds import confound_lines
    from hedit.find.stability import stability_line

    h, rnd = r["h_neurons_only"], r["random_neurons_only"]
    control = ", length held fixed" if r.get("control") == "length" else ""
    click.echo(
        f"{r['h_neurons']} H-neurons ({r['fraction_of_neurons']:.3%} of neurons), C={r['C']:g}, {r['mode']}{control}"
        + (", the stable set" if r.get("select") == "stable" else "")
    )
    if r.get("c_grid", {}).get("grown"):
        click.echo(f"the C grid grew past its edge: {', '.join(f'{c:g}' for c in r['c_grid']['grown'])}")
    if r.get("c_grid", {}).get("warning"):
        click.echo(f"warning: {r['c_grid']['warning']}")
    click.echo(f"held-out: accuracy {r['heldout']['accuracy']:.3f}, AUROC {_auroc(r['heldout'])}")
    if r.get("qa_check"):
        q = r["qa_check"]
        chosen = next(s for s in r["c_sweep"] if s["C"] == r["C"])
        click.echo(
            f"QA accuracy {q['qa_accuracy']:.3f} unedited, {chosen['qa_accuracy_silenced']:.3f} with these "
            f"neurons silenced; C kept: {', '.join(f'{c:g}' for c in q['kept_C']) or 'none'}"
        )
        if "warning" in q:
            click.echo(f"warning: {q['warning']}")
    click.echo(
        f"H-neurons only {h['accuracy']:.3f} vs random neurons {rnd['accuracy']['mean']:.3f} "
        f"+- {rnd['accuracy']['std']:.3f} (accuracy, {rnd['draws']} draws)"
    )
    for name, t in r.get("transfer", {}).items():
        tr = t["random_neurons_only"]["auroc"]
        click.echo(
            f"on {name} ({t['answers']} answers, {t['hallucinated']} hallucinated): probe AUROC "
            f"{_auroc(t['probe'])}; H-neurons only {_auroc(t['h_neurons_only'])} vs random neurons "
            f"{tr['mean']:.3f} +- {tr['std']:.3f}"
        )
    st = r.get("stability")
    if st:
        click.echo(stability_line(st))
    for line in confound_lines(r.get("confounds"), r["heldout"]["auroc"], r.get("control", "none")):
        click.echo(line)
    plots = (
        "neurons_per_layer.png, c_sweep.png"
        + (", confounds.png" if r.get("confounds") else "")
        + (", stability.png" if st else "")
    )
    click.echo(f"wrote {out}, report.json, {plots}")


@click.command()
@click.argument("model", type=str, default="smollm2-135m-instruct")
@QUESTIONS
@click.option(
    "--work",
    default="hedit-work",
    show_default=True,
    type=click.Path(path_type=str),
    help="Folder for the cached stages.",
)
@LIMIT
@settings_options(IdentifyConfig)
@settings_options(EngineConfig)
@DEVICE
@QUIET
@judge_options
def identify(model, questions, work, limit, device, quiet, **kw):
    """Find the H-neurons of MODEL: collect, filter, features, probe (each stage cached in --work)."""
    from hedit.find.identify import identify as run
    from hedit.io.questions import select_questions

    cfg, engine = build(IdentifyConfig, kw), build(EngineConfig, kw)
    grader = judge_from(kw)
    qs = select_questions(questions, None, limit)
    r = run(model, qs, work, cfg, not quiet, log=click.echo, grader=grader, device=device, engine=engine)
    probe_summary(r, f"{work}/neurons.json")


@click.command()
@click.option("--base", required=True, help="The pre-trained base model (built-in name, folder or Hub id).")
@click.option("--instruct", required=True, help="The instruction-tuned model the neurons were found in.")
@NEURONS
@click.option(
    "--out",
    default="hedit-origin",
    show_default=True,
    type=click.Path(path_type=str),
    help="Folder for origin.json and drift.png.",
)
@click.option(
    "--identify-work",
    default=None,
    type=click.Path(path_type=str),
    help="identify's work folder for the instruct model: also score the probe on the base model's "
    "activations for the same responses.",
)
@click.option("--draws", type=int, default=2000, show_default=True, help="Random neuron sets for the baseline.")
@DEVICE
@QUIET
def origin(base, instruct, neurons, out, identify_work, draws, device, quiet):
    """Do the H-neurons already exist in the base model? Parameter drift and probe transfer."""
    from hedit.find.origin import run_origin

    if draws < 10:
        raise click.BadParameter("must be at least 10", param_hint="--draws")
    r = run_origin(base, instruct, neurons, out, identify_work, draws, device=device, progress=not quiet)
    h = r["h_neurons"]
    lo, hi = h["mean_rank_ci95"]
    rnd = h["random_mean_rank"]
    click.echo(
        f"H-neurons' mean rank of parameter drift {h['mean_rank']:.3f} [{lo:.3f}, {hi:.3f}] (0 = changed "
        f"least) vs random neurons {rnd['mean']:.3f} +- {rnd['std']:.3f}; p = {h['p_lower_than_random']:.3g} "
        "that they changed less by chance"
    )
    t = r.get("probe_transfer")
    if t:
        click.echo(
            f"probe on the base model's activations: AUROC {t['probe']['auroc']:.3f} "
            f"(instruct: {t['instruct_heldout']['auroc']:.3f}); H-neurons only "
            f"{t['h_neurons_only']['auroc']:.3f} vs random {t['random_neurons_only']['auroc']['mean']:.3f}"
        )
    click.echo(f"wrote {out}/origin.json and {out}/drift.png")


COMMANDS = [identify, collect, filter_cmd, features, probe, origin]
