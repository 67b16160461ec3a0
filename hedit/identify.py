"""`hedit identify`: collect, filter, features and probe, each stage cached in a work folder.

    <work>/responses.jsonl   collect (resumable: a rerun continues where it stopped)
    <work>/filtered.jsonl    consistency filter + balanced classes
    <work>/features/         CETT matrix (skipped when present and made from the same filtered file)
    <work>/neurons.json      the H-neurons, with report.json and PNG plots beside it (skipped when present
                             and made from the same features with the same probe settings)
    <work>/stages.json       what each cached stage was made from (``hedit.io.stamps``)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .capability import qa_checker
from .collect import SamplingConfig, balance, class_counts, collect, consistent, read_responses
from .errors import HeditError
from .features import META, extract
from .io.hashing import sha256_file
from .io.stamps import Stamps
from .models import load_model, load_tokenizer
from .models_builtin import resolve_model
from .probe import C_GRID, REPORT_FORMAT, run_probe
from .questions import Question, bundled_questions


@dataclass
class IdentifyConfig:
    sampling: SamplingConfig = SamplingConfig()
    batch_size: int = 8
    mode: str = "3-vs-1"
    c_grid: tuple[float, ...] = C_GRID
    random_draws: int = 5
    seed: int = 0
    qa_check: bool = False  # C criterion also uses held-out QA accuracy with the neurons silenced
    max_qa_drop: float = 2.0  # points
    device: str = "cpu"


def identify(model: str, questions: list[Question], work: str | Path, cfg: IdentifyConfig = IdentifyConfig(),
             progress: bool = True, log=print, grader=None) -> dict[str, Any]:
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    path = resolve_model(model)
    lm, tok = load_model(path, device=cfg.device), load_tokenizer(path)
    if tok is None:
        raise HeditError(f"{path} has no tokenizer; identify needs one")

    responses = collect(lm, tok, questions, work / "responses.jsonl", cfg.sampling, cfg.batch_size, str(model),
                        progress, grader)
    header, records = read_responses(responses)
    wanted = {q.qid for q in questions}
    records = [r for r in records if r["question_id"] in wanted]
    kept = consistent(records)
    log(f"collect: {len(records)} questions, {class_counts(kept)} answered consistently")
    kept = balance(kept, cfg.seed)
    filtered = work / "filtered.jsonl"
    filtered.write_text("".join(json.dumps(r) + "\n" for r in kept))
    if min(class_counts(kept).values(), default=0) < 4:
        raise HeditError(f"too few consistent questions to probe ({class_counts(kept)}); use more questions "
                         "or fewer --samples")

    feats, neurons = work / "features", work / "neurons.json"
    stamps = Stamps(work)
    stamp = {"filtered_sha256": sha256_file(filtered), "model": str(model)}
    if stamps.fresh("features", stamp, feats / META):
        log(f"features: cached in {feats}")
    else:
        extract(lm, tok, kept, feats, str(model), batch_size=cfg.batch_size, device=cfg.device, progress=progress)
        stamps.done("features", stamp)
    probe_stamp = {"features": stamp, "report_format": REPORT_FORMAT, "mode": cfg.mode, "c_grid": list(cfg.c_grid),
                   "random_draws": cfg.random_draws, "seed": cfg.seed, "qa_check": cfg.qa_check,
                   "max_qa_drop": cfg.max_qa_drop}
    if stamps.fresh("probe", probe_stamp, neurons, work / "report.json"):
        log(f"probe: cached in {neurons}")
        report = json.loads((work / "report.json").read_text())
    else:
        qa = None
        if cfg.qa_check:
            held = [q for q in questions if q.split == "heldout"] or bundled_questions("heldout")
            qa = qa_checker(lm, tok, [(q.question, q.aliases) for q in held], batch_size=max(cfg.batch_size, 16))
        report = run_probe(feats, neurons, cfg.mode, cfg.c_grid, cfg.random_draws, cfg.seed, progress,
                           qa=qa, max_qa_drop=cfg.max_qa_drop)
        stamps.done("probe", probe_stamp)
    return report | {"work": str(work), "model_path": str(path)}
