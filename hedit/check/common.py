"""What every runtime check of ``hedit verify`` shares: the fixed prompts and tolerances, the one
artifact (exactly one of --edited or --adapter, made for this source), the reference from the runtime
intervention (greedy tokens through hedit's decoder, their logits or logprobs), and the vacuity rule."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch

from hedit.edit.plan import EditPlan
from hedit.engine.decoder import Ends, decode
from hedit.engine.intervention import scale_neurons
from hedit.errors import HeditError
from hedit.model.load import input_device, load_model, load_tokenizer

PROMPTS = (
    "The capital of France is",
    "Q: Who wrote Romeo and Juliet?\nA:",
    "Water boils at a temperature of",
    "The largest planet in the solar system is",
)
TOLERANCE = 1e-4
RTOL = 1e-5  # relative to the largest reference logit; see the module docstring
LOW_PRECISION_ULPS = 8  # bfloat16/float16: units in the last place of the largest reference logit


def low_precision_tolerance(dtype, largest: float) -> float:
    """The default tolerance in bfloat16 or float16: ``LOW_PRECISION_ULPS`` units in the last place of the
    largest reference logit in that dtype (bfloat16 keeps 8 significant bits: at a logit of 3.4 one unit is
    2^-6). Two computations of the same function in bfloat16 (hooks on the activations, or the weights
    scaled and rounded) differ by a unit or two there; a wrong alpha by far more. A fixed share of the
    logit (1%, an earlier rule) sat within 1.1x of that rounding on a tiny model: a flaky check."""
    import math

    import torch

    eps = torch.finfo(dtype).eps  # one unit at 1.0
    scale = 2.0 ** math.floor(math.log2(largest)) if largest > 0 else 1.0
    return LOW_PRECISION_ULPS * eps * scale


VACUOUS = "; the tolerance is not below the edit's own effect, so an unedited model would pass too: lower it"


def vacuous(effect: float, tolerance: float) -> bool:
    """A check that cannot tell the edit from no edit: the tolerance is not below the edit's own effect,
    so an unedited copy would pass too. An edit that changes nothing (alpha 1) has nothing to tell apart."""
    return 0 < effect <= tolerance


class Checked:
    """What the runtime checks' results share (dataclasses with ``effect``, ``tolerance`` and ``passed``):
    vacuity, and the dict that ``verify`` prints and records."""

    @property
    def vacuous(self) -> bool:
        return vacuous(self.effect, self.tolerance)

    def to_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed, "vacuous": self.vacuous}


def compare_logits(
    got: torch.Tensor, ref: torch.Tensor, seq: list[int], start: int, tolerance: float
) -> tuple[float, int, int]:
    """(max abs difference, greedy tokens agreed, untied disagreements) of the artifact's logits ``got``
    against the reference's ``ref`` over ``seq``, whose greedy tokens begin at ``start``. Non-finite
    logits give an infinite difference. A greedy token the artifact does not pick is a tie when the
    reference's own logits for the two tokens are within 2 x tolerance (two logits each within tolerance
    of the reference can swap there), else an untied disagreement."""
    diff = (got - ref).abs().max().item() if bool(torch.isfinite(got).all()) else math.inf
    agreed = untied = 0
    for p in range(start - 1, len(seq) - 1):
        want, pick = seq[p + 1], int(got[p].argmax())
        if pick == want:
            agreed += 1
        elif not math.isfinite(diff) or (ref[p, want] - ref[p, pick]).item() > 2 * tolerance:
            untied += 1
    return diff, agreed, untied


def check_tolerance(tolerance: float | None) -> None:
    if tolerance is not None and (not math.isfinite(tolerance) or tolerance < 0):
        raise HeditError(f"--tolerance must be a finite number >= 0, got {tolerance}")


def artifact_path(edited: str | Path | None, adapter: str | Path | None) -> Path:
    """The one artifact a check is given: exactly one of --edited or --adapter."""
    if (edited is None) == (adapter is None):
        raise HeditError("give exactly one of --edited or --adapter")
    return Path(edited if edited is not None else adapter)


def adapter_format(adapter: str | Path) -> str:
    """Which writer made an adapter: ``gguf-lora`` (a .gguf file, or a folder holding ``adapter.gguf``),
    ``mlx-lora`` (a folder holding mlx-lm's ``adapters.safetensors``), else ``peft``."""
    from hedit.edit.adapters.mlx_lora import WEIGHTS

    path = Path(adapter)
    if path.suffix == ".gguf" or (path / "adapter.gguf").is_file():
        return "gguf-lora"
    return "mlx-lora" if (path / WEIGHTS).is_file() else "peft"


def check_artifact(plan: EditPlan, edited: str | Path | None, adapter: str | Path | None) -> Path:
    """Exactly one artifact, and one made for this source: an edited checkpoint with the source's tensors
    (names, shapes, dtypes), or a PEFT adapter whose modules and shapes fit the source; its path."""
    artifact = artifact_path(edited, adapter)
    if adapter is not None:
        from hedit.edit.adapters import read_adapter

        read_adapter(adapter, plan.checkpoint)
        return artifact
    from hedit.io.checkpoint import open_checkpoint

    path = Path(edited)
    if not path.is_dir():
        raise HeditError(f"edited checkpoint not found: {edited}")
    if (path / "adapter_config.json").is_file():
        raise HeditError(f"{edited} is an adapter; pass it with --adapter")
    got = {n: (t.shape, t.dtype) for h in open_checkpoint(path).headers.values() for n, t in h.tensors.items()}
    want = {n: (t.shape, t.dtype) for h in plan.checkpoint.headers.values() for n, t in h.tensors.items()}
    for name in sorted(set(got) | set(want)):
        if got.get(name) != want.get(name):
            side = "lacks" if name not in got else "has an extra" if name not in want else "differs in"
            raise HeditError(f"{edited} is not an edit of {plan.checkpoint.path}: it {side} tensor {name}")
    return artifact


def prompt_ids(source: str | Path, vocab_size: int, trust_remote_code: bool = False) -> list[list[int]]:
    """Token ids of the fixed prompts, or fixed pseudo-random ids for a checkpoint with no tokenizer."""
    tok = load_tokenizer(source, trust_remote_code)
    if tok is not None:
        return [tok(p)["input_ids"] for p in PROMPTS]
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab_size, (6 + 2 * i,), generator=g).tolist() for i in range(len(PROMPTS))]


