import csv
import json
from pathlib import Path

import pytest

from hedit.errors import HeditError
from hedit.io.questions import bundled_path, bundled_questions, load_questions
from hedit.score.judge import normalize

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


def test_unanswerable_rows(tmp_path):
    rows = [
        {"question": "Who founded Vell Ardony?", "answers": [], "unanswerable": True},
        {"question": "Q2?", "answers": ["x"]},
    ]
    qs = load_questions(write_jsonl(tmp_path / "q.jsonl", rows))
    assert [(q.aliases, q.unanswerable) for q in qs] == [((), True), (("x",), False)]
    (tmp_path / "q.csv").write_text("question,answers,unanswerable\nA?,,true\nB?,b,no\n")
    assert [(q.aliases, q.unanswerable) for q in load_questions(tmp_path / "q.csv")] == [((), True), (("b",), False)]
    for bad, msg in [
        (
            {"question": "A?", "answers": ["a"], "unanswerable": True},
            r"q2.jsonl:1: an unanswerable question has no answers",
        ),
        (
            {"question": "A?", "answers": [], "unanswerable": "maybe"},
            r"q2.jsonl:1: 'unanswerable' must be true or false",
        ),
        ({"question": "A?", "answers": []}, r"q2.jsonl:1: no answers"),
    ]:
        with pytest.raises(HeditError, match=msg):
            load_questions(write_jsonl(tmp_path / "q2.jsonl", [bad]))


def test_bioasq_json(tmp_path):
    data = {
        "questions": [
            {
                "body": "Which gene is mutated in cystic fibrosis?",
                "id": "b1",
                "type": "factoid",
                "exact_answer": [["CFTR"], ["cystic fibrosis transmembrane conductance regulator"]],
            },
            {"body": "Is aspirin an NSAID?", "id": "b2", "type": "yesno", "exact_answer": "yes"},
            {"body": "Describe X.", "id": "b3", "type": "summary", "ideal_answer": ["..."]},
            {
                "body": "List two statins.",
                "id": "b4",
                "type": "list",
                "exact_answer": [["atorvastatin"], ["simvastatin"]],
            },
        ]
    }
    path = tmp_path / "bioasq.json"
    path.write_text(json.dumps(data))
    qs = load_questions(path)
    assert [(q.qid, q.aliases, q.domain) for q in qs] == [
        ("b1", ("CFTR", "cystic fibrosis transmembrane conductance regulator"), "biomedical"),
        ("b4", ("atorvastatin", "simvastatin"), "biomedical"),
    ]
    path.write_text(json.dumps({"questions": {"a": 1}}))
    with pytest.raises(HeditError, match="'questions' must be a list"):
        load_questions(path)
    path.write_text(json.dumps([{"question": "A?", "answers": ["a"]}]))  # a plain list of rows
    assert load_questions(path)[0].aliases == ("a",)
    path.write_text('{"question": "A?", "answers": ["a"]}\n{"question": "B?", "answers": ["b"]}\n')  # JSON lines
    assert [q.question for q in load_questions(path)] == ["A?", "B?"]


def test_bundled_sets_by_name(tmp_path, monkeypatch):
    from hedit.io.questions import select_questions

    fab = select_questions("fabricated", default_split="train")
    assert len(fab) == 64 and all(q.unanswerable and not q.aliases for q in fab)
    assert len(select_questions("fabricated", split="heldout")) == 16
    assert select_questions(None, default_split="train") == bundled_questions("train")
    monkeypatch.chdir(tmp_path)  # a file of that name wins over the bundled set
    write_jsonl(tmp_path / "fabricated", [{"question": "Mine?", "answers": ["m"]}])
    with pytest.raises(HeditError, match=r"^fabricated: unknown question-file type ''"):
        select_questions("fabricated")


def _corpus_text():
    """Every question and answer of the bundled trivia set, the suites, and the shared public data."""
    from importlib import resources

    texts = []
    data = Path(str(resources.files("hedit") / "data"))
    for f in sorted(data.glob("*.jsonl")):
        if f.name != "fabricated.jsonl":
            texts.append(f.read_text())
    for f in sorted(SHARED.glob("*.jsonl")):
        texts.append(f.read_text())
    return normalize(" ".join(texts))


def test_fabricated_entities_are_decoys():
    """The NonExist set: every entity is named in its question, split 64/16, 20 of each kind, and no
    entity's name occurs in any real question or answer text we hold (each has a word found nowhere)."""
    rows = [json.loads(x) for x in bundled_path("fabricated").read_text().splitlines()]
    assert len(rows) == 80 and len({r["question_id"] for r in rows}) == 80
    kinds = {}
    for r in rows:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        assert r["entity"] in r["question"] and r["answers"] == [] and r["unanswerable"] is True
    assert kinds == {"person": 20, "place": 20, "work": 20, "institution": 20}
    assert sorted(r["split"] for r in rows).count("heldout") == 16
    corpus = _corpus_text()
    words = set(corpus.split())
    padded = f" {corpus} "
    for r in rows:
        name = normalize(r["entity"])
        assert f" {name} " not in padded, r["entity"]
        assert any(w not in words for w in name.split()), f"every word of {r['entity']!r} is a real one"
