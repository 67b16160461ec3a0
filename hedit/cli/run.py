"""Commands that run everything: run (a recipe), and architectures."""

from __future__ import annotations

import json

import click

from hedit.cli.options import judge_from, judge_options


@click.command("run")
@click.argument("recipe", type=click.Path(path_type=str))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe value, e.g. --set identify.samples=5 --set tune.alphas=[0,0.5,1].",
)
@click.option("--model", default=None, help="Override the recipe's model.")
@click.option("--work", default=None, type=click.Path(path_type=str), help="Override the recipe's work folder.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@judge_options
def run_cmd(recipe, overrides, model, work, quiet, **kw):
    """Run a recipe: identify, tune, edit, export-adapter and verify, each stage cached."""
    from hedit.run.pipeline import run_recipe
    from hedit.run.recipe import load_recipe

    extra = (
        list(overrides)
        + ([f"model={json.dumps(model)}"] if model else [])
        + ([f"work={json.dumps(work)}"] if work else [])
    )
    r = run_recipe(load_recipe(recipe, extra), not quiet, click.echo, judge_from(kw))
    tuned = r["tune"]
    edit = f"alpha {tuned['alpha']:g}" if "alpha" in tuned else f"{tuned['neurons']} fitted alphas"
    click.echo(
        f"done: artifacts in {r['work']}: {', '.join(r['artifacts']) or 'none'}; {edit}; {r['work']}/reproduce.json"
    )


@click.command()
@click.option("--markdown", is_flag=True, help="The README's table (model_type, neurons at, notes).")
def architectures(markdown):
    """List the supported model_types and where their neurons live."""
    from hedit.registry import architectures as archs

    if markdown:
        click.echo("| model_type | neurons at | notes |\n| --- | --- | --- |")
    for a in archs().values():
        click.echo(a.table_row() if markdown else f"{a.model_type:12s} {a.describe()}")


COMMANDS = [run_cmd, architectures]
