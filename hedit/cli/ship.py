"""Commands of the ship stage: push."""

from __future__ import annotations

import click


@click.command()
@click.argument("folder", type=click.Path(path_type=str))
@click.option("--repo-id", required=True, help="owner/name on the Hub (created if missing).")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@click.option("--revision", default=None, help="Branch to push to (created from main if missing).")
@click.option("--commit-message", default=None)
@click.option("--force", is_flag=True, help="Push a folder without hedit.json or a model card.")
def push(folder, repo_id, private, revision, commit_message, force):
    """Upload an edited checkpoint or adapter FOLDER to the Hugging Face Hub (token: HF_TOKEN or login)."""
    from hedit.ship.push import push as run

    r = run(folder, repo_id, private, revision, commit_message, force)
    from hedit.errors import redact

    click.echo(redact(f"pushed {r.kind} ({len(r.files)} files) to {r.repo_id}@{r.revision}: {r.commit_url}"))


COMMANDS = [push]
