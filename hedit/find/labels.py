"""The probe's data: labels of feature rows per mode, and the train / held-out split by question."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from hedit.config import MODES
from hedit.errors import HeditError


@dataclass
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray  # held-out answer rows
    y_test: np.ndarray
    split: str  # how train and held-out questions were separated
    train_rows: np.ndarray | None = None  # feature-row indices of x_train and x_test
    test_rows: np.ndarray | None = None
    z_train: np.ndarray | None = None  # covariates the probe controls for (--control length), or None
    z_test: np.ndarray | None = None

    def restrict(self, keep: np.ndarray) -> Dataset:
        """The same held-out rows, training on the rows ``keep`` (positions in x_train) only."""
        z = None if self.z_train is None else self.z_train[keep]
        rows = None if self.train_rows is None else self.train_rows[keep]
        return Dataset(
            take_rows(self.x_train, keep), self.y_train[keep], self.x_test, self.y_test, self.split, rows,
            self.test_rows, z, self.z_test,
        )  # fmt: skip


LENGTHS = ("answer_tokens", "response_tokens")


def has_lengths(rows: list[dict]) -> bool:
    """Features written since lengths were recorded (each row: its answer span's and response's tokens)."""
    return bool(rows) and all(k in r for r in rows for k in LENGTHS)


def length_matrix(rows: list[dict], idx: np.ndarray) -> np.ndarray:
    """log(1 + tokens) of the answer span and of the response, per row ``idx``: the length covariates."""
    return np.log1p(np.array([[rows[int(i)][k] for k in LENGTHS] for i in idx], dtype=float).reshape(-1, 2))


def take_rows(mat, idx: np.ndarray):
    """Rows ``idx`` of a feature matrix: an array (dense features) or a CSR matrix (a mixture of experts)."""
    from scipy.sparse import issparse

    return mat[idx] if issparse(mat) else np.asarray(mat[idx])


def take_columns(x, cols: np.ndarray) -> np.ndarray:
    """Columns ``cols`` of rows already taken, as a dense float32 array (a few neurons: small)."""
    from scipy.sparse import issparse

    return np.asarray(x[:, cols].toarray() if issparse(x) else x[:, cols], dtype=np.float32)


def labels(rows: list[dict], mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(row indices used, 0/1 labels) for a probe mode."""
    if mode not in MODES:
        raise HeditError(f"unknown probe mode {mode!r}; choose {' or '.join(MODES)}")
    idx, y = [], []
    for i, r in enumerate(rows):
        if r["class"] not in ("correct", "hallucinated"):
            continue
        if r["region"] == "answer":
            idx.append(i)
            y.append(int(r["class"] == "hallucinated"))
        elif r["region"] == "other" and mode == "3-vs-1":
            idx.append(i)
            y.append(0)
    return np.array(idx, dtype=np.int64), np.array(y, dtype=np.int64)


def split_questions(
    rows: list[dict], heldout_fraction: float, seed: int, use_file: bool = True
) -> tuple[set[str], str]:
    """Held-out question ids: the rows' own 'heldout' split when present, else a seeded draw
    stratified by class (so both classes are held out)."""
    cls = {r["question_id"]: r["class"] for r in rows}
    held = {r["question_id"] for r in rows if r.get("split") == "heldout"}
    if use_file and held and len(held) < len(cls):
        return held, "the question file's split"
    rng = random.Random(seed)
    out: set[str] = set()
    for c in sorted(set(cls.values())):
        ids = sorted(q for q, k in cls.items() if k == c)
        out |= set(rng.sample(ids, max(1, round(len(ids) * heldout_fraction))))
    return out, f"seeded draw of {heldout_fraction:.0%} of questions per class (seed {seed})"


def dataset(rows: list[dict], mat: np.ndarray, mode: str, heldout_fraction: float = 0.2, seed: int = 0) -> Dataset:
    idx, y = labels(rows, mode)
    counts = {
        c: sum(1 for r in rows if r["region"] == "answer" and r["class"] == c) for c in ("correct", "hallucinated")
    }
    if min(counts.values()) == 0:
        raise HeditError(
            f"all responses are in one class ({counts['correct']} correct, {counts['hallucinated']} hallucinated); "
            "the probe needs both: collect more questions"
        )
    for use_file in (True, False):
        held, how = split_questions(rows, heldout_fraction, seed, use_file)
        is_held = np.array([rows[i]["question_id"] in held for i in idx])
        is_answer = np.array([rows[i]["region"] == "answer" for i in idx])
        train, test = idx[~is_held], idx[is_held & is_answer]
        y_train, y_test = y[~is_held], y[is_held & is_answer]
        if len(set(y_train.tolist())) == 2 and len(set(y_test.tolist())) == 2:
            break
    else:
        raise HeditError("train or held-out questions have only one class; collect more questions")
    return Dataset(
        take_rows(mat, np.sort(train)),
        y_train[np.argsort(train)],
        take_rows(mat, np.sort(test)),
        y_test[np.argsort(test)],
        how,
        np.sort(train),
        np.sort(test),
    )
