"""Question sets: loaders for JSONL, CSV and Parquet in three schemas, and the bundled trivia set.

Schemas, detected per row:
- TriviaQA: ``question``, ``question_id``, ``answer`` = {``aliases``, ``normalized_aliases``, ...}
  (in CSV, columns ``answer.aliases`` / ``answer.normalized_aliases``);
- NQ-Open: ``question``, ``answer`` = [strings];
- flat: ``question``, ``answers`` = [strings], optional ``question_id``, ``split``, ``domain``;
- BioASQ: a JSON file ``{"questions": [{"body", "exact_answer", "ideal_answer", "id", "type"}]}``
  (factoid and list questions; yes/no and summary ones have no short answer and are left out).
A row with ``"unanswerable": true`` (a question about something that does not exist) has no answers:
declining is the faithful reply and any answer a hallucination.
In CSV a list cell is JSON (``["a", "b"]``) or ``|``-separated text.

Bundled sets, by name: ``trivia`` (the default) and ``fabricated`` (people, places, works and
institutions that do not exist; the paper's NonExist column), both written by the hedit team.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hedit.errors import HeditError
from hedit.io import hub_data
from hedit.io.files import check_regular
from hedit.io.jsonfile import jsonl, read_json, read_text

BUNDLED = "trivia.jsonl"
MAX_QUESTION = 100_000  # characters; a longer "question" is a file mix-up, and would not fit a model's context
BUNDLED_SETS = {"trivia": "trivia.jsonl", "fabricated": "fabricated.jsonl"}


@dataclass(frozen=True)
class Question:
    qid: str
    question: str
    aliases: tuple[str, ...]
    split: str | None = None
    domain: str | None = None
    unanswerable: bool = False


def _as_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                return None
        else:
            value = [v for v in value.split("|")]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    return None


def _aliases(row: dict[str, Any]) -> list[str] | None:
    answer = row.get("answer")
    if isinstance(answer, dict):  # TriviaQA
        found = (_as_list(answer.get("aliases")) or []) + (_as_list(answer.get("normalized_aliases")) or [])
        value = answer.get("value")
        if isinstance(value, str):
            found.insert(0, value)
        return found or None
    if "answer.aliases" in row or "answer.normalized_aliases" in row:  # TriviaQA flattened (CSV)
        found = (_as_list(row.get("answer.aliases")) or []) + (_as_list(row.get("answer.normalized_aliases")) or [])
        return found or None
    if answer is not None:  # NQ-Open
        return _as_list(answer)
    return _as_list(row.get("answers"))  # flat


def parse_row(row: Any, where: str, number: int) -> Question:
    if not isinstance(row, dict):
        raise HeditError(f"{where}: not an object")
    q = row.get("question")
    if not isinstance(q, str) or not q.strip():
        raise HeditError(f"{where}: no 'question'")
    if len(q) > MAX_QUESTION:
        raise HeditError(f"{where}: the question is {len(q)} characters long; hedit takes at most {MAX_QUESTION}")
    flag = row.get("unanswerable", False)
    if isinstance(flag, str):  # CSV cells
        flag = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}.get(
            flag.strip().lower(), flag
        )
    if not isinstance(flag, bool):
        raise HeditError(f"{where}: 'unanswerable' must be true or false")
    aliases = _aliases(row) or []
    if flag and aliases:
        raise HeditError(f"{where}: an unanswerable question has no answers")
    if not aliases and not flag:
        raise HeditError(f"{where}: no answers (expected 'answers', 'answer' or 'answer.aliases')")
    qid = row.get("question_id", row.get("id"))
    qid = str(qid) if qid not in (None, "") else f"q{number:05d}"
    return Question(
        qid,
        q.strip(),
        tuple(dict.fromkeys(aliases)),
        row.get("split") or None,
        row.get("domain") or None,
        flag,
    )


def _bioasq_answers(value: Any) -> list[str]:
    """BioASQ ``exact_answer``: a string, a list of strings (factoid synonyms) or a list of lists (list
    questions: any listed item is an accepted answer)."""
    if isinstance(value, str):
        return [value]
    out: list[str] = []
    if isinstance(value, list):
        for v in value:
            out += _bioasq_answers(v)
    return [v.strip() for v in out if isinstance(v, str) and v.strip()]


def _bioasq(path: Path, data: dict[str, Any]) -> Iterator[tuple[int, Any]]:
    qs = data["questions"]
    if not isinstance(qs, list):
        raise HeditError(f"{path}: 'questions' must be a list")
    for n, q in enumerate(qs, 1):
        if not isinstance(q, dict):
            raise HeditError(f"{path}: question {n} is not an object")
        if q.get("type") in ("yesno", "summary") or "exact_answer" not in q:
            continue
        yield (
            n,
            {
                "question": q.get("body"),
                "question_id": q.get("id"),
                "answers": _bioasq_answers(q["exact_answer"]),
                "domain": "biomedical",
            },
        )


# the columns a question row is read from: a Parquet file's other columns (TriviaQA's search results and
# entity pages, most of its bytes) are never read
ROW_KEYS = (
    "question",
    "question_id",
    "id",
    "answer",
    "answers",
    "answer.aliases",
    "answer.normalized_aliases",
    "split",
    "domain",
    "unanswerable",
)


def parquet_rows(path: Path, columns: tuple[str, ...] | None = None, name: str | None = None) -> list[dict]:
    """The rows of a Parquet file as dicts (only ``columns`` among its own, when given)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise HeditError("reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        f = pq.ParquetFile(path)
        keep = None if columns is None else [c for c in f.schema_arrow.names if c in columns]
        return f.read(columns=keep).to_pylist()
    except Exception as e:  # pyarrow raises its own error types for a file that is not Parquet
        raise HeditError(f"{name or path} is not a readable Parquet file: {str(e).splitlines()[0][:200]}") from None


def _rows(path: Path) -> Iterator[tuple[int, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = read_json(path, f"question file {path}")
        except HeditError:  # JSON lines named .json: read line by line (errors name the line)
            yield from jsonl(path, f"question file {path}")
            return
        if isinstance(data, dict) and "questions" in data:
            yield from _bioasq(path, data)
        elif isinstance(data, list):
            yield from enumerate(data, 1)
        else:
            raise HeditError(f'{path}: expected a list of questions or BioASQ\'s {{"questions": [...]}}')
    elif suffix == ".jsonl":
        yield from jsonl(path, f"question file {path}")
    elif suffix == ".csv":
        text = read_text(path, f"question file {path}")
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            for row in reader:
                if None in row:
                    raise HeditError(f"{path}:{reader.line_num}: more cells than the header has columns")
                yield reader.line_num, row
        except csv.Error as e:
            raise HeditError(f"{path}: not a valid CSV file ({e})") from None
    elif suffix == ".parquet":
        yield from enumerate(parquet_rows(path, ROW_KEYS), 1)
    else:
        raise HeditError(f"{path}: unknown question-file type {suffix!r} (use .jsonl, .json, .csv or .parquet)")


def load_questions(path: str | Path, split: str | None = None) -> list[Question]:
    """All questions of a file, or of a Hub dataset's split (``hf://datasets/...``: ``hedit.io.hub_data``);
    a malformed row is an error naming its file and line (or row) number."""
    if hub_data.is_dataset(str(path)):
        label, files = str(path), hub_data.fetch(str(path))
        sources = [(f, f"{label} ({f.name})" if len(files) > 1 else label) for f in files]
    else:
        path = Path(path)
        if not path.exists():
            raise HeditError(f"question file not found: {path}")
        check_regular(path, f"question file {path}")
        label, sources = str(path), [(path, str(path))]
    out: list[Question] = []
    for file, where in sources:
        kind = "line" if file.suffix.lower() in (".jsonl", ".csv") else "row"
        try:
            rows = list(_rows(file))
        except HeditError as e:  # name the dataset, not the cache's blob path
            raise HeditError(str(e).replace(str(file), where)) from None
        for n, row in rows:
            at = f"{where}:{n}" if kind == "line" else f"{where}: row {n}"
            out.append(parse_row(row, at, n if len(sources) == 1 else len(out) + 1))
    if not out:
        raise HeditError(f"{label}: no questions")
    seen: set[str] = set()
    for q in out:
        if q.qid in seen:
            raise HeditError(f"{label}: question_id {q.qid!r} appears twice")
        seen.add(q.qid)
    if split is not None:
        out = [q for q in out if q.split == split]
    return out


def bundled_path(name: str = "trivia") -> Path:
    return Path(str(resources.files("hedit") / "data" / BUNDLED_SETS[name]))


def bundled_questions(split: str | None = None, name: str = "trivia") -> list[Question]:
    """A bundled set (written by the hedit team), optionally one split: train or heldout."""
    return load_questions(bundled_path(name), split)


def select_questions(
    path: str | Path | None = None, split: str | None = None, limit: int | None = None, default_split: str | None = None
) -> list[Question]:
    """A question file's questions (or a bundled set's, by name, in ``default_split`` when no split is
    given; a file of that name wins), one split, the first ``limit``."""
    if limit is not None and limit < 1:
        raise HeditError(f"--limit must be at least 1, got {limit}")
    name = str(path) if path is not None and str(path) in BUNDLED_SETS and not Path(path).exists() else None
    if path is None or name:
        qs = bundled_questions(split or default_split, name or "trivia")
    else:
        qs = load_questions(path, split)
    if not qs:
        raise HeditError(f"{path or 'the bundled set'} has no questions{f' in split {split!r}' if split else ''}")
    return qs[:limit] if limit else qs
