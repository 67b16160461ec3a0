"""`hedit probe`: the sparse probe that names the H-neurons.

Labels ("3-vs-1", the paper's): hallucinated answer tokens = 1; faithful answer tokens and every
"other"-region row = 0. "1-vs-1": answer rows only, hallucinated = 1 against faithful = 0.
An L1 logistic regression (scikit-learn, liblinear, classes weighted to balance) is fitted for each
C of a grid on the train questions; the C with the best held-out accuracy wins (ties: the sparser
probe). The neurons with positive weight are the H-neurons.

Held-out metrics are for detection on answer rows (hallucinated vs faithful): accuracy, precision,
recall, F1 and AUROC. The paper's central claim is checked against a baseline: a logistic regression
on the H-neurons alone against the same on as many random neurons (several draws, mean and spread).
AUROCs carry a 95% bootstrap interval. Features of the same model on other questions (``test_features``)
get the same scores, with every model fitted here: do the neurons carry over to another dataset?
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import HeditError
from .features import check_features_model, open_features
from .neurons import ModelInfo, Neuron, NeuronSet
from .progress import bar

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
MODES = ("3-vs-1", "1-vs-1")
REPORT_FORMAT = 2  # bumped when report.json gains or changes fields: cached probe stages rerun


@dataclass
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray  # held-out answer rows
    y_test: np.ndarray
    split: str  # how train and held-out questions were separated


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


def split_questions(rows: list[dict], heldout_fraction: float, seed: int, use_file: bool = True
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
    counts = {c: sum(1 for r in rows if r["region"] == "answer" and r["class"] == c)
              for c in ("correct", "hallucinated")}
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
    return Dataset(np.asarray(mat[np.sort(train)]), y_train[np.argsort(train)],
                   np.asarray(mat[np.sort(test)]), y_test[np.argsort(test)], how)


def metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    pred = (score >= 0.5).astype(int)
    return {"accuracy": float(accuracy_score(y, pred)), "precision": float(precision_score(y, pred, zero_division=0)),
            "recall": float(recall_score(y, pred, zero_division=0)), "f1": float(f1_score(y, pred, zero_division=0)),
            "auroc": float(roc_auc_score(y, score))}


@dataclass
class L1Fit:
    coef: np.ndarray  # [features], zero outside the working set
    intercept: float
    rounds: int  # working-set rounds until every feature met the optimality (KKT) conditions

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return _probability(x, self.coef, self.intercept)


def _probability(x: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    """Logistic probability of class 1; float32 products so a wide x is never copied to float64."""
    return 1.0 / (1.0 + np.exp(-(x @ coef.astype(np.float32) + intercept)))


def _liblinear(x: np.ndarray, y: np.ndarray, c: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(l1_ratio=1.0, solver="liblinear", C=c, class_weight="balanced", max_iter=1000,
                              tol=1e-6, random_state=seed).fit(x, y)


def _gradient(x: np.ndarray, v: np.ndarray, chunk: int = 256) -> np.ndarray:
    """x.T @ v in row chunks (float32 products, float64 sum): no float64 copy of x is ever made."""
    g = np.zeros(x.shape[1], dtype=np.float64)
    for i in range(0, x.shape[0], chunk):
        g += x[i:i + chunk].T @ v[i:i + chunk].astype(np.float32)
    return g


def fit_l1(x: np.ndarray, y: np.ndarray, c: float, seed: int = 0, working: int = 4096,
           tol: float = 1e-3) -> L1Fit:
    """L1 logistic regression as scikit-learn's liblinear solves it (classes balanced), exact and wide.

    liblinear copies its input to float64 feature nodes (16 bytes per value): for 4,000 rows of
    Llama-8B width (458,752 neurons) that is ~29 GB. Instead liblinear solves the problem on a working
    set of features; a feature left out is provably zero in the full solution when
    |C * sum_i w_i x_ij (p_i - y_i)| <= 1 (its KKT condition, w_i the class weights). Features that
    break it join the working set and the fit is redone, until none does. Small problems go straight
    to liblinear.
    """
    n, d = x.shape
    if d <= working:
        m = _liblinear(x, y, c, seed)
        return L1Fit(m.coef_[0].astype(np.float64), float(m.intercept_[0]), 0)
    pos = y.sum()
    sw = np.where(y == 1, n / (2.0 * pos), n / (2.0 * (n - pos))) * c  # C times the balanced class weights
    grad = _gradient(x, sw * (0.5 - y))  # at w = 0 the balanced-weight prior is p = 0.5
    active = np.sort(np.argsort(-np.abs(grad))[:working])
    for rounds in range(1, 50):
        m = _liblinear(np.ascontiguousarray(x[:, active]), y, c, seed)
        w = m.coef_[0]
        p = _probability(x[:, active], w, m.intercept_[0])
        grad = np.abs(_gradient(x, sw * (p - y)))
        grad[active] = 0.0
        broken = np.flatnonzero(grad > 1.0 + tol)
        if broken.size == 0:
            coef = np.zeros(d)
            coef[active] = w
            return L1Fit(coef, float(m.intercept_[0]), rounds)
        keep = active[w != 0]
        add = broken[np.argsort(-grad[broken])][:working]
        active = np.union1d(np.union1d(keep, add), active[: max(0, working - len(keep) - len(add))])
    raise HeditError("the L1 probe did not converge on its working set; try a smaller C")


def auroc_interval(y: np.ndarray, score: np.ndarray, resamples: int = 1000, seed: int = 0) -> list[float]:
    """Percentile 95% interval of the AUROC, resampling hallucinated and faithful rows separately (so
    every resample has both classes). AUROC by ranks (Mann-Whitney, ties averaged), all resamples at once."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    idx = np.concatenate([rng.choice(pos, (resamples, len(pos))), rng.choice(neg, (resamples, len(neg)))], axis=1)
    ranks = rankdata(score[idx], axis=1)
    auc = (ranks[:, :len(pos)].sum(axis=1) - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
    return [float(v) for v in np.percentile(auc, [2.5, 97.5])]


def subset_scores(ds: Dataset, columns: np.ndarray, seed: int = 0) -> np.ndarray:
    """A plain (L2) logistic regression on the given neurons only (standardized, classes balanced),
    fitted on the training rows; its probabilities on the held-out rows. The same model for H-neurons
    and for random neurons."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    m = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed))
    m.fit(ds.x_train[:, columns], ds.y_train)
    return m.predict_proba(ds.x_test[:, columns])[:, 1]


def with_interval(y: np.ndarray, score: np.ndarray, seed: int) -> dict[str, Any]:
    return metrics(y, score) | {"auroc_ci95": auroc_interval(y, score, seed=seed)}


def baseline(ds: Dataset, k: int, width: int, draws: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    runs = [metrics(ds.y_test, subset_scores(ds, np.sort(rng.choice(width, size=k, replace=False)), seed))
            for _ in range(draws)]
    return {key: {"mean": float(np.mean([r[key] for r in runs])), "std": float(np.std([r[key] for r in runs]))}
            for key in runs[0]} | {"draws": draws}


def answer_rows(features: str | Path, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(answer rows, 1 = hallucinated) of a features folder that must come from the model of ``meta``."""
    tmeta, rows, mat = open_features(features)
    check_features_model(tmeta, (meta["model_type"], meta["num_layers"], meta["intermediate_size"]),
                         f"test features {features}")
    idx, y = labels(rows, "1-vs-1")
    if len(set(y.tolist())) < 2:
        raise HeditError(f"test features {features} need both correct and hallucinated answers "
                         f"({int(y.sum())} hallucinated of {len(y)})")
    return np.asarray(mat[idx]), y


def transfer(ds: Dataset, fit: L1Fit, cols: np.ndarray, x: np.ndarray, y: np.ndarray, width: int, draws: int,
             seed: int) -> dict[str, Any]:
    """Scores on another dataset's answer rows: the chosen probe as fitted, and plain probes on the
    H-neurons alone and on random neurons trained on ``ds``'s training rows."""
    ext = Dataset(ds.x_train, ds.y_train, x, y, "external")
    return {"answers": int(len(y)), "hallucinated": int(y.sum()),
            "probe": with_interval(y, fit.predict_proba(x), seed),
            "h_neurons_only": with_interval(y, subset_scores(ext, cols, seed), seed),
            "random_neurons_only": baseline(ext, len(cols), width, draws, seed)}


def run_probe(features: str | Path, out: str | Path, mode: str = "3-vs-1", c_grid: tuple[float, ...] = C_GRID,
              random_draws: int = 5, seed: int = 0, progress: bool = True, plots: bool = True,
              qa=None, max_qa_drop: float = 2.0, test_features: tuple[str | Path, ...] = ()) -> dict[str, Any]:
    """Fit, choose C, write ``out`` (neurons.json), ``report.json`` and plots beside it.

    ``qa`` (optional): a function of {layer: [(index, alpha)]} giving held-out QA accuracy with those
    neurons scaled (``hedit.capability.qa_checker``). Then each C's H-neurons are silenced (alpha 0), and
    a C whose neurons cost more than ``max_qa_drop`` points of QA accuracy is passed over.

    ``test_features``: feature folders of the same model on other questions (another dataset). The
    chosen probe, and probes on the H-neurons alone and on random neurons (fitted on this folder's
    training rows), are scored on their answer rows: does what was found here carry over?
    """
    meta, rows, mat = open_features(features)
    ds = dataset(rows, mat, mode, seed=seed)
    tests = {str(t): answer_rows(t, meta) for t in test_features}  # bad input fails before any fitting
    layers, inter = meta["num_layers"], meta["intermediate_size"]
    sweep = []
    with bar(len(c_grid), "probe", "C", progress) as pbar:
        for c in c_grid:
            model = fit_l1(ds.x_train, ds.y_train, c, seed)
            coef = model.coef
            sweep.append({"C": c, "positive": int((coef > 0).sum()), "nonzero": int((coef != 0).sum()),
                          "heldout": metrics(ds.y_test, model.predict_proba(ds.x_test)), "fit": model,
                          "working_set_rounds": model.rounds})
            pbar.update(1)
    usable = [s for s in sweep if s["positive"] > 0]
    if not usable:
        raise HeditError("no C in the grid gives any positive weight; try larger C values (--c)")
    qa_report = None
    if qa is not None:
        usable, qa_report = _qa_criterion(usable, qa, inter, max_qa_drop, progress)
    best = max(usable, key=lambda s: (s["heldout"]["accuracy"], -s["nonzero"]))
    coef = best["fit"].coef
    cols = np.flatnonzero(coef > 0)
    neurons = [Neuron(int(j // inter), int(j % inter), weight=float(coef[j])) for j in cols]
    report = {
        "mode": mode, "C": best["C"], "split": ds.split,
        "rows": {"train": int(len(ds.y_train)), "heldout_answers": int(len(ds.y_test)),
                 "train_positive": int(ds.y_train.sum()), "heldout_positive": int(ds.y_test.sum())},
        "h_neurons": len(neurons), "fraction_of_neurons": len(neurons) / (layers * inter),
        "heldout": with_interval(ds.y_test, best["fit"].predict_proba(ds.x_test), seed), "qa_check": qa_report,
        "h_neurons_only": with_interval(ds.y_test, subset_scores(ds, cols, seed), seed),
        "random_neurons_only": baseline(ds, len(cols), layers * inter, random_draws, seed),
        "c_sweep": [{k: v for k, v in s.items() if k != "fit"} for s in sweep],
        "per_layer": {str(layer): n for layer, n in sorted(_per_layer(neurons).items())},
    }
    if tests:
        report["transfer"] = {name: transfer(ds, best["fit"], cols, x, y, layers * inter, random_draws, seed)
                              for name, (x, y) in tests.items()}
    ns = NeuronSet(ModelInfo(meta["model_type"], layers, inter, meta.get("name") or None), neurons,
                   provenance={"probe": {k: report[k] for k in ("mode", "C", "split", "heldout", "qa_check",
                                                               "h_neurons_only", "random_neurons_only")}
                               | ({"transfer": report["transfer"]} if tests else {}),
                               "features": str(Path(features).resolve())})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ns.save(out)
    (out.parent / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if plots:
        _plots(report, layers, out.parent)
    return report


def _qa_criterion(usable: list[dict], qa, inter: int, max_drop: float, progress: bool
                  ) -> tuple[list[dict], dict[str, Any]]:
    """The C values whose silenced H-neurons keep QA accuracy within ``max_drop`` points of the
    unedited model (all usable ones, with a warning, when none does)."""
    with bar(len(usable) + 1, "QA check", "run", progress) as pbar:
        base = qa({})
        pbar.update(1)
        for s in usable:
            layers: dict[int, list[tuple[int, float]]] = {}
            for j in np.flatnonzero(s["fit"].coef > 0):
                layers.setdefault(int(j // inter), []).append((int(j % inter), 0.0))
            s["qa_accuracy_silenced"] = qa(layers)
            s["qa_drop_points"] = round(100 * (base - s["qa_accuracy_silenced"]), 3)
            pbar.update(1)
    kept = [s for s in usable if s["qa_drop_points"] <= max_drop]
    report = {"qa_accuracy": base, "max_drop_points": max_drop, "kept_C": [s["C"] for s in kept]}
    if not kept:
        report["warning"] = (f"every C's H-neurons cost more than {max_drop} points of QA accuracy when silenced; "
                             "chose among all C")
        kept = usable
    return kept, report


def _per_layer(neurons: list[Neuron]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for n in neurons:
        counts[n.layer] = counts.get(n.layer, 0) + 1
    return counts


def _plots(report: dict[str, Any], layers: int, folder: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = report["per_layer"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.bar(range(layers), [per.get(str(i), 0) for i in range(layers)], color="#c0392b")
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set(xlabel="layer", ylabel="H-neurons", title=f"{report['h_neurons']} H-neurons per layer (C={report['C']:g})")
    fig.tight_layout()
    fig.savefig(folder / "neurons_per_layer.png", dpi=120)
    plt.close(fig)

    sweep = report["c_sweep"]
    cs = [s["C"] for s in sweep]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(cs, [s["heldout"]["accuracy"] for s in sweep], "o-", label="held-out accuracy")
    ax.plot(cs, [s["heldout"]["auroc"] for s in sweep], "s--", label="held-out AUROC")
    ax.set(xscale="log", xlabel="C (inverse L1 strength)", ylabel="score", ylim=(0, 1.02))
    ax2 = ax.twinx()
    ax2.plot(cs, [s["positive"] for s in sweep], "^:", color="#c0392b", label="positive weights")
    ax2.set(ylabel="H-neurons")
    ax.axvline(report["C"], color="grey", lw=0.8)
    fig.legend(loc="lower right", fontsize=8)
    ax.set_title(f"C sweep ({report['mode']})")
    fig.tight_layout()
    fig.savefig(folder / "c_sweep.png", dpi=120)
    plt.close(fig)
