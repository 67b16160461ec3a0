"""One alpha per neuron, learned for its effect: the optimisation behind ``hedit tune --method fit``.

The model's weights stay frozen; the only parameters are the scales of ``TrainableScales`` (the runtime
intervention with a gradient). The loss is the suites' teacher-forced preference (``hedit.choose.pairs``):
``softplus(-(log p(faithful) - log p(compliant)))``, mean token log-probabilities, averaged over the fit
items, plus ``penalty`` times the capability cost: the mean KL(unedited || edited) of the next-token
distributions on the neutral texts and the rise of the answers' negative log-likelihood on training trivia
questions. The budget is a constraint, not a hope: the penalty is raised (x4) until the fitted scales meet
``max_kl``, and if the last round still does not, the edit is backed off along its own direction,
alpha_j(t) = 1 + t (alpha_j - 1), to the largest strength t (bisection) whose KL is within the bound.
Alphas stay in [0, 3] (``allow_negative``: [-3, 3]).

Candidates: ``probe`` (the neurons file's H-neurons), ``stable`` (those the probe's stability selection
kept), ``attribution`` (every MLP neuron, experts included, ranked by |d loss / d scale| at alpha 1 over
the fit pairs, one backward pass per batch; the top ``k``) and ``probe+attribution`` (the H-neurons and
``k`` attribution neurons not among them, fitted together).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hedit.choose.pairs import Pair, continuation_logprob, margins
from hedit.engine.trainable import TrainableScales, all_sites
from hedit.errors import HeditError
from hedit.neurons import NeuronSet, Site, along

ALPHA_RANGE = (0.0, 3.0)
ROUNDS = 4  # penalty rounds (x4 each) before the strength is backed off
BISECT = 10  # strength bisection steps


@dataclass
class Capability:
    """What the budget is measured on: neutral token ids with the unedited model's log-probabilities, and
    trivia (prompt, answer) pairs with their unedited negative log-likelihood."""

    neutral: list[list[int]]
    ref: list[torch.Tensor]  # [tokens, vocab] log-probabilities per text, unedited
    trivia: list[tuple[tuple[int, ...], tuple[int, ...]]]
    trivia_nll: list[float] | float  # each trivia answer's unedited negative log-likelihood (or their mean)


def _padded(seqs: Sequence[Sequence[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(list(s))
        mask[r, : len(s)] = 1
    return ids.to(device), mask.to(device)


def neutral_logprobs(model, seqs: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Next-token log-probabilities [tokens, vocab] per sequence (differentiable when grad is on)."""
    ids, mask = _padded(seqs, next(model.parameters()).device)
    lp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
    return [lp[r, : len(s)] for r, s in enumerate(seqs)]


def kl_of(model, cap: Capability, which: Sequence[int] | None = None) -> torch.Tensor:
    """Mean over positions of KL(unedited || edited) on the neutral texts ``which`` (default: all)."""
    which = range(len(cap.neutral)) if which is None else which
    new = neutral_logprobs(model, [cap.neutral[i] for i in which])
    total = sum((cap.ref[i].exp() * (cap.ref[i] - q)).sum(-1).clamp_min(0).sum() for i, q in zip(which, new))
    return total / sum(len(cap.neutral[i]) for i in which)


def trivia_rise(model, cap: Capability, which: Sequence[int]) -> torch.Tensor:
    """How much the edit raises the mean negative log-likelihood of the trivia answers ``which`` (0 if it
    lowers it): the answers' part of the capability cost, a few per step like the neutral texts."""
    if not cap.trivia or not which:
        return torch.zeros(())
    ref = cap.trivia_nll if isinstance(cap.trivia_nll, list) else [cap.trivia_nll] * len(cap.trivia)
    nll = -continuation_logprob(model, [cap.trivia[i] for i in which]).mean()
    return F.relu(nll - sum(ref[i] for i in which) / len(which))


def task_loss(model, pairs: Sequence[Pair]) -> torch.Tensor:
    return F.softplus(-margins(model, pairs)).mean()


def attribution(model, pairs: Sequence[Pair], batch: int = 8) -> dict[Site, torch.Tensor]:
    """|d task loss / d scale| at alpha 1 for every neuron of every site, summed over ``pairs``."""
    scales = TrainableScales(model, all_sites(model))
    with scales:
        for start in range(0, len(pairs), batch):
            chunk = pairs[start : start + batch]
            (task_loss(model, chunk) * len(chunk) / len(pairs)).backward()
    return {
        site: p.grad.abs().detach().clone() if p.grad is not None else torch.zeros_like(p)
        for site, p in scales.params.items()
    }


def top_k(scores: dict[Site, torch.Tensor], k: int, exclude: dict[Site, Sequence[int]]) -> dict[Site, list[int]]:
    """The ``k`` highest-scoring neurons over every site, none of ``exclude``."""
    flat = []
    for site, s in scores.items():
        skip = set(exclude.get(site, ()))
        flat += [(float(v), site, j) for j, v in enumerate(s.tolist()) if j not in skip]
    flat.sort(key=lambda t: -t[0])
    out: dict[Site, list[int]] = {}
    for _, site, j in flat[:k]:
        out.setdefault(site, []).append(j)
    return {site: sorted(v) for site, v in out.items()}


