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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hedit.config import BATCH, CollectConfig, EngineConfig, SamplingConfig
from hedit.engine.choice import Choice
from hedit.engine.decoder import end_ids, replies
from hedit.engine.prompts import chat_ids
from hedit.errors import HeditError
from hedit.io.atomic import atomic_write_text, check_place
from hedit.io.hashing import fingerprint
from hedit.io.journal import CHECKS, KEYS, Journal, read_journal
from hedit.io.questions import Question
from hedit.progress import bar
from hedit.score.judge import CORRECT, INCORRECT


def build_prompt(tokenizer, question: str, cfg: SamplingConfig) -> list[int]:
    return chat_ids(tokenizer, [{"role": "user", "content": f"{question} {cfg.suffix}".strip()}], cfg.chat_template)


def _batch_seed(seed: int, qids: list[str]) -> int:
    return int(hashlib.sha256(f"{seed}:{qids[0]}".encode()).hexdigest()[:8], 16)


def sample_batch(
    model, tokenizer, prompts: list[list[int]], cfg: SamplingConfig, seed: int, ends: set[int]
) -> list[list[list[int]]]:
    """For each prompt, ``cfg.samples`` response token-id lists (``hedit.engine.decoder.replies``; a vLLM
    engine is seeded once for the whole run)."""
    return replies(
        model, tokenizer, prompts, cfg.max_new_tokens, ends, cfg.samples, (cfg.temperature, cfg.top_p, cfg.top_k, seed)
    )


