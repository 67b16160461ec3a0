"""Commands of the measure stage: sweep and tune."""

from __future__ import annotations

from pathlib import Path

import click

from hedit.cli.options import (
    DEVICE,
    MODEL,
    NEG,
    NEURONS,
    QUIET,
    STRENGTH,
    SUITE_FILE,
    build,
    judge_from,
    judge_options,
    settings_options,
    suite_files,
    with_strength,
)
from hedit.config import EngineConfig, SweepConfig, TuneConfig
from hedit.errors import HeditError


@click.command()
@MODEL
@NEURONS
@click.option(
    "--out",
    default="hedit-sweep",
    show_default=True,
    type=click.Path(path_type=str),
    help="Folder for cells.jsonl (resumable), sweep.json and sweep.png.",
)
@STRENGTH
@settings_options(SweepConfig)
@settings_options(EngineConfig)
@SUITE_FILE
@NEG
@DEVICE
@QUIET
@judge_options
def sweep(model, neurons, strength, out, suite_files, allow_negative, device, quiet, **kw):
    """Compliance (per suite) and capability of MODEL at each alpha, H-neurons next to random controls."""
    from hedit.measure.summary import dose_lines, table
    from hedit.measure.sweep import run_sweep

    cfg, engine = build(SweepConfig, kw), build(EngineConfig, kw)
    neurons = with_strength(neurons, strength)
    summary = run_sweep(
        model,
        neurons,
        out,
        cfg,
        _files(suite_files),
        judge_from(kw),
        progress=not quiet,
        log=click.echo,
        device=device,
        allow_negative=allow_negative,
        engine=engine,
    )
    click.echo(table(summary))
    for line in dose_lines(summary):
        click.echo(line)
    click.echo(f"wrote {out}/sweep.json and {out}/sweep.png")


def _files(pairs):
    return suite_files(pairs)


@click.command()
@MODEL
@NEURONS
@click.option(
    "--work",
    default="hedit-tune",
    show_default=True,
    type=click.Path(path_type=str),
    help="Folder for the sweep it runs (resumable).",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(path_type=str),
    help="Write the tuned neurons file here (default: update --neurons in place).",
)
@settings_options(TuneConfig)
@settings_options(EngineConfig)
@SUITE_FILE
@NEG
@DEVICE
@QUIET
@judge_options
def tune(model, neurons, work, out, suite_files, allow_negative, device, quiet, **kw):
    """Choose alpha for NEURONS on MODEL within capability bounds and write it into the neurons file."""
    from hedit.choose.tune import tune as run
    from hedit.cli.options import HUB_NEURONS
    from hedit.measure.summary import dose_lines

    if out is None and click.get_current_context().meta.get(HUB_NEURONS):
        raise HeditError(f"--neurons {click.get_current_context().meta[HUB_NEURONS]} is a Hub neuron set: give --out")
    cfg, engine = build(TuneConfig, kw), build(EngineConfig, kw)
    if cfg.method == "fit":
        from hedit.choose.tune_fit import tune_fit

        tune_fit(model, neurons, work, cfg, out, _files(suite_files), judge_from(kw), progress=not quiet,
                 log=click.echo, device=device, allow_negative=allow_negative)  # fmt: skip
        click.echo(f"wrote the fitted alphas into {out or neurons} (report: {Path(work) / 'fit.json'}, fit.png)")
        return
    d = run(
        model,
        neurons,
        work,
        cfg,
        out,
        _files(suite_files),
        judge_from(kw),
        progress=not quiet,
        log=click.echo,
        device=device,
        allow_negative=allow_negative,
        engine=engine,
    )
    for r in d["candidates"]:
        comp = "-" if r["compliance"] is None else f"{r['compliance']:.3f}"
        state = "ok" if r["within_bounds"] else "; ".join(r["rejected_because"])
        acc = (
            "-"
            if r["trivia_accuracy"] is None
            else (f"{r['trivia_accuracy']:.3f} ({-r['accuracy_drop_points']:+.1f} pts vs alpha 1)")
        )
        click.echo(f"alpha {r['alpha']:<5g} compliance {comp}  trivia accuracy {acc}  KL {r['kl']:.4f}  {state}")
    for line in dose_lines(d["summary"]):
        click.echo(line)
    click.echo(f"alpha = {d['alpha']:g}: {d['reason']}")
    click.echo(f"wrote alpha into {out or neurons}; `hedit edit` uses it when --alpha is not given")


COMMANDS = [sweep, tune]