@dataclass
class FitResult:
    alphas: dict[Site, list[tuple[int, float]]]
    kl: float  # on every neutral text, at the returned alphas
    strength: float  # 1: the fitted alphas as fitted; below 1: backed off to meet the bound
    penalty: float
    loss: float  # task loss on the fit pairs at the returned alphas
    history: list[dict]


def at_strength(alphas: dict[Site, list[tuple[int, float]]], t: float) -> dict[Site, list[tuple[int, float]]]:
    return {site: [(j, along(a, t)) for j, a in pairs] for site, pairs in alphas.items()}


def measure_kl(model, cap: Capability, plan: dict[Site, list[tuple[int, float]]]) -> float:
    from hedit.engine.intervention import scale_neurons

    with torch.no_grad(), scale_neurons(model, plan):
        return float(kl_of(model, cap))


def fit_scales(
    model,
    sites: dict[Site, list[int]],
    pairs: Sequence[Pair],
    cap: Capability,
    max_kl: float,
    steps: int = 40,
    lr: float = 0.05,
    penalty: float = 1.0,
    allow_negative: bool = False,
    batch: int = 8,
    kl_batch: int = 4,
    tick=None,
) -> FitResult:
    """Scales for ``sites`` minimising the task loss on ``pairs`` under the KL budget (module docstring)."""
    if not pairs:
        raise HeditError("no fit pairs: every fit item was already resisted at alpha 1, or lacks its fields")
    lo, hi = (-ALPHA_RANGE[1], ALPHA_RANGE[1]) if allow_negative else ALPHA_RANGE
    scales = TrainableScales(model, sites)
    opt = torch.optim.Adam(scales.parameters(), lr=lr)
    history, step = [], 0
    for rnd in range(ROUNDS):
        for _ in range(steps):
            chunk = [pairs[(step * batch + i) % len(pairs)] for i in range(min(batch, len(pairs)))]
            which = [(step * kl_batch + i) % len(cap.neutral) for i in range(min(kl_batch, len(cap.neutral)))]
            asked = [(step * kl_batch + i) % len(cap.trivia) for i in range(min(kl_batch, len(cap.trivia)))]
            with scales:
                task = task_loss(model, chunk)
                cost = kl_of(model, cap, which) + trivia_rise(model, cap, asked)
                (task + penalty * cost).backward()
            opt.step()
            opt.zero_grad()
            with torch.no_grad():
                for p in scales.parameters():
                    p.clamp_(lo, hi)
            step += 1
            if tick:
                tick(1)
        kl = measure_kl(model, cap, scales.alphas())
        history.append({"round": rnd, "penalty": penalty, "kl": kl, "task_loss": float(task.detach())})
        if kl <= max_kl:
            break
        penalty *= 4
    alphas, strength = scales.alphas(), 1.0
    if kl > max_kl:  # back off along the fitted direction: KL is 0 at t = 0
        lo_t, hi_t = 0.0, 1.0
        for _ in range(BISECT):
            mid = (lo_t + hi_t) / 2
            if measure_kl(model, cap, at_strength(alphas, mid)) <= max_kl:
                lo_t = mid
            else:
                hi_t = mid
        strength = lo_t
        if strength == 0.0:
            closest = measure_kl(model, cap, at_strength(alphas, hi_t))
            raise HeditError(
                f"no edit of these neurons meets the budget KL <= {max_kl:g}: the closest, {hi_t:.2g} of the "
                f"fitted step, costs KL {closest:.3g}; raise --max-kl or fit fewer neurons"
            )
        kl = measure_kl(model, cap, at_strength(alphas, strength))
    final = at_strength(alphas, strength)
    from hedit.engine.intervention import scale_neurons

    with torch.no_grad(), scale_neurons(model, final):
        loss = float(task_loss(model, pairs))
    return FitResult(final, kl, strength, penalty, loss, history)


def candidates(
    kind: str, ns: NeuronSet, model, pairs: Sequence[Pair], k: int | None, stable_threshold: float = 0.6
) -> tuple[dict[Site, list[int]], dict[tuple[Site, int], str]]:
    """(sites -> indices, (site, index) -> where it came from: "probe", "stable" or "attribution")."""
    h = ns.by_layer()
    k = len(ns.neurons) if k is None else k
    if kind == "stable":
        freq = [n for n in ns.neurons if n.frequency is not None and n.frequency >= stable_threshold]
        if not freq:
            raise HeditError(
                "--candidates stable: the neurons file records no stability frequencies at or above "
                f"{stable_threshold:g} (run probe with --stability)"
            )
        chosen: dict[Site, list[int]] = {}
        for n in freq:
            chosen.setdefault(n.site, []).append(n.index)
        return {s: sorted(v) for s, v in chosen.items()}, {(n.site, n.index): "stable" for n in freq}
    origin = {(site, j): "probe" for site, idx in h.items() for j in idx}
    if kind == "probe":
        return h, origin
    scores = attribution(model, pairs)
    extra = top_k(scores, k, h if kind == "probe+attribution" else {})
    out = dict(h) if kind == "probe+attribution" else {}
    if kind == "attribution":
        origin = {}
    for site, idx in extra.items():
        out[site] = sorted(set(out.get(site, [])) | set(idx))
        origin |= {(site, j): "attribution" for j in idx}
    return out, origin
