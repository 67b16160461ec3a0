"""`hedit collect`: sample answers to questions, judge them, write them append-only (resumable).

Output is JSONL: a header line ``{"_hedit": "responses", "config": ..., "model": ...}``, then one line
per finished question with the prompt's token ids and, for each sample, the response text, its token
ids (generated ids up to, not including, the end token) and the judge's label. A rerun with the same
settings skips finished questions; a crash loses at most the batch in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from .errors import HeditError
from .judge import CORRECT, INCORRECT, judge
from .progress import bar
from .questions import Question

SUFFIX = "Respond with the answer only, without any explanation."


@dataclass(frozen=True)
class SamplingConfig:
    """The paper's defaults: 10 samples, temperature 1.0, top_p 0.9, top_k 50, 50 new tokens."""

    samples: int = 10
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 50
    suffix: str = SUFFIX
    chat_template: bool = True
    seed: int = 0


def build_prompt(tokenizer, question: str, cfg: SamplingConfig) -> list[int]:
    text = f"{question} {cfg.suffix}".strip()
    if cfg.chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise HeditError("the model's tokenizer has no chat template; pass --no-chat-template to use plain text")
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return tokenizer(f"Question: {text}\nAnswer:")["input_ids"]


def end_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _batch_seed(seed: int, qids: list[str]) -> int:
    return int(hashlib.sha256(f"{seed}:{qids[0]}".encode()).hexdigest()[:8], 16)


@torch.no_grad()
def sample_batch(model, tokenizer, prompts: list[list[int]], cfg: SamplingConfig, seed: int,
                 ends: set[int]) -> list[list[list[int]]]:
    """For each prompt, ``cfg.samples`` response token-id lists (left padding, one generate call)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(ends), 0)
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
        top_k=cfg.top_k, max_new_tokens=cfg.max_new_tokens, num_return_sequences=cfg.samples,
        pad_token_id=pad, eos_token_id=sorted(ends) or None,
    )[:, width:].tolist()
    responses = []
    for row in out:
        cut = next((i for i, t in enumerate(row) if t in ends), len(row))
        responses.append(row[:cut])
    return [responses[i * cfg.samples:(i + 1) * cfg.samples] for i in range(len(prompts))]


def read_responses(path: str | Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Header and records of a responses file; a torn last line (a crash mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        return None, []
    header, records = None, []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for n, line in enumerate(lines, 1):
        if not line.endswith("\n"):
            break  # torn write
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise HeditError(f"{path}:{n}: not valid JSON; not a hedit responses file?") from None
        if n == 1:
            if obj.get("_hedit") != "responses":
                raise HeditError(f"{path} is not a hedit responses file")
            header = obj
        else:
            records.append(obj)
    return header, records


def _trim_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def collect(model, tokenizer, questions: Iterable[Question], out: str | Path, cfg: SamplingConfig = SamplingConfig(),
            batch_size: int = 8, model_name: str = "", progress: bool = True) -> Path:
    """Sample, judge and append; questions already in ``out`` are skipped."""
    out = Path(out)
    header = {"_hedit": "responses", "config": asdict(cfg), "model": model_name}
    old_header, done = read_responses(out)
    if old_header is not None and old_header["config"] != header["config"]:
        raise HeditError(f"{out} was collected with other settings ({old_header['config']}); use another --out")
    if out.exists():
        _trim_torn_tail(out)
    finished = {r["question_id"] for r in done}
    todo = [q for q in questions if q.qid not in finished]
    tokenizer.padding_side = "left"
    ends = end_ids(model, tokenizer)
    model.eval()
    with open(out, "a", encoding="utf-8") as f, bar(len(todo) + len(finished), "collect", "q", progress,
                                                     initial=len(finished)) as pbar:
        if old_header is None:
            f.write(json.dumps(header) + "\n")
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            prompts = [build_prompt(tokenizer, q.question, cfg) for q in batch]
            responses = sample_batch(model, tokenizer, prompts, cfg, _batch_seed(cfg.seed, [q.qid for q in batch]),
                                     ends)
            lines = []
            for q, p, rs in zip(batch, prompts, responses):
                samples = []
                for r in rs:
                    text = tokenizer.decode(r, skip_special_tokens=True)
                    samples.append({"response": text, "response_ids": r, "label": judge(text, q.aliases)})
                lines.append(json.dumps({"question_id": q.qid, "question": q.question, "aliases": list(q.aliases),
                                         "split": q.split, "prompt_ids": p, "samples": samples}) + "\n")
            f.write("".join(lines))  # one write per batch: a crash loses at most this batch
            f.flush()
            os.fsync(f.fileno())
            pbar.update(len(batch))
    return out


def consistent(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Questions answered right by every sample (label correct) or wrong by every sample (hallucinated)."""
    out = []
    for r in records:
        labels = {s["label"] for s in r["samples"]}
        if labels == {CORRECT}:
            out.append(r | {"class": "correct"})
        elif labels == {INCORRECT}:
            out.append(r | {"class": "hallucinated"})
    return out


def balance(records: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """As many correct as hallucinated questions, drawn with ``seed``; order kept."""
    by = {c: [r for r in records if r["class"] == c] for c in ("correct", "hallucinated")}
    n = min(len(v) for v in by.values())
    rng = random.Random(seed)
    keep = {id(r) for v in by.values() for r in rng.sample(v, n)}
    return [r for r in records if id(r) in keep]


def class_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r["class"]] = counts.get(r["class"], 0) + 1
    return counts
