"""Commands of the ship stage: push."""

from __future__ import annotations

import click


@click.command()
@click.argument("folder", metavar="FOLDER|NEURONS_FILE", type=click.Path(path_type=str))
@click.option("--repo-id", required=True, help="owner/name on the Hub (created if missing).")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@click.option("--revision", default=None, help="Branch to push to (created from main if missing).")
@click.option("--commit-message", default=None)
@click.option("--force", is_flag=True, help="Push a folder without hedit.json or a model card.")
def push(folder, repo_id, private, revision, commit_message, force):
    """Upload an edited checkpoint or adapter FOLDER to the Hugging Face Hub (token: HF_TOKEN or login);
    or a neurons file (neurons.json) with its report and plots, as a neuron-set repo."""
    from pathlib import Path

    from hedit.errors import redact

    if Path(folder).is_file():
        from hedit.ship.neuron_hub import push_neurons

        n = push_neurons(folder, repo_id, private, revision, commit_message)
        click.echo(redact(f"pushed neuron set ({len(n.files)} files) to {n.repo_id}@{n.revision}: {n.commit_url}"))
        return
    from hedit.ship.push import push as run

    r = run(folder, repo_id, private, revision, commit_message, force)

    click.echo(redact(f"pushed {r.kind} ({len(r.files)} files) to {r.repo_id}@{r.revision}: {r.commit_url}"))


COMMANDS = [push]
