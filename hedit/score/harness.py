"""lm-evaluation-harness as a capability check: its tasks scored on the model as it is in memory, with
hedit's runtime intervention on.

lm-eval's ``HFLM`` takes an already loaded transformers model, so the forward hooks of
``hedit.engine.intervention.scale_neurons`` are in every one of its forward passes: the score is that of
the edited behaviour, not of a file. ``simple_evaluate`` runs the tasks by name; ``include`` names a
folder of task YAML files (lm-eval's ``TaskManager(include_path=...)``), which is how tasks over local
JSON files run offline. Real task data (MMLU, GSM8K, ...) downloads from the Hub the first time and then
comes from the datasets cache.

Each task's score is its first metric in lm-eval's order of preference (``PREFERRED``), and hedit keeps
the per-document values of that metric too (``log_samples``), so a sweep can give it a bootstrap
interval and pair the same documents across alphas.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hedit.errors import HeditError

PREFIX = "lm-eval:"  # a sweep task that is an lm-eval task: "lm-eval:<name>"
PREFERRED = ("acc", "exact_match", "acc_norm", "f1", "bleu")


def task_key(name: str) -> str:
    return PREFIX + name


def is_harness_task(task: str) -> bool:
    return task.startswith(PREFIX)


def _import():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise HeditError("--lm-eval needs lm-evaluation-harness: pip install 'hedit[lm-eval]'") from None
    return lm_eval, HFLM, TaskManager


@functools.lru_cache(maxsize=8)
def _index(include: str | None, defaults: bool = True):
    """lm-eval's task index (reading every task file it ships takes seconds): built once per folder."""
    _, _, TaskManager = _import()
    with _quiet():
        return TaskManager(include_path=include, include_defaults=defaults)


def _task_manager(include: str | None, names: Sequence[str] = ()):
    """The index that knows ``names``: the local folder's alone when it holds them all (no need to read
    lm-eval's thousands of shipped tasks), else lm-eval's with the folder."""
    if include is not None and names:
        local = _index(include, defaults=False)
        if set(names) <= set(local.all_tasks):
            return local
    return _index(include)


def check_tasks(names: Sequence[str], include: str | Path | None, log=None) -> None:
    """One line for a task lm-eval does not know, or a local task (``include``) it cannot build (a key
    its TaskConfig does not take, ``data_files`` that name no file): before any model runs. A local
    folder whose tasks run Python (``!function``) is said once, naming the file (``log``)."""
    if not names:
        return
    if include is not None and not Path(include).is_dir():
        raise HeditError(f"--lm-eval-include {include}: not a folder of lm-eval task files")
    manager = _task_manager(str(include) if include else None, names)
    known = set(manager.all_tasks)
    missing = [n for n in names if n not in known]
    if missing:
        where = f" (nor in {include})" if include else " (a local task needs --lm-eval-include FOLDER)"
        raise HeditError(f"lm-eval knows no task {', '.join(map(repr, missing))}{where}")
    if include is None:
        return
    local = _index(str(include), defaults=False)
    for name in (n for n in names if n in set(local.all_tasks)):
        entry = getattr(local, "task_index", {}).get(name)
        where = getattr(entry, "yaml_path", None) or include
        _warn_code(Path(where), name, log)
        try:
            with _quiet():
                local.load([name])  # builds the task and reads its data files (local: fast)
        except Exception as e:  # lm-eval raises TypeError, ValueError, FileNotFoundError, datasets' errors
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise HeditError(f"lm-eval task {name!r} ({where}) cannot be loaded: {why}") from None


_WARNED: set[str] = set()


def _warn_code(path: Path, name: str, log) -> None:
    """Say once per file that a local task runs the folder's own Python (``!function`` in its YAML)."""
    try:
        text = path.read_text(errors="replace") if path.is_file() else ""
    except OSError:
        return
    if "!function" in text and str(path) not in _WARNED and log is not None:
        _WARNED.add(str(path))
        log(
            f"warning: lm-eval task {name!r} ({path}) uses !function: lm-eval imports and runs the Python "
            "file beside it. Use task folders you trust"
        )


@contextlib.contextmanager
def _quiet():
    """lm-eval logs every task's defaults at WARNING, prints tables and draws its own progress bars; keep
    hedit's output (and its one progress bar, drawn outside) readable."""
    loggers = [logging.getLogger(n) for n in ("lm-eval", "lm_eval", "datasets", "evaluate")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _primary(metrics: dict[str, Any]) -> str:
    names = [k.split(",")[0] for k in metrics if "," in k and not k.split(",")[0].endswith("_stderr")]
    for p in PREFERRED:
        if p in names:
            return p
    if not names:
        raise HeditError("an lm-eval task returned no metric")
    return names[0]


def run_tasks(
    model,
    tokenizer,
    names: Sequence[str],
    limit: int | None = None,
    include: str | Path | None = None,
    batch_size: int = 8,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Run lm-eval tasks on ``model`` (a loaded transformers model, hooks and all).

    Returns per task: ``metric`` (its name), ``value`` (lm-eval's aggregate), ``ids`` (document ids) and
    ``outcomes`` (the metric per document, in the same order), and every other aggregate in ``all``."""
    lm_eval, HFLM, _ = _import()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # lm-eval records the working directory's git commit with a bare `git describe`, whose "fatal: not a
    # git repository" goes straight to the terminal outside a repository: the hash means nothing here
    import importlib
    from unittest import mock

    evaluator = importlib.import_module("lm_eval.evaluator")
    no_git = mock.patch.object(evaluator, "get_git_commit_hash", lambda: None)
    with _quiet(), no_git:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(names),
            limit=limit,
            task_manager=_task_manager(str(include) if include else None, names),
            log_samples=True,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            bootstrap_iters=0,
        )
    scores = {}
    for name in names:
        metrics = out["results"][name]
        metric = _primary(metrics)
        key = next(k for k in metrics if k.split(",")[0] == metric)
        samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
        scores[name] = {
            "metric": metric,
            "value": float(metrics[key]),
            "ids": [int(s["doc_id"]) for s in samples],
            "outcomes": [float(s[metric]) for s in samples],
            "all": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and "stderr" not in k},
        }
    return scores


def choice_outcomes(model, tokenizer, items: Sequence[tuple[str, Sequence[str], int]]) -> list[int]:
    """hedit's own multiple-choice scoring: for each (context, choices, answer) item, 1 when the choice
    with the highest summed log-probability after the context is the answer. Tokens as lm-eval makes
    them for a causal model (context and context + choice encoded without special tokens; the choice
    is what the longer encoding adds)."""
    import torch

    out = []
    with torch.no_grad():
        for context, choices, answer in items:
            ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
            scores = []
            for choice in choices:
                whole = tokenizer(context + choice, add_special_tokens=False)["input_ids"]
                cont = whole[len(ctx) :]
                logits = model(torch.tensor([whole])).logits[0].float().log_softmax(-1)
                pos = range(len(whole) - len(cont) - 1, len(whole) - 1)
                scores.append(sum(float(logits[p, t]) for p, t in zip(pos, cont)))
            out.append(int(max(range(len(choices)), key=scores.__getitem__) == answer))
    return out
