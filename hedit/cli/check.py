"""Commands of the check stage: verify."""

from __future__ import annotations

import json
import sys

import click

from hedit.cli.options import (
    ALPHA,
    DEVICE,
    NEG,
    NEURONS,
    SOURCE,
    STRENGTH,
    build,
    placement_from,
    placement_options,
    settings_options,
    with_strength,
)
from hedit.config import VerifyConfig


@click.command()
@SOURCE
@NEURONS
@ALPHA
@STRENGTH
@click.option("--edited", type=click.Path(path_type=str), help="Edited checkpoint from `hedit edit`.")
@click.option("--adapter", type=click.Path(path_type=str), help="Adapter from `hedit export-adapter`.")
@settings_options(VerifyConfig)
@click.option("--vllm-python", type=click.Path(path_type=str), help="Python of the vLLM environment.")
@DEVICE
@placement_options
@NEG
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(source, neurons, alpha, strength, edited, adapter, vllm_python, device, allow_negative, as_json, **kw):
    """Check in float32 that an artifact equals SOURCE with the runtime intervention (or, --runtime
    structure, byte for byte against the plan without loading a model)."""
    from hedit.check.verify import verify_artifact

    neurons = with_strength(neurons, strength)
    place = {"device": device} | placement_from(kw)
    cfg = build(VerifyConfig, kw)
    res = verify_artifact(source, neurons, alpha, edited, adapter, allow_negative, cfg, vllm_python, place)
    click.echo(json.dumps(res.to_dict(), indent=2) if as_json else res.summary())
    if getattr(res, "effect", None) == 0 and not as_json:
        click.echo("note: the edit changes nothing here (alpha 1?), so this check cannot fail", err=True)
    sys.exit(0 if res.passed else 1)


COMMANDS = [verify]
