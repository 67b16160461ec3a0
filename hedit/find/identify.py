"""`hedit identify`: collect, filter, features and probe, each stage cached in a work folder.

<work>/responses.jsonl   collect (resumable: a rerun continues where it stopped)
<work>/filtered.jsonl    consistency filter + balanced classes
<work>/features/         CETT matrix (skipped when present and made from the same filtered file)
<work>/neurons.json      the H-neurons, with report.json and PNG plots beside it (skipped when present
                         and made from the same features with the same probe settings)
<work>/stages.json       what each cached stage was made from (``hedit.io.stamps``)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hedit.config import EngineConfig, IdentifyConfig
from hedit.engine.choice import choose_engine
from hedit.errors import HeditError
from hedit.find.collect import class_counts, collect, collect_model, consistent, read_responses, write_filtered
from hedit.find.features import META, extract
from hedit.find.probe import REPORT_FORMAT, run_probe
from hedit.io.atomic import check_work
from hedit.io.hashing import fingerprint, sha256_file
from hedit.io.jsonfile import read_json
from hedit.io.questions import Question, bundled_questions
from hedit.io.stamps import Stamps
from hedit.model.builtin import resolve_model
from hedit.model.load import load_model, load_tokenizer
from hedit.score.capability import qa_checker


def identify(
    model: str,
    questions: list[Question],
    work: str | Path,
    cfg: IdentifyConfig = IdentifyConfig(),
    progress: bool = True,
    log=print,
    grader=None,
    device: str = "cpu",
    engine: EngineConfig = EngineConfig(),
    loaded=None,
) -> dict[str, Any]:
    """``engine``: where collect samples (``hedit.engine.choice``; features and the probe always run in
    transformers). ``loaded``: an already loaded (model, tokenizer) pair, or a function that returns one
    when first asked, for the stages that need the model in transformers (collect too, unless it runs in
    vLLM)."""
    work = Path(work)
    path = resolve_model(model)
    check_work(work, [("model", path)])
    work.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(path)
    if tok is None:
        raise HeditError(f"{path} has no tokenizer; identify needs one")
    lm = None

    def model_for_features():  # loaded once, and only when a stage is not cached
        nonlocal lm, tok
        if lm is None:
            if loaded is None:
                lm = load_model(path, device=device)
            else:
                lm, tok = loaded() if callable(loaded) else loaded
        return lm

    choice = choose_engine("sample", engine, device, len(questions) * cfg.samples * cfg.max_new_tokens)
    if loaded is not None and choice.kind == "hf":
        collect(
            model_for_features(),
            tok,
            questions,
            work / "responses.jsonl",
            cfg.sampling,
            cfg.batch_size,
            str(model),
            progress,
            grader,
            fingerprint(path),
        )
    else:
        collect_model(
            str(model),
            questions,
            work / "responses.jsonl",
            cfg.sampling,
            cfg.batch_size,
            device,
            progress,
            grader,
            engine,
            log,
            choice,
        )
    responses = work / "responses.jsonl"
    header, records = read_responses(responses)
    wanted = {q.qid for q in questions}
    records = [r for r in records if r["question_id"] in wanted]
    log(f"collect: {len(records)} questions, {class_counts(consistent(records))} answered consistently")
    filtered = work / "filtered.jsonl"
    kept = write_filtered(filtered, header, records, cfg.balance, cfg.seed)
    if min(class_counts(kept).values(), default=0) < 4:
        raise HeditError(
            f"too few consistent questions to probe ({class_counts(kept)}); use more questions or fewer --samples"
        )

    feats, neurons = work / "features", work / "neurons.json"
    stamps = Stamps(work)
    stamp = {"filtered_sha256": sha256_file(filtered), "model": str(model)}
    if stamps.fresh("features", stamp, feats / META):
        log(f"features: cached in {feats}")
    else:
        extract(
            model_for_features(),
            tok,
            kept,
            feats,
            str(model),
            batch_size=cfg.batch_size,
            device=device,
            progress=progress,
        )
        stamps.done("features", stamp)
    probe_stamp = {
        "features": stamp,
        "report_format": REPORT_FORMAT,
        "probe": cfg.probe.to_dict(),
        "qa_check": cfg.qa_check,
    }
    if stamps.fresh("probe", probe_stamp, neurons, work / "report.json"):
        log(f"probe: cached in {neurons}")
        report = read_json(work / "report.json")
    else:
        qa = None
        if cfg.qa_check:
            held = [q for q in questions if q.split == "heldout"] or bundled_questions("heldout")
            qa = qa_checker(
                model_for_features(), tok, [(q.question, q.aliases) for q in held], batch_size=max(cfg.batch_size, 16)
            )
        report = run_probe(feats, neurons, cfg.probe, progress, qa=qa)
        stamps.done("probe", probe_stamp)
    return report | {"work": str(work), "model_path": str(path)}
