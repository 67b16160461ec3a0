"""`hedit verify`: the exported artifact must behave exactly like the runtime intervention.

In float32, the source model with the intervention and the artifact (edited checkpoint, or base plus
adapter) run on a fixed set of prompts: greedy continuations from the reference, then the logits of
both over the same token sequences. Passes when the max absolute logit difference is within the
tolerance: by default ``max(TOLERANCE, RTOL * max|reference logit|)``, because float32 round-off in a
LoRA's ``W x - B A x`` grows with the size of the logits (on SmolLM2-135M it reaches 9.9e-5 for logits
up to ~25, at the bare 1e-4); a tolerance given by the caller is absolute.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hedit.check.intervention import scale_neurons
from hedit.config import VerifyConfig
from hedit.edit.neurons import NeuronSet
from hedit.edit.plan import EditPlan, make_plan
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
LOW_PRECISION_RTOL = 1e-2  # the same in bfloat16/float16: a few units of their rounding (2^-8 for bfloat16)
VACUOUS = "; the tolerance is not below the edit's own effect, so an unedited model would pass too: lower it"


def vacuous(effect: float, tolerance: float) -> bool:
    """A check that cannot tell the edit from no edit: the tolerance is not below the edit's own effect,
    so an unedited copy would pass too. An edit that changes nothing (alpha 1) has nothing to tell apart."""
    return 0 < effect <= tolerance


@dataclass
class VerifyResult:
    artifact: str
    max_abs_logit_diff: float  # inf when the artifact's logits are not all finite
    token_agreement: float  # fraction of the reference's greedy tokens that are also the artifact's argmax
    effect: float  # max abs logit difference between the source without and with the edit
    prompts: int
    new_tokens: int
    tolerance: float
    untied_disagreements: int = 0  # greedy tokens the artifact changes where the reference has no near-tie

    @property
    def passed(self) -> bool:
        return (
            math.isfinite(self.max_abs_logit_diff)
            and self.max_abs_logit_diff <= self.tolerance
            and self.untied_disagreements == 0
            and not self.vacuous
        )

    @property
    def vacuous(self) -> bool:
        return vacuous(self.effect, self.tolerance)

    def to_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed, "vacuous": self.vacuous}

    def summary(self) -> str:
        return (
            f"{'PASS' if self.passed else 'FAIL'} transformers: max abs logit diff {self.max_abs_logit_diff:.2e} "
            f"(tolerance {self.tolerance:g}), greedy-token agreement {self.token_agreement:.1%}, "
            f"edit effect {self.effect:.2e}{VACUOUS if self.vacuous else ''}"
        )


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


def check_artifact(plan: EditPlan, edited: str | Path | None, adapter: str | Path | None) -> None:
    """Exactly one artifact, and one made for this source: an edited checkpoint with the source's tensors
    (names, shapes, dtypes), or a PEFT adapter whose modules and shapes fit the source."""
    if (edited is None) == (adapter is None):
        raise HeditError("give exactly one of --edited or --adapter")
    if adapter is not None:
        from hedit.edit.adapters import read_adapter

        read_adapter(adapter, plan.checkpoint)
        return
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


def prompt_ids(source: str | Path, vocab_size: int, trust_remote_code: bool = False) -> list[list[int]]:
    """Token ids of the fixed prompts, or fixed pseudo-random ids for a checkpoint with no tokenizer."""
    tok = load_tokenizer(source, trust_remote_code)
    if tok is not None:
        return [tok(p)["input_ids"] for p in PROMPTS]
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab_size, (6 + 2 * i,), generator=g).tolist() for i in range(len(PROMPTS))]


@torch.no_grad()
def greedy(model: torch.nn.Module, ids: list[int], new_tokens: int) -> list[int]:
    """Greedy continuation (no end-of-sequence stop), recomputing the full sequence each step."""
    seq = torch.tensor([ids])
    for _ in range(new_tokens):
        nxt = model(seq.to(input_device(model))).logits[0, -1].argmax().cpu()
        seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    return seq[0].tolist()


@torch.no_grad()
def logits(model: torch.nn.Module, seq: list[int]) -> torch.Tensor:
    return model(torch.tensor([seq], device=input_device(model))).logits[0].to(torch.float32).cpu()


def verify(
    source: str | Path,
    neurons: str | Path | NeuronSet,
    alpha: float | None = None,
    edited: str | Path | None = None,
    adapter: str | Path | None = None,
    allow_negative: bool = False,
    new_tokens: int = 8,
    tolerance: float | None = None,
    trust_remote_code: bool = False,
    placement: dict | None = None,
    dtype: str = "float32",
) -> VerifyResult:
    """``placement``: load_model's ``device``/``device_map``/``max_memory``/``offload_folder``, for models
    larger than one device. ``dtype``: both models run in it (float32 by default, exact); in bfloat16 or
    float16 the folded weights and the intervention round differently, so the default tolerance is
    ``LOW_PRECISION_RTOL`` of the largest reference logit."""
    place = placement or {}
    torch_dtype = getattr(torch, dtype)
    if (edited is None) == (adapter is None):
        raise HeditError("give exactly one of --edited or --adapter")
    check_tolerance(tolerance)
    plan = make_plan(source, neurons, alpha, allow_negative)
    check_artifact(plan, edited, adapter)
    artifact = Path(edited or adapter)
    source = plan.checkpoint.path
    base = load_model(source, torch_dtype, trust_remote_code, **place)
    prompts = prompt_ids(source, base.config.get_text_config().vocab_size, trust_remote_code)

    seqs, ref, plain = [], [], []
    with scale_neurons(base, plan.layers):
        for ids in prompts:
            seq = greedy(base, ids, new_tokens)
            seqs.append(seq)
            ref.append(logits(base, seq))
    for seq in seqs:
        plain.append(logits(base, seq))

    if adapter is not None:
        import warnings

        from peft import PeftModel

        with warnings.catch_warnings():  # deprecation chatter between peft and transformers versions
            warnings.simplefilter("ignore", FutureWarning)
            model = PeftModel.from_pretrained(base, str(adapter)).eval()
    else:
        del base
        model = load_model(edited, torch_dtype, trust_remote_code, **place)

    if tolerance is None:
        rtol = RTOL if torch_dtype == torch.float32 else LOW_PRECISION_RTOL
        tolerance = max(TOLERANCE, rtol * max(r.float().abs().max().item() for r in ref))
    diff, agree, untied = 0.0, 0, 0
    for ids, seq, r in zip(prompts, seqs, ref):
        d, a, u = compare_logits(logits(model, seq), r, seq, len(ids), tolerance)
        diff, agree, untied = max(diff, d), agree + a, untied + u
    effect = max((p - r).abs().max().item() for p, r in zip(plain, ref))
    return VerifyResult(
        str(artifact), diff, agree / (new_tokens * len(prompts)), effect, len(prompts), new_tokens, tolerance, untied
    )


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


def verify_artifact(
    source: str | Path,
    neurons: str | Path | NeuronSet,
    alpha: float | None = None,
    edited: str | Path | None = None,
    adapter: str | Path | None = None,
    allow_negative: bool = False,
    cfg: VerifyConfig = VerifyConfig(),
    vllm_python: str | None = None,
    placement: dict | None = None,
):
    """``hedit verify``: the artifact in ``cfg.runtime`` (transformers, or vLLM in its own environment)
    against the runtime intervention; a result with ``passed``, ``to_dict()`` and ``summary()``."""
    if cfg.runtime == "structure":
        from hedit.check.structure import verify_structure

        return verify_structure(source, neurons, alpha, edited, adapter, allow_negative)
    if cfg.runtime == "vllm":
        from hedit.check.runtime_vllm import LOGPROB_TOLERANCE, verify_vllm

        tol = cfg.tolerance if cfg.tolerance is not None else LOGPROB_TOLERANCE
        return verify_vllm(source, neurons, alpha, edited, adapter, allow_negative, cfg.new_tokens, vllm_python, tol)
    return verify(
        source,
        neurons,
        alpha,
        edited,
        adapter,
        allow_negative,
        cfg.new_tokens,
        cfg.tolerance,
        placement=placement,
        dtype=cfg.dtype,
    )
