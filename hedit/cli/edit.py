"""Commands of the edit stage: edit and export-adapter."""

from __future__ import annotations

import json

import click

from hedit.cli.options import ALPHA, NEG, NEURONS, OVERWRITE, QUIET, SOURCE

OUT = click.option("--out", required=True, type=click.Path(path_type=str), help="Output folder (created).")


@click.command()
@SOURCE
@NEURONS
@ALPHA
@OUT
@OVERWRITE
@NEG
@QUIET
def edit(source, neurons, alpha, out, overwrite, allow_negative, quiet):
    """Fold alpha into down_proj columns of SOURCE, streaming: a safetensors checkpoint folder (built-in
    name, folder or Hub id) gives a folder; a .gguf file gives a .gguf file."""
    from hedit.edit import edit_model

    r = edit_model(source, neurons, out, alpha, overwrite, allow_negative, progress=not quiet)
    if not str(source).endswith(".gguf"):
        click.echo(f"wrote edited checkpoint to {r}")
        return
    if r.requantized:
        click.echo(f"requantized the edited blocks of {len(r.tensors)} ffn_down tensors to "
                   f"{', '.join(r.requantized)}: max abs error {r.max_abs_error:.3g} against the exactly "
                   "scaled weights (every other block and tensor unchanged)")
    click.echo(f"wrote edited GGUF to {r.out} (provenance: {r.out}.hedit.json)")


@click.command("export-adapter")
@SOURCE
@NEURONS
@ALPHA
@click.option("--format", "fmt", type=click.Choice(["lora", "ia3"]), default="lora", show_default=True)
@OUT
@OVERWRITE
@NEG
def export_adapter(source, neurons, alpha, fmt, out, overwrite, allow_negative):
    """Write a PEFT adapter (exact LoRA or IA3) that applies the edit on top of SOURCE."""
    from hedit.edit.adapters import export_adapter as run

    path = run(source, neurons, out, fmt, alpha, overwrite, allow_negative)
    info = json.loads((path / "hedit.json").read_text())
    msg = f"wrote {fmt} adapter to {path}"
    if fmt == "lora":
        msg += f" (rank {info['lora_rank']}; vLLM: --max-lora-rank {info['vllm_max_lora_rank']})"
    click.echo(msg)


COMMANDS = [edit, export_adapter]
