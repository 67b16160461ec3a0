"""The probe's data (``hedit.find.labels``): labels per mode, and train / held-out split by question."""

import numpy as np
import pytest

from hedit.errors import HeditError
from hedit.find.labels import dataset, labels, split_questions


def rows_of(n_questions=40, split=None):
    rows = []
    for q in range(n_questions):
        cls = "hallucinated" if q % 2 else "correct"
        for region in ("answer", "other"):
            rows.append({"question_id": f"q{q}", "class": cls, "region": region, "split": split(q) if split else None})
    rows.append({"question_id": "qx", "class": "inconsistent", "region": "answer", "split": None})
    return rows


def test_label_modes():
    rows = [
        {"class": "hallucinated", "region": "answer"},
        {"class": "correct", "region": "answer"},
        {"class": "hallucinated", "region": "other"},
        {"class": "correct", "region": "other"},
        {"class": "inconsistent", "region": "answer"},
    ]
    idx, y = labels(rows, "3-vs-1")
    assert idx.tolist() == [0, 1, 2, 3] and y.tolist() == [1, 0, 0, 0]
    idx, y = labels(rows, "1-vs-1")
    assert idx.tolist() == [0, 1] and y.tolist() == [1, 0]
    with pytest.raises(HeditError, match="unknown probe mode"):
        labels(rows, "2-vs-2")


def test_the_files_split_wins_and_a_seeded_draw_holds_out_both_classes():
    held, how = split_questions(rows_of(split=lambda q: "heldout" if q < 10 else "train"), 0.2, 0)
    assert held == {f"q{q}" for q in range(10)} and how == "the question file's split"
    held, how = split_questions(rows_of(), 0.2, seed=3)
    assert how.startswith("seeded draw of 20%") and len(held) == 8 + 1  # 4 of each class of 20, 1 inconsistent
    assert {int(q[1:]) % 2 for q in held if q != "qx"} == {0, 1}
    assert split_questions(rows_of(), 0.2, seed=3) == (held, how)  # seeded: the same draw again


def test_no_question_is_both_trained_on_and_held_out():
    rows = rows_of()
    mat = np.arange(len(rows), dtype=np.float32)[:, None]  # each row's own index as its feature
    d = dataset(rows, mat, "3-vs-1", 0.25, seed=1)
    train_q = {rows[i]["question_id"] for i in d.train_rows}
    test_q = {rows[i]["question_id"] for i in d.test_rows}
    assert not train_q & test_q and all(rows[i]["region"] == "answer" for i in d.test_rows)
    assert d.x_train[:, 0].tolist() == d.train_rows.tolist() and d.x_test[:, 0].tolist() == d.test_rows.tolist()
    assert d.y_test.tolist() == [int(rows[i]["class"] == "hallucinated") for i in d.test_rows]
    assert set(d.y_train.tolist()) == {0, 1} and set(d.y_test.tolist()) == {0, 1}


def test_one_class_is_an_error():
    rows = [r for r in rows_of() if r["class"] == "correct"]
    with pytest.raises(HeditError, match=r"one class \(20 correct, 0 hallucinated\)"):
        dataset(rows, np.zeros((len(rows), 1), dtype=np.float32), "3-vs-1")
