"""Capability cost of an edit: trivia accuracy, and KL divergence of next-token distributions.

- **Trivia accuracy**: greedy answers to held-out trivia questions (the probing split), judged by
  normalized alias match (``hedit.score.judge``). ``qa_accuracy`` runs it under an intervention.
- **KL**: on neutral prose (``hedit/data/neutral.txt``, plain text with no chat template), the mean
  over every token position of KL(p_ref || p_edit), where p_ref is the next-token distribution of the
  unedited model (alpha = 1). In nats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources

import torch

from hedit.config import ANSWER_ONLY, BATCH, QA_BATCH, Decoding
from hedit.engine.decoder import end_ids, generate_cells, items_per_batch
from hedit.engine.intervention import scale_neurons
from hedit.engine.prompts import chat_ids
from hedit.score.judge import CORRECT

NEUTRAL = "neutral.txt"


def neutral_texts() -> list[str]:
    text = (resources.files("hedit") / "data" / NEUTRAL).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


@torch.no_grad()
def next_token_logprobs(model, tokenizer, texts: Sequence[str], batch_size: int = BATCH) -> list[torch.Tensor]:
    """For each text, log-probabilities [tokens, vocab] (float32) of the next token at every position."""
    out = []
    for idx in _batches(len(texts), batch_size):
        enc = [tokenizer(texts[i])["input_ids"] for i in idx]
        width = max(len(e) for e in enc)
        ids = torch.zeros((len(enc), width), dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for r, e in enumerate(enc):
            ids[r, : len(e)] = torch.tensor(e)
            mask[r, : len(e)] = 1
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
        lp = torch.log_softmax(logits.to(torch.float32), dim=-1).cpu()
        out.extend(lp[r, : len(e)] for r, e in enumerate(enc))
    return out


def mean_kl(ref: Sequence[torch.Tensor], new: Sequence[torch.Tensor]) -> float:
    """Mean over all positions of KL(ref || new), both given as log-probabilities."""
    total, count = 0.0, 0
    for p, q in zip(ref, new):
        kl = (p.exp() * (p - q)).sum(-1).clamp_min(0)
        total += kl.sum().item()
        count += kl.numel()
    return total / max(count, 1)


def trivia_prompt(tokenizer, question: str, chat_template: bool = True) -> list[int]:
    return chat_ids(tokenizer, [{"role": "user", "content": f"{question} {ANSWER_ONLY}"}], chat_template)


def answer_questions(
    model,
    tokenizer,
    questions: Sequence[tuple[str, Sequence[str]]],
    dec: Decoding,
    batch_size: int = QA_BATCH,
    grader=None,
    tick=None,
    scales=None,
) -> list[tuple[str, str]] | list[list[tuple[str, str]]]:
    """(reply, label) for each (question, aliases), generated in batches; ``grader`` (default: the rule
    judge) has ``qa(question, aliases, reply)``. With ``scales`` (``hedit.engine.intervention.CellScales``)
    one such list per cell, every batch decoding its questions under all cells at once (``batch_size``
    sequences: questions x cells)."""
    from hedit.score.compliance import RULES

    grader = grader or RULES
    ends = end_ids(model, tokenizer, dec.chat_template)
    tokenizer.padding_side = "left"
    n = len(scales) if scales is not None else 1
    out: list[list[tuple[str, str]]] = [[] for _ in range(n)]
    for idx in _batches(len(questions), items_per_batch(batch_size, n)):
        prompts = [trivia_prompt(tokenizer, questions[i][0], dec.chat_template) for i in idx]
        rows = [(c, i) for c in range(n) for i in range(len(idx))]
        replies = generate_cells(
            model,
            tokenizer,
            [prompts[i] for _, i in rows],
            dec,
            ends,
            dec.seed + idx.start,
            scales,
            [c for c, _ in rows],
            batch_size,
        )
        for (c, i), reply in zip(rows, replies):
            q = questions[idx[i]]
            out[c].append((reply, grader.qa(q[0], list(q[1]), reply)))
        if tick:
            tick(len(idx) * n)
    return out if scales is not None else out[0]


def accuracy(labels: Sequence[str]) -> float:
    return sum(lb == CORRECT for lb in labels) / max(len(labels), 1)


def qa_accuracy(
    model,
    tokenizer,
    questions: Sequence[tuple[str, Sequence[str]]],
    layers: Mapping[int, Sequence[tuple[int, float]]] | None = None,
    dec: Decoding = Decoding(max_new_tokens=24),
    batch_size: int = QA_BATCH,
) -> float:
    """Trivia accuracy with the given neurons scaled (``layers``: layer -> [(index, alpha)]), or unedited."""
    with scale_neurons(model, layers or {}):
        return accuracy([lb for _, lb in answer_questions(model, tokenizer, questions, dec, batch_size)])


def qa_checker(
    model,
    tokenizer,
    questions: Sequence[tuple[str, Sequence[str]]],
    dec: Decoding = Decoding(max_new_tokens=24),
    batch_size: int = QA_BATCH,
):
    """A function {layer: [(index, alpha)]} -> trivia accuracy, for the probe's C criterion."""

    def check(layers: Mapping[int, Sequence[tuple[int, float]]]) -> float:
        return qa_accuracy(model, tokenizer, questions, layers, dec, batch_size)

    return check
