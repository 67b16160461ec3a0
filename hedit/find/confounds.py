"""Do the H-neurons track truthfulness, or only how long the answer is?

A replication of the paper found that on whole-response readouts most "H-neurons" tracked response
length more than truthfulness. hedit averages CETT over the answer tokens, which should reduce this;
this module checks it on the probe's own data:

- per H-neuron, the (Pearson) correlation of its CETT with the label (hallucinated = 1), with the
  answer span's token count and with the response's token count, over every answer row;
- a length-only baseline: a logistic regression on (log) answer and response lengths, fitted on the
  training answer rows and scored on the held-out ones (AUROC beside the probe's);
- the probe on a length-matched subset of the held-out answers: for every answer length, as many
  faithful as hallucinated answers (seeded draw), so length cannot separate the classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hedit.find.labels import LENGTHS, Dataset, length_matrix
from hedit.io.atomic import save_png
from hedit.score.stats import auroc_interval, paired_auroc


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation; None where either side is constant (no correlation is defined)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _auroc(y: np.ndarray, score: np.ndarray, seed: int) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    if len(set(y.tolist())) < 2:
        return {"auroc": None, "auroc_ci95": None, "answers": int(len(y))}
    return {
        "auroc": float(roc_auc_score(y, score)),
        "auroc_ci95": auroc_interval(y, score, seed=seed),
        "answers": int(len(y)),
        "hallucinated": int(y.sum()),
    }


def length_matched(lengths: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Indices of a subset with equal class counts at every length (seeded): the classes' length
    distributions are then identical."""
    rng = np.random.default_rng(seed)
    keep = []
    for n in np.unique(lengths):
        pos = np.flatnonzero((lengths == n) & (y == 1))
        neg = np.flatnonzero((lengths == n) & (y == 0))
        k = min(len(pos), len(neg))
        if k:
            keep += list(rng.choice(pos, k, replace=False)) + list(rng.choice(neg, k, replace=False))
    return np.sort(np.array(keep, dtype=np.int64))


def confounds(
    ds: Dataset,
    rows: list[dict],
    answer_idx: np.ndarray,
    answer_x: np.ndarray,
    answer_y: np.ndarray,
    cols: np.ndarray,
    columns,
    probe_scores: np.ndarray,
    only_scores: np.ndarray,
    seed: int = 0,
) -> dict[str, Any] | None:
    """The confound report. ``answer_idx/x/y``: every answer row (train and held-out), the CETT of the
    H-neurons ``cols`` (one column each; ``columns``, a ``hedit.find.columns.Columns``, names them) and the
    label; ``probe_scores``/``only_scores``: the probe's and the H-neurons-only model's scores on ``ds``'s
    held-out rows. None for features written before
    lengths were recorded."""
    if ds.test_rows is None or not all(k in rows[int(i)] for i in answer_idx for k in LENGTHS):
        return None
    lengths = {k: np.array([rows[int(i)][k] for i in answer_idx], dtype=float) for k in LENGTHS}
    per_neuron = []
    for k, c in enumerate(cols):
        v = answer_x[:, k]
        r = columns.where(int(c)) | {"label": _corr(v, answer_y)}
        r |= {n: _corr(v, lengths[n]) for n in LENGTHS}
        per_neuron.append(r)

    def more_length(r):
        ls = [abs(r[k]) for k in LENGTHS if r[k] is not None]
        return bool(ls) and max(ls) > abs(r["label"] or 0.0)

    from sklearn.linear_model import LogisticRegression

    tr = np.array([i for i in ds.train_rows if rows[int(i)]["region"] == "answer"], dtype=np.int64)
    y_tr = np.array([int(rows[int(i)]["class"] == "hallucinated") for i in tr])
    if len(set(y_tr.tolist())) == 2:
        m = LogisticRegression(class_weight="balanced", max_iter=1000).fit(length_matrix(rows, tr), y_tr)
        length_only = _auroc(ds.y_test, m.predict_proba(length_matrix(rows, ds.test_rows))[:, 1], seed)
    else:
        length_only = {"auroc": None, "auroc_ci95": None, "answers": int(len(ds.y_test))}
    test_len = np.array([rows[int(i)]["answer_tokens"] for i in ds.test_rows])
    sub = length_matched(test_len, ds.y_test, seed)
    matched = _auroc(ds.y_test[sub], probe_scores[sub], seed)
    matched["h_neurons_only"] = _auroc(ds.y_test[sub], only_scores[sub], seed)["auroc"]
    two = len(set(y_tr.tolist())) == 2
    beyond = beyond_length(ds, rows, answer_idx, answer_x, tr, y_tr, sub, seed) if two else None
    return {
        "beyond_length": beyond,
        "per_neuron": per_neuron,
        "answers": int(len(answer_y)),
        "track_length_more_than_label": int(sum(more_length(r) for r in per_neuron)),
        "length_label_correlation": {k: _corr(lengths[k], answer_y) for k in LENGTHS},
        "length_only": length_only,
        "length_matched": matched | {"matched_on": "answer_tokens"},
    }


