import csv
import json
from pathlib import Path

import pytest

from hedit.errors import HeditError
from hedit.io.questions import bundled_questions, load_questions
from hedit.measure.judge import normalize

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_three_schemas_in_jsonl(tmp_path):
    rows = [
        {
            "question": "Q1?",
            "question_id": "tqa1",
            "answer": {"aliases": ["Paris", "City of Light"], "normalized_aliases": ["paris"], "value": "Paris"},
        },
        {"question": "Q2?", "answer": ["Lew Brown"]},
        {"question": "Q3?", "answers": ["a", "b"], "split": "heldout", "domain": "x"},
    ]
    qs = load_questions(write_jsonl(tmp_path / "q.jsonl", rows))
    assert [q.qid for q in qs] == ["tqa1", "q00002", "q00003"]
    assert qs[0].aliases == ("Paris", "City of Light", "paris")
    assert qs[1].aliases == ("Lew Brown",) and qs[2].aliases == ("a", "b")
    assert qs[2].split == "heldout" and qs[2].domain == "x"
    assert [q.qid for q in load_questions(tmp_path / "q.jsonl", split="heldout")] == ["q00003"]


def test_csv_with_json_and_pipe_cells(tmp_path):
    path = tmp_path / "q.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question_id", "question", "answers"])
        w.writerow(["a", "Q1?", '["x", "y"]'])
        w.writerow(["b", "Q2?", "m|n"])
    qs = load_questions(path)
    assert [(q.qid, q.aliases) for q in qs] == [("a", ("x", "y")), ("b", ("m", "n"))]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "answer.aliases", "answer.normalized_aliases"])
        w.writerow(["Q?", '["Paris"]', '["paris"]'])
    assert load_questions(path)[0].aliases == ("Paris", "paris")


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(
        [
            {"question": "Q?", "question_id": "p1", "answer": {"aliases": ["Oslo"], "normalized_aliases": ["oslo"]}},
        ]
    )
    pq.write_table(table, tmp_path / "q.parquet")
    assert load_questions(tmp_path / "q.parquet")[0].aliases == ("Oslo", "oslo")
    pq.write_table(pa.Table.from_pylist([{"question": "Q?", "answers": []}]), tmp_path / "bad.parquet")
    with pytest.raises(HeditError, match=r"bad.parquet: row 1: no answers"):
        load_questions(tmp_path / "bad.parquet")


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"question": "Q?", "answers": ["a"]}\n{oops\n', r"q.jsonl:2: not valid JSON"),
        ('{"question": "Q?", "answers": ["a"]}\n\n{"answers": ["a"]}\n', r"q.jsonl:3: no 'question'"),
        ('{"question": "Q?", "answers": []}\n', r"q.jsonl:1: no answers"),
        ('["a"]\n', r"q.jsonl:1: not an object"),
        ("", r"no questions"),
        (
            '{"question": "Q?", "answers": ["a"], "question_id": 1}\n'
            '{"question": "R?", "answers": ["b"], "question_id": 1}\n',
            "question_id '1' appears twice",
        ),
    ],
)
def test_malformed_rows_name_their_line(tmp_path, content, message):
    (tmp_path / "q.jsonl").write_text(content)
    with pytest.raises(HeditError, match=message):
        load_questions(tmp_path / "q.jsonl")


def test_bad_csv_row_and_unknown_type(tmp_path):
    (tmp_path / "q.csv").write_text('question,answers\nQ?,"[""a""]"\n,"[""b""]"\n')
    with pytest.raises(HeditError, match=r"q.csv:3: no 'question'"):
        load_questions(tmp_path / "q.csv")
    (tmp_path / "q.txt").write_text("x")
    with pytest.raises(HeditError, match="unknown question-file type '.txt'"):
        load_questions(tmp_path / "q.txt")
    with pytest.raises(HeditError, match="not found"):
        load_questions(tmp_path / "none.jsonl")


def test_bundled_set():
    qs = bundled_questions()
    assert len(qs) >= 800 and len({q.qid for q in qs}) == len(qs)
    assert len({q.domain for q in qs}) >= 10
    held = bundled_questions("heldout")
    assert 0.15 < len(held) / len(qs) < 0.25 and all(q.split == "heldout" for q in held)
    assert {q.split for q in qs} == {"train", "heldout"}
    assert all(normalize(a) for q in qs for a in q.aliases)  # every alias survives normalization


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_real_public_data_loads():
    tqa = load_questions(SHARED / "triviaqa-sample-600.jsonl")
    nq = load_questions(SHARED / "nq-open-dev-sample-1000.jsonl")
    assert len(tqa) == 600 and len(nq) == 1000
    assert all(q.aliases for q in tqa + nq)
