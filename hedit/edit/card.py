"""What every hedit output folder carries: ``hedit.json`` (provenance) and ``README.md`` (model card)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from hedit import __version__
from hedit.edit.plan import EditPlan

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def base_model_name(plan: EditPlan) -> str:
    """A Hub id for the card's base_model when one is known, else the source folder's name."""
    for cand in (plan.neurons.model.name_or_path, plan.checkpoint.config.get("_name_or_path")):
        if isinstance(cand, str) and _HUB_ID.match(cand) and not Path(cand).exists():
            return cand
    parts = plan.checkpoint.path.absolute().parts  # a Hub cache snapshot: .../models--owner--name/snapshots/<sha>
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3][len("models--"):].replace("--", "/", 1)
    return plan.checkpoint.path.resolve().name


def provenance(plan: EditPlan, kind: str, weight_sha256: dict[str, str], neurons_path: str | None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    ns = plan.neurons
    data = {
        "hedit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": kind,
        "source": {
            "path": str(plan.checkpoint.path.resolve()),
            "name_or_path": ns.model.name_or_path,
            "revision": ns.model.revision,
            "model_type": plan.checkpoint.model_type,
            "num_layers": plan.checkpoint.num_layers,
            "intermediate_size": plan.checkpoint.intermediate_size,
            "weight_sha256": weight_sha256,
        },
        "neurons": {
            "file": neurons_path,
            "sha256": hashlib.sha256(json.dumps(ns.to_dict(), sort_keys=True).encode()).hexdigest(),
            "count": plan.num_neurons,
            "per_layer": {str(layer): len(v) for layer, v in plan.layers.items()},
        },
        "alpha": plan.cli_alpha if plan.cli_alpha is not None else ns.alpha,
        "alphas_used": plan.alphas(),
        "skipped_source_files": plan.checkpoint.skipped_entries(),
    }
    if extra:
        data.update(extra)
    return data


def write_provenance(out: Path, data: dict[str, Any]) -> None:
    (out / "hedit.json").write_text(json.dumps(data, indent=2) + "\n")


def _front_matter(base: str, library: str, tags: list[str]) -> str:
    lines = ["---", f"base_model: {base}", f"library_name: {library}", "tags:"]
    lines += [f"- {t}" for t in tags]
    return "\n".join(lines + ["---", ""])


def _alpha_text(plan: EditPlan) -> str:
    alphas = plan.alphas()
    if len(alphas) == 1:
        return f"alpha = {alphas[0]:g}"
    return f"per-neuron alphas from {min(alphas):g} to {max(alphas):g}"


def _change_text(plan: EditPlan) -> str:
    return (
        f"{plan.num_neurons} MLP neurons in {len(plan.layers)} of {plan.checkpoint.num_layers} layers "
        f"of `{base_model_name(plan)}` ({plan.checkpoint.model_type}) are scaled by {_alpha_text(plan)}: "
        "each chosen neuron's activation, the input of `mlp.down_proj`, is multiplied by its alpha "
        "(0 silences it, 1 leaves it unchanged)."
    )


INTRO = (
    "H-neurons are the few MLP neurons whose activations predict when a model hallucinates "
    "(Gao et al., *H-Neurons: On the Existence, Impact, and Origin of Hallucination-Associated Neurons "
    "in LLMs*, arXiv 2512.01797). Scaling them moves the model's over-compliance."
)


def edited_card(plan: EditPlan, out_name: str) -> str:
    base = base_model_name(plan)
    return _front_matter(base, "transformers", ["hedit", "h-neurons"]) + f"""
# {out_name}

{INTRO}

## What was changed
{_change_text(plan)} The scale is folded into the weights: column *j* of each edited
`down_proj.weight` is multiplied by its alpha. Every other tensor is byte-identical to the source.
Which neurons, the alpha and the sha256 of every source weight file are in `hedit.json`.

## Use
transformers:
```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{out_name}")
tokenizer = AutoTokenizer.from_pretrained("{out_name}")
```
vLLM:
```bash
vllm serve {out_name}
```

Made with hedit {__version__}.
"""


def adapter_card(plan: EditPlan, out_name: str, fmt: str, rank: int | None = None,
                 max_lora_rank: int | None = None) -> str:
    base = base_model_name(plan)
    tags = ["hedit", "h-neurons", "peft", fmt]
    if fmt == "lora":
        how = (
            f"A LoRA of rank {rank} on `down_proj` whose product B @ A equals W[:, S] diag(alpha - 1) "
            "exactly (A selects the chosen neurons, B holds their scaled columns; `lora_alpha` = r, so "
            "the scale is 1). Base plus adapter equals the edited model."
        )
        serve = f"""vLLM (`--max-lora-rank` must be at least {rank}; {max_lora_rank} is the smallest value vLLM accepts):
```bash
vllm serve {base} --enable-lora --lora-modules hedit={out_name} --max-lora-rank {max_lora_rank}
```
"""
    else:
        how = (
            "An IA3 adapter: a vector on each edited layer's `down_proj` input that is 1 everywhere and "
            "alpha at the chosen neurons. Base plus adapter equals the edited model."
        )
        serve = (
            "vLLM does not serve IA3 adapters: for vLLM use `hedit export-adapter --format lora` "
            "or the merged checkpoint from `hedit edit`.\n"
        )
    return _front_matter(base, "peft", tags) + f"""
# {out_name}

{INTRO}

## What was changed
{_change_text(plan)}

{how} Which neurons, the alpha and the sha256 of every source weight file are in `hedit.json`.

## Use
PEFT:
```python
from transformers import AutoModelForCausalLM
from peft import PeftModel
base = AutoModelForCausalLM.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "{out_name}")
```
{serve}
Made with hedit {__version__}.
"""