def read_responses(path: str | Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Header and records of a responses file; a torn last line (a crash mid-write) is ignored. A question
    recorded twice, or with another number of samples than the header's settings, is an error."""
    header, records = read_journal(path, "responses", CHECKS["responses"], KEYS["responses"])
    config = (header or {}).get("config")
    want = config.get("samples") if isinstance(config, dict) else None
    if isinstance(want, int):
        for r in records:
            if len(r["samples"]) != want:
                raise HeditError(
                    f"{path}: question {r['question_id']!r} has {len(r['samples'])} samples, the header's settings "
                    f"say {want} (a file edited by hand, or two files merged?)"
                )
    return header, records


def settings(cfg: SamplingConfig, grader=None, engine_id: str | None = None) -> dict[str, Any]:
    """What a responses file's header records: the sampling settings, a judge other than the rules, and
    an engine other than transformers (another engine samples other answers)."""
    from hedit.score.compliance import RULES

    name = (grader or RULES).name
    return (
        cfg.sampling.to_dict()
        | ({"judge": name} if name != RULES.name else {})
        | ({"engine": engine_id} if engine_id else {})
    )


def collect(
    model,
    tokenizer,
    questions: Iterable[Question],
    out: str | Path,
    cfg: SamplingConfig = SamplingConfig(),
    batch_size: int = BATCH,
    model_name: str = "",
    progress: bool = True,
    grader=None,
    model_id: str | None = None,
) -> Path:
    """Sample, judge and append; questions already in ``out`` are skipped. ``grader``: the rule judge
    (default) or an ``hedit.score.llm_judge.LLMJudge``. ``model_id``: the model's fingerprint
    (``hedit.io.hashing.fingerprint``), recorded and checked on resume."""
    from hedit.score.compliance import RULES

    grader = grader or RULES
    out = Path(out)
    journal = Journal(
        out,
        "responses",
        settings(cfg, grader, getattr(model, "engine_id", None)),
        {"model": model_name},
        what="collected",
        check=CHECKS["responses"],
        model_id=model_id,
    )
    finished = {r["question_id"] for r in journal.records}
    todo = [q for q in questions if q.qid not in finished]
    tokenizer.padding_side = "left"
    ends = end_ids(model, tokenizer, cfg.chat_template)
    model.eval()
    with journal, bar(len(todo) + len(finished), "collect", "q", progress, initial=len(finished)) as pbar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            prompts = [build_prompt(tokenizer, q.question, cfg) for q in batch]
            responses = sample_batch(
                model, tokenizer, prompts, cfg, _batch_seed(cfg.seed, [q.qid for q in batch]), ends
            )
            records = []
            for q, p, rs in zip(batch, prompts, responses):
                samples = []
                for r in rs:
                    text = tokenizer.decode(r, skip_special_tokens=True)
                    label = grader.qa(q.question, q.aliases, text)
                    samples.append({"response": text, "response_ids": r, "label": label})
                records.append(
                    {
                        "question_id": q.qid,
                        "question": q.question,
                        "aliases": list(q.aliases),
                        "split": q.split,
                        "prompt_ids": p,
                        "samples": samples,
                    }
                )
            journal.append(records)  # one write per batch: a crash loses at most this batch
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


def write_filtered(
    out: str | Path, header: dict[str, Any], records: list[dict[str, Any]], do_balance: bool = True, seed: int = 0
) -> list[dict[str, Any]]:
    """Keep the consistently answered questions of ``records`` (balanced unless told not to) and write them
    to ``out`` as a responses file whose header records the filter; returns what was kept. ``identify``
    and ``hedit filter`` write the same format, which ``features`` reads."""
    kept = consistent(records)
    kept = balance(kept, seed) if do_balance else kept
    text = json.dumps(header | {"filtered": {"balance": do_balance, "seed": seed}}) + "\n"
    atomic_write_text(out, text + "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def filter_file(
    responses: str | Path, out: str | Path, do_balance: bool = True, seed: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """``hedit filter``: (kept records, questions read)."""
    header, records = read_responses(responses)
    if header is None:
        raise HeditError(f"responses file not found: {responses}")
    if Path(out).resolve() == Path(responses).resolve():
        raise HeditError("--out is the responses file itself; write the filtered file elsewhere")
    return write_filtered(out, header, records, do_balance, seed), len(records)


def collect_model(
    model: str,
    questions: list[Question],
    out: str | Path,
    cfg: SamplingConfig = SamplingConfig(),
    batch_size: int = BATCH,
    device: str = "cpu",
    progress: bool = True,
    grader=None,
    engine: EngineConfig = EngineConfig(),
    log=print,
    choice: Choice | None = None,
) -> Path:
    """``hedit collect``: resolve ``model`` (built-in name, folder or Hub id), open the engine the job calls
    for (``choice``, or ``hedit.engine.choice.choose_engine`` by the job's size: transformers, or vLLM in
    its own environment), then ``collect``."""
    from hedit.engine.choice import choose_engine, open_engine
    from hedit.model.builtin import resolve_model
    from hedit.model.load import load_model, load_tokenizer

    cfg = CollectConfig(**cfg.sampling.to_dict(), batch_size=batch_size)  # the settings' own checks
    choice = choice or choose_engine("sample", engine, device, len(questions) * cfg.samples * cfg.max_new_tokens)
    path = resolve_model(model)
    check_journal_place(out, [("model", path)])
    model_id = fingerprint(path)
    Journal(
        out,
        "responses",
        settings(cfg, grader, choice.engine_id),
        what="collected",
        check=CHECKS["responses"],
        model_id=model_id,
    )
    tok = load_tokenizer(path)
    if tok is None:
        raise HeditError(f"{path} has no tokenizer; collect needs one")
    longest = max((len(build_prompt(tok, q.question, cfg)) for q in questions), default=0)  # every prompt renders
    log(choice.describe())
    if choice.kind == "hf":
        lm = load_model(path, device=device)
        return collect(lm, tok, questions, out, cfg, batch_size, str(model), progress, grader, model_id)
    lm = open_engine(choice, path, tok, engine, cfg.seed, longest + cfg.max_new_tokens + 8, device)
    try:
        return collect(lm, tok, questions, out, cfg, batch_size, str(model), progress, grader, model_id)
    finally:
        lm.engine.close()


def check_journal_place(out: str | Path, sources) -> Path:
    """A journal's path: not a folder, not inside a model folder or an input (``check_place``), its
    folder not a file."""
    out = Path(out)
    if out.is_dir():
        raise HeditError(f"--out {out} is a folder; collect writes a responses file (.jsonl)")
    parent = out.absolute().parent
    if os.path.lexists(parent) and not parent.is_dir():
        raise HeditError(f"cannot write {out}: {parent} is a file, not a folder")
    return check_place(out, sources)