@torch.no_grad()
def greedy(model: torch.nn.Module, ids: list[int], new_tokens: int) -> list[int]:
    """``ids`` and their greedy continuation of ``new_tokens`` tokens (no end token stops it), through
    hedit's decoder."""
    return ids + decode(model, [ids], new_tokens, Ends(()), 0)[0]


@torch.no_grad()
def logits(model: torch.nn.Module, seq: list[int]) -> torch.Tensor:
    return model(torch.tensor([seq], device=input_device(model))).logits[0].to(torch.float32).cpu()


def reference_generation(
    plan: EditPlan, prompts: list[list[int]], new_tokens: int, trust_remote_code: bool = False
) -> tuple[list[list[int]], list[list[float]], float]:
    """Greedy tokens and their logprobs from the source with the runtime intervention (float32), and
    the edit's effect: the max abs logprob change of those tokens when the intervention is removed."""
    model = load_model(plan.checkpoint.path, torch.float32, trust_remote_code)
    tokens, logprobs, effect = [], [], 0.0

    def chosen(seq: list[int], n: int) -> torch.Tensor:
        lp = torch.log_softmax(logits(model, seq), dim=-1)
        return lp[torch.arange(n - 1, len(seq) - 1), torch.tensor(seq[n:])]

    for ids in prompts:
        with scale_neurons(model, plan.layers):
            seq = greedy(model, ids, new_tokens)
            ref = chosen(seq, len(ids))
        effect = max(effect, (chosen(seq, len(ids)) - ref).abs().max().item())
        tokens.append(seq[len(ids) :])
        logprobs.append(ref.tolist())
    return tokens, logprobs, effect