def beyond_length(
    ds: Dataset,
    rows: list[dict],
    answer_idx: np.ndarray,
    answer_x: np.ndarray,
    train_answers: np.ndarray,
    y_train: np.ndarray,
    matched: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    """Do the H-neurons add to length? Two logistic regressions (standardized, classes balanced) fitted on
    the training answer rows: on the two (log) lengths alone, and on the lengths and the H-neurons'
    CETT. Their held-out AUROCs and the difference, with paired bootstrap intervals (the same resampled
    answers for both), on every held-out answer and on the length-matched subset."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    at = {int(r): k for k, r in enumerate(answer_idx)}
    neurons = lambda idx: answer_x[[at[int(i)] for i in idx]]  # noqa: E731
    fits = {}
    for name, design in (
        ("length", lambda idx: length_matrix(rows, idx)),
        ("length_and_h_neurons", lambda idx: np.hstack([length_matrix(rows, idx), neurons(idx)])),
    ):
        m = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
        fits[name] = m.fit(design(train_answers), y_train).predict_proba(design(ds.test_rows))[:, 1]

    def compare(keep: np.ndarray) -> dict[str, Any]:
        r = paired_auroc(ds.y_test[keep], fits["length"][keep], fits["length_and_h_neurons"][keep], seed=seed)
        return {"rows": r["rows"], "hallucinated": r.get("hallucinated"), "length": r["a"]} | {
            "length_and_h_neurons": r["b"],
            "difference": r["difference"],
        }

    return {
        "model": "logistic regression on log(1 + tokens) of the answer span and the response, with or without "
        "the H-neurons' CETT; fitted on the training answers",
        "heldout": compare(np.arange(len(ds.y_test))),
        "length_matched": compare(matched),
    }


LENGTH_CLOSE = 0.05  # length alone within this much AUROC of the probe: the summary suggests --control length


def confound_lines(conf: dict[str, Any] | None, probe_auroc: float, control: str = "none") -> list[str]:
    """What `probe` prints about the confound check (``control``: the probe's --control)."""
    if not conf:
        return ["confounds: not checked (these features record no answer lengths; recompute them)"]
    n, k = len(conf["per_neuron"]), conf["track_length_more_than_label"]
    lo = conf["length_only"]
    lm = conf["length_matched"]

    def fmt(m):
        if m.get("auroc") is None:
            return "n/a (one class)"
        a, b = m["auroc_ci95"]
        return f"{m['auroc']:.3f} [{a:.2f}, {b:.2f}]"

    out = [
        f"confounds: {k} of {n} H-neurons correlate more with answer or response length than with the label",
        f"  length-only classifier AUROC {fmt(lo)} against the probe's {probe_auroc:.3f}",
        f"  probe on a length-matched subset ({lm['answers']} answers): AUROC {fmt(lm)}",
    ]
    for where, b in (conf.get("beyond_length") or {}).items():
        if not isinstance(b, dict) or not b.get("difference"):
            continue
        d = b["difference"]
        out.append(
            f"  {'held-out' if where == 'heldout' else 'length-matched'} ({b['rows']} answers): length alone "
            f"{fmt(b['length'])}, length + H-neurons {fmt(b['length_and_h_neurons'])}, difference "
            f"{d['auroc']:+.3f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] (paired)"
        )
    if lo.get("auroc") is not None and lo["auroc"] >= probe_auroc - LENGTH_CLOSE:
        gap = 100 * (probe_auroc - lo["auroc"])
        out.append(
            f"  length alone comes within {gap:.1f} points of the probe's AUROC"
            + ("" if control == "length" else ": try --control length, so L1 keeps only neurons that add to length")
        )
    return out


def confound_plot(conf: dict[str, Any], probe_auroc: float, folder: Path, probe_ci: list[float] | None = None) -> None:
    """confounds.png: each H-neuron's |correlation| with the label against that with length, and the
    AUROC of the probe, the length-only classifier and the probe on length-matched answers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8))
    pn = conf["per_neuron"]
    lab = [abs(r["label"] or 0) for r in pn]
    for k, m in zip(LENGTHS, ("o", "s")):
        a.scatter(lab, [abs(r[k] or 0) for r in pn], marker=m, alpha=0.7, label=k.replace("_", " "))
    top = max([0.05] + lab + [abs(r[k] or 0) for r in pn for k in LENGTHS]) * 1.05
    a.plot([0, top], [0, top], color="grey", lw=0.8)
    a.set(xlim=(0, top), ylim=(0, top), xlabel="|corr| with hallucination", ylabel="|corr| with length")
    a.set_title("per H-neuron (above the line: length)", fontsize=9)
    a.legend(fontsize=8)
    names = ["probe", "length only", "probe, length-matched"]
    vals = [probe_auroc, conf["length_only"].get("auroc"), conf["length_matched"].get("auroc")]
    cis = [probe_ci, conf["length_only"].get("auroc_ci95"), conf["length_matched"].get("auroc_ci95")]
    for i, (v, ci) in enumerate(zip(vals, cis)):
        if v is None:
            continue
        b.bar(i, v, color=("#c0392b", "#7f8c8d", "#e67e22")[i])
        if ci:
            b.errorbar(i, v, yerr=[[v - ci[0]], [ci[1] - v]], color="black", capsize=4)
    b.axhline(0.5, color="grey", ls="--", lw=0.8)
    b.set_xticks(range(3), names, fontsize=8)
    b.set(ylim=(0, 1.02), ylabel="held-out AUROC")
    b.set_title("does length explain detection?", fontsize=9)
    fig.tight_layout()
    save_png(fig, folder / "confounds.png", 120)
    plt.close(fig)
