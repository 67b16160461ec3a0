"""Commands of the edit stage: edit and export-adapter."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hedit.cli.options import ALPHA, NEG, NEURONS, OVERWRITE, QUIET, SOURCE, STRENGTH, TARGET, with_strength
from hedit.edit.writers import ADAPTERS as ADAPTER_FORMATS

OUT = click.option("--out", required=True, type=click.Path(path_type=str), help="Output folder (created).")


@click.command()
@SOURCE
@NEURONS
@ALPHA
@STRENGTH
@OUT
@TARGET
@OVERWRITE
@NEG
@QUIET
def edit(source, neurons, alpha, strength, out, target, overwrite, allow_negative, quiet):
    """Fold alpha into the weights of SOURCE, streaming: a safetensors checkpoint folder (built-in name,
    folder or Hub id; float or GPTQ/AWQ/compressed-tensors/FP8) gives a folder; a .gguf file gives a
    .gguf file (--out x.gguf) or a pushable folder with the GGUF and its model card."""
    from hedit.edit import edit_model

    neurons = with_strength(neurons, strength)
    r = edit_model(source, neurons, out, alpha, overwrite, allow_negative, progress=not quiet, target=target)
    if not str(source).endswith(".gguf"):
        click.echo(f"wrote edited checkpoint to {r}")
        return
    what = "scales of the chosen ffn_up rows" if r.target == "up" else "chosen ffn_down values"
    click.echo(
        f"edited the {what} in {len(r.tensors)} tensors ({', '.join(r.types)}; {r.changed_bytes} bytes "
        f"changed): max abs error {r.max_abs_error:.3g} against the exactly scaled dequantized weights"
    )
    side = "" if r.out != r.file else f" (provenance: {r.out}.hedit.json)"
    click.echo(f"wrote edited GGUF to {r.file}{side}")


@click.command("export-adapter")
@SOURCE
@NEURONS
@ALPHA
@STRENGTH
@click.option("--format", "fmt", type=click.Choice(list(ADAPTER_FORMATS)), default="lora", show_default=True)
@OUT
@TARGET
@OVERWRITE
@NEG
@QUIET
def export_adapter(source, neurons, alpha, strength, fmt, out, target, overwrite, allow_negative, quiet):
    """Write an adapter that applies the edit on top of SOURCE: an exact PEFT LoRA or IA3, or a llama.cpp
    LoRA in GGUF (gguf-lora) whose --lora-scaled S sets alpha when the model is served, or an mlx-lm LoRA
    (mlx-lora) over an MLX checkpoint."""
    from hedit.edit.adapters import export_adapter as run

    neurons = with_strength(neurons, strength)
    path = run(source, neurons, out, fmt, alpha, overwrite, allow_negative, target, progress=not quiet)
    side = path / "hedit.json" if path.is_dir() else Path(f"{path}.hedit.json")
    info = json.loads(side.read_text())
    msg = f"wrote {fmt} adapter to {path}"
    if fmt == "lora":
        msg += f" (rank {info['lora_rank']}; vLLM: --max-lora-rank {info['vllm_max_lora_rank']})"
    if fmt == "gguf-lora":
        msg += f" (llama.cpp --lora-scaled FILE S: {info['scale_to_alpha']})"
    if fmt == "mlx-lora":
        msg += f" (rank {info['lora_rank']}; mlx-lm --adapter-path, scale S in its config: {info['scale_to_alpha']})"
    click.echo(msg)


COMMANDS = [edit, export_adapter]
