"""`hedit verify`: the exported artifact must behave exactly like the runtime intervention.

In float32, the source model with the intervention and the artifact (edited checkpoint, or base plus
adapter) run on a fixed set of prompts: greedy continuations from the reference, then the logits of
both over the same token sequences. Passes when the max absolute logit difference is within the
tolerance: by default ``max(TOLERANCE, RTOL * max|reference logit|)``, because float32 round-off in a
LoRA's ``W x - B A x`` grows with the size of the logits (on SmolLM2-135M it reaches 9.9e-5 for logits
up to ~25, at the bare 1e-4); a tolerance given by the caller is absolute.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .errors import HeditError
from .intervention import scale_neurons
from .models import load_model, load_tokenizer
from .neurons import NeuronSet
from .plan import EditPlan, make_plan

PROMPTS = (
    "The capital of France is",
    "Q: Who wrote Romeo and Juliet?\nA:",
    "Water boils at a temperature of",
    "The largest planet in the solar system is",
)
TOLERANCE = 1e-4
RTOL = 1e-5  # relative to the largest reference logit; see the module docstring


@dataclass
class VerifyResult:
    artifact: str
    max_abs_logit_diff: float
    token_agreement: float  # fraction of greedy tokens the artifact generates identically
    effect: float  # max abs logit difference between the source without and with the edit
    prompts: int
    new_tokens: int
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_logit_diff <= self.tolerance

    def to_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed}


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
        nxt = model(seq).logits[0, -1].argmax()
        seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    return seq[0].tolist()


@torch.no_grad()
def logits(model: torch.nn.Module, seq: list[int]) -> torch.Tensor:
    return model(torch.tensor([seq])).logits[0].to(torch.float32)


def verify(source: str | Path, neurons: str | Path | NeuronSet, alpha: float | None = None,
           edited: str | Path | None = None, adapter: str | Path | None = None, allow_negative: bool = False,
           new_tokens: int = 8, tolerance: float | None = None, trust_remote_code: bool = False) -> VerifyResult:
    if (edited is None) == (adapter is None):
        raise HeditError("give exactly one of --edited or --adapter")
    artifact = Path(edited or adapter)
    if not artifact.is_dir():
        raise HeditError(f"artifact not found: {artifact}")
    plan = make_plan(source, neurons, alpha, allow_negative)
    source = plan.checkpoint.path
    base = load_model(source, torch.float32, trust_remote_code)
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
        model = load_model(edited, torch.float32, trust_remote_code)

    diff, agree = 0.0, 0
    for ids, seq, r in zip(prompts, seqs, ref):
        diff = max(diff, (logits(model, seq) - r).abs().max().item())
        got = greedy(model, ids, new_tokens)
        agree += sum(a == b for a, b in zip(got[len(ids):], seq[len(ids):]))
    effect = max((p - r).abs().max().item() for p, r in zip(plain, ref))
    if tolerance is None:
        tolerance = max(TOLERANCE, RTOL * max(r.abs().max().item() for r in ref))
    return VerifyResult(str(artifact), diff, agree / (new_tokens * len(prompts)), effect,
                        len(prompts), new_tokens, tolerance)


def reference_generation(plan: EditPlan, prompts: list[list[int]], new_tokens: int,
                         trust_remote_code: bool = False) -> tuple[list[list[int]], list[list[float]], float]:
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
        tokens.append(seq[len(ids):])
        logprobs.append(ref.tolist())
    return tokens, logprobs, effect
