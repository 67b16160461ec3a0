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

``--control length`` puts the answer span's and the response's (log) token counts into every fit as
unpenalized covariates (``hedit.find.l1``): L1 then keeps only neurons that add to length. Covariates,
not residualized features: they leave the (wide, in a mixture of experts sparse) feature matrix as it is,
and they are what "controlling for" means in a regression (residualizing is exact only for linear
models). Stability selection (``hedit.find.stability``) refits the chosen C on half-samples of the
questions and gives every neuron its selection frequency.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hedit.config import ProbeConfig
from hedit.errors import HeditError
from hedit.find.columns import Columns
from hedit.find.confounds import confound_plot, confounds
from hedit.find.features import check_features_model, features_columns, open_features
from hedit.find.l1 import UNPENALIZED, L1Fit, fit_l1
from hedit.find.labels import Dataset, dataset, has_lengths, labels, length_matrix, take_columns, take_rows
from hedit.find.plots import probe_plots, stability_plot
from hedit.find.stability import stability
from hedit.io.atomic import atomic_write_text, check_place
from hedit.neurons import ModelInfo, NeuronSet
from hedit.progress import bar
from hedit.score.stats import auroc_interval

REPORT_FORMAT = 5  # bumped when report.json gains or changes fields: cached probe stages rerun


def metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    pred = (score >= 0.5).astype(int)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "auroc": float(roc_auc_score(y, score)),
    }


def subset_scores(ds: Dataset, columns: np.ndarray, seed: int = 0) -> np.ndarray:
    """A plain (L2) logistic regression on the given neurons only (standardized, classes balanced),
    fitted on the training rows; its probabilities on the held-out rows. The same model for H-neurons
    and for random neurons."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    m = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed))
    m.fit(take_columns(ds.x_train, columns), ds.y_train)
    return m.predict_proba(take_columns(ds.x_test, columns))[:, 1]


def with_interval(y: np.ndarray, score: np.ndarray, seed: int) -> dict[str, Any]:
    return metrics(y, score) | {"auroc_ci95": auroc_interval(y, score, seed=seed)}


def baseline(ds: Dataset, cols: np.ndarray, columns: Columns, draws: int, seed: int) -> dict[str, Any]:
    """Plain probes on random neurons as many as ``cols`` (``Columns.random_like``: in a mixture of
    experts, from the H-neurons' own experts and layers)."""
    rng = np.random.default_rng(seed)
    runs = [metrics(ds.y_test, subset_scores(ds, columns.random_like(cols, rng), seed)) for _ in range(draws)]
    return {
        key: {"mean": float(np.mean([r[key] for r in runs])), "std": float(np.std([r[key] for r in runs]))}
        for key in runs[0]
    } | {"draws": draws}


def answer_rows(features: str | Path, meta: dict[str, Any], control: str = "none") -> tuple:
    """(answer rows, 1 = hallucinated, their length covariates or None) of a features folder that must
    come from the model of ``meta``."""
    tmeta, rows, mat = open_features(features)
    check_features_model(
        tmeta, (meta["model_type"], meta["num_layers"], meta["intermediate_size"]), f"test features {features}"
    )
    idx, y = labels(rows, "1-vs-1")
    if len(set(y.tolist())) < 2:
        raise HeditError(
            f"test features {features} need both correct and hallucinated answers "
            f"({int(y.sum())} hallucinated of {len(y)})"
        )
    if control == "length" and not has_lengths(rows):
        raise HeditError(f"test features {features} record no answer lengths (--control length); recompute them")
    return take_rows(mat, idx), y, length_matrix(rows, idx) if control == "length" else None


def transfer(
    ds: Dataset,
    fit: L1Fit,
    cols: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray | None,
    columns: Columns,
    draws: int,
    seed: int,
) -> dict[str, Any]:
    """Scores on another dataset's answer rows: the chosen probe as fitted, and plain probes on the
    H-neurons alone and on random neurons trained on ``ds``'s training rows."""
    ext = Dataset(ds.x_train, ds.y_train, x, y, "external")
    return {
        "answers": int(len(y)),
        "hallucinated": int(y.sum()),
        "probe": with_interval(y, fit.predict_proba(x, z), seed),
        "h_neurons_only": with_interval(y, subset_scores(ext, cols, seed), seed),
        "random_neurons_only": baseline(ext, cols, columns, draws, seed),
    }


def _fit_c(ds: Dataset, c: float, seed: int) -> dict[str, Any]:
    model = fit_l1(ds.x_train, ds.y_train, c, seed, covariates=ds.z_train)
    coef = model.coef
    return {
        "C": c,
        "positive": int((coef > 0).sum()),
        "nonzero": int((coef != 0).sum()),
        "heldout": metrics(ds.y_test, model.predict_proba(ds.x_test, ds.z_test)),
        "fit": model,
        "working_set_rounds": model.rounds,
    }


def _best(sweep: list[dict[str, Any]]) -> dict[str, Any]:
    """The best held-out accuracy among C values with positive weights; ties go to the sparser probe."""
    usable = [s for s in sweep if s["positive"] > 0]
    return max(usable, key=lambda s: (s["heldout"]["accuracy"], -s["nonzero"])) if usable else None


def sweep_c(ds: Dataset, cfg: ProbeConfig, progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Fit every C of the grid; while the best C sits on an edge of the grid (or no C gives a positive
    weight), grow the grid past that edge (by the grid's own ratio there) up to ``cfg.grow_c`` steps and
    within ``cfg.c_bounds``.
    Returns the fits sorted by C and what the growth did."""
    grid = sorted(cfg.c_grid)
    sweep = []
    with bar(len(grid), "probe", "C", progress) as pbar:
        for c in grid:
            sweep.append(_fit_c(ds, c, cfg.seed))
            pbar.update(1)
        grown: list[float] = []
        stop = None
        for _ in range(cfg.grow_c):
            best, cs = _best(sweep), [s["C"] for s in sweep]
            if best is not None and best["C"] not in (cs[0], cs[-1]):
                break
            upper = best is None or best["C"] == cs[-1]  # no positive weight anywhere: C is too small
            ratio = (cs[-1] / cs[-2] if upper else cs[1] / cs[0]) if len(cs) > 1 else 10**0.5
            c = cs[-1] * ratio if upper else cs[0] / ratio
            if not cfg.c_bounds[0] <= c <= cfg.c_bounds[1]:
                stop = f"the next C ({c:.3g}) lies outside the bounds {list(cfg.c_bounds)}"
                break
            pbar.total += 1
            sweep.append(_fit_c(ds, float(f"{c:.6g}"), cfg.seed))
            sweep.sort(key=lambda s: s["C"])
            grown.append(sweep[-1]["C"] if upper else sweep[0]["C"])
            pbar.update(1)
    best, cs = _best(sweep), [s["C"] for s in sweep]
    edge = best is not None and len(cs) > 1 and best["C"] in (cs[0], cs[-1])
    note = {"grown": grown, "best_on_edge": bool(edge)}
    if edge:
        note["warning"] = (
            f"the best C ({best['C']:g}) is still on the edge of the grid "
            f"({stop or f'after {cfg.grow_c} added steps'}); a better C may lie beyond it"
        )
    return sweep, note


def run_probe(
    features: str | Path,
    out: str | Path,
    cfg: ProbeConfig = ProbeConfig(),
    progress: bool = True,
    plots: bool = True,
    qa=None,
    test_features: tuple[str | Path, ...] = (),
) -> dict[str, Any]:
    """Fit, choose C, write ``out`` (neurons.json), ``report.json`` and plots beside it.

    ``qa`` (optional): a function of {layer: [(index, alpha)]} giving held-out QA accuracy with those
    neurons scaled (``hedit.score.capability.qa_checker``). Then each C's H-neurons are silenced
    (alpha 0), and a C whose neurons cost more than ``cfg.max_qa_drop`` points of QA accuracy is passed over.

    ``test_features``: feature folders of the same model on other questions (another dataset). The
    chosen probe, and probes on the H-neurons alone and on random neurons (fitted on this folder's
    training rows), are scored on their answer rows: does what was found here carry over?
    """
    meta, rows, mat = open_features(features)
    out_path = Path(out)
    check_place(out_path, [("features folder", features), *(("test features", t) for t in test_features)])
    if out_path.is_dir():
        raise HeditError(
            f"--out {out} is a folder; probe writes a neurons file (neurons.json) and its report beside it"
        )
    ds = dataset(rows, mat, cfg.mode, seed=cfg.seed)
    if cfg.control == "length":
        if not has_lengths(rows):
            raise HeditError(f"features {features} record no answer lengths (--control length); recompute them")
        ds.z_train, ds.z_test = length_matrix(rows, ds.train_rows), length_matrix(rows, ds.test_rows)
    tests = {}  # bad input fails before any fitting; named by folder, never by an absolute path
    for t in test_features:
        name = Path(t).name or str(t)
        tests[name if name not in tests else f"{name}-{len(tests)}"] = answer_rows(t, meta, cfg.control)
    layers, inter = meta["num_layers"], meta["intermediate_size"]
    columns = features_columns(meta)
    sweep, growth = sweep_c(ds, cfg, progress)
    usable = [s for s in sweep if s["positive"] > 0]
    if not usable:
        raise HeditError("no C in the grid gives any positive weight; try larger C values (--c)")
    qa_report = None
    if qa is not None:
        usable, qa_report = _qa_criterion(usable, qa, columns, cfg.max_qa_drop, progress)
    best = _best(usable)
    coef = best["fit"].coef
    cols = np.flatnonzero(coef > 0)
    stab = None
    if cfg.stability:
        stab = stability(ds, rows, best["fit"], best["C"], cfg.stability, cfg.stability_threshold, cfg.seed, progress)
        stable = np.flatnonzero(stab["frequency"] >= cfg.stability_threshold)
        if cfg.select == "stable":
            if not len(stable):
                raise HeditError(
                    f"no neuron is stable (frequency >= {cfg.stability_threshold:g} in {cfg.stability} refits); "
                    "lower --stability-threshold, or keep the single fit (--select fit)"
                )
            cols = stable
    elif cfg.select == "stable":
        raise HeditError("--select stable needs stability selection (--stability above 0)")
    freq = None if stab is None else stab["frequency"]

    def neuron(j: int):
        w = coef[j] if coef[j] > 0 else stab["mean_weight"][j]  # a stable neuron the single fit left out
        return columns.neuron(j, weight=float(w), frequency=None if freq is None else float(freq[j]))

    neurons = [neuron(int(j)) for j in cols]
    info = ModelInfo(meta["model_type"], layers, inter, meta.get("name") or None, num_experts=meta.get("num_experts"))
    ns = NeuronSet(info, neurons)
    seed, draws = cfg.seed, cfg.random_draws
    probe_scores, only_scores = best["fit"].predict_proba(ds.x_test, ds.z_test), subset_scores(ds, cols, seed)
    a_idx, a_y = labels(rows, "1-vs-1")
    a_x = np.concatenate(  # the H-neurons' columns of every answer row, read in chunks
        [take_columns(take_rows(mat, a_idx[i : i + 1024]), cols) for i in range(0, len(a_idx), 1024)]
    )
    conf = confounds(ds, rows, a_idx, a_x, a_y, cols, columns, probe_scores, only_scores, seed)
    routing = routing_report(features, meta, rows, cols, columns) if meta.get("routing") else None
    report = {
        "mode": cfg.mode,
        "control": cfg.control,
        "select": cfg.select,
        "C": best["C"],
        "split": ds.split,
        "c_grid": growth,
        "rows": {
            "train": int(len(ds.y_train)),
            "heldout_answers": int(len(ds.y_test)),
            "train_positive": int(ds.y_train.sum()),
            "heldout_positive": int(ds.y_test.sum()),
        },
        "h_neurons": len(neurons),
        "fraction_of_neurons": len(neurons) / columns.total,
        "heldout": with_interval(ds.y_test, probe_scores, seed),
        "qa_check": qa_report,
        "h_neurons_only": with_interval(ds.y_test, only_scores, seed),
        "random_neurons_only": baseline(ds, cols, columns, draws, seed),
        "c_sweep": [{k: v for k, v in s.items() if k != "fit"} for s in sweep],
        "per_layer": _per_layer(ns),
        "confounds": conf,
    }
    if best["fit"].covariates is not None:
        report["covariates"] = {"names": ["log1p_answer_tokens", "log1p_response_tokens"]} | {
            "coefficients_standardized": [float(v) for v in best["fit"].cov_coef * UNPENALIZED]
        }
    if stab is not None:
        report["stability"] = stability_report(ds, stab, best["fit"].coef, columns, draws, seed)
    if routing is not None:
        report["routing"] = routing
    if tests:
        report["transfer"] = {
            name: transfer(ds, best["fit"], cols, x, y, z, columns, draws, seed) for name, (x, y, z) in tests.items()
        }
    ns.provenance = {
        "probe": {
            k: report[k]
            for k in ("mode", "control", "select", "C", "split", "heldout", "qa_check", "h_neurons_only")
            + ("random_neurons_only",)
        }
        | ({"stability": {k: v for k, v in report["stability"].items() if k != "per_neuron"}} if stab else {})
        | ({"confounds": {k: v for k, v in conf.items() if k != "per_neuron"}} if conf else {})
        | ({"transfer": report["transfer"]} if tests else {}),
        "features": Path(features).name,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ns.save(out)
    atomic_write_text(out.parent / "report.json", json.dumps(report, indent=2) + "\n")
    if plots:
        probe_plots(report, layers, out.parent)
        if conf:
            confound_plot(conf, report["heldout"]["auroc"], out.parent, report["heldout"]["auroc_ci95"])
        if stab is not None:
            stability_plot(report["stability"], out.parent)
    return report


def stability_report(ds: Dataset, stab: dict, coef: np.ndarray, columns: Columns, draws: int, seed: int) -> dict:
    """The stability summary, the stable set's held-out AUROC (alone, against as many random neurons from
    the same experts and layers) and every neuron any refit chose, most frequent first."""
    freq = stab["frequency"]
    stable = np.flatnonzero(freq >= stab["summary"]["threshold"])
    out = dict(stab["summary"])
    if len(stable):
        out["stable_only"] = with_interval(ds.y_test, subset_scores(ds, stable, seed), seed)
        out["random_like_stable"] = baseline(ds, stable, columns, draws, seed)
    chosen = np.flatnonzero(freq > 0)
    order = chosen[np.argsort(-freq[chosen], kind="stable")]
    out["per_neuron"] = [
        columns.where(int(j)) | {"frequency": float(freq[j]), "in_single_fit": bool(coef[j] > 0)} for j in order
    ]
    return out


def routing_report(features, meta: dict[str, Any], rows: list[dict], cols: np.ndarray, columns: Columns) -> dict:
    """How often each routed H-neuron's expert was routed on the answers (the share of answer tokens the
    router sent to it, averaged over correct and over hallucinated answers): an H-neuron whose expert is
    routed far more often on hallucinations carries the router's signal as much as its own."""
    from hedit.find.cett_moe import ROUTING, open_csr

    moe_layers = meta["routing"]["moe_layers"]
    experts = meta["num_experts"]
    share = open_csr(Path(features), ROUTING, (meta["rows"], len(moe_layers) * experts))
    idx = {
        c: np.array([i for i, r in enumerate(rows) if r["region"] == "answer" and r["class"] == c], dtype=np.int64)
        for c in ("correct", "hallucinated")
    }
    per = []
    for c in cols:
        where = columns.where(int(c))
        if not isinstance(where.get("expert"), int):
            continue
        k = moe_layers.index(where["layer"]) * experts + where["expert"]
        means = {cls: float(share[ix][:, k].mean()) if len(ix) else None for cls, ix in idx.items()}
        per.append(where | {"routed_correct": means["correct"], "routed_hallucinated": means["hallucinated"]})
    return {"measure": "share of answer tokens routed to the neuron's expert", "per_neuron": per}


def _per_layer(ns: NeuronSet) -> dict[str, int]:
    """H-neurons per layer (a mixture's experts summed)."""
    out: dict[str, int] = {}
    for n in ns.neurons:
        out[str(n.layer)] = out.get(str(n.layer), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def _qa_criterion(
    usable: list[dict], qa, columns: Columns, max_drop: float, progress: bool
) -> tuple[list[dict], dict[str, Any]]:
    """The C values whose silenced H-neurons keep QA accuracy within ``max_drop`` points of the
    unedited model (all usable ones, with a warning, when none does)."""
    with bar(len(usable) + 1, "QA check", "run", progress) as pbar:
        base = qa({})
        pbar.update(1)
        for s in usable:
            s["qa_accuracy_silenced"] = qa(columns.plan(np.flatnonzero(s["fit"].coef > 0), 0.0))
            s["qa_drop_points"] = round(100 * (base - s["qa_accuracy_silenced"]), 3)
            pbar.update(1)
    kept = [s for s in usable if s["qa_drop_points"] <= max_drop]
    report = {"qa_accuracy": base, "max_drop_points": max_drop, "kept_C": [s["C"] for s in kept]}
    if not kept:
        report["warning"] = (
            f"every C's H-neurons cost more than {max_drop} points of QA accuracy when silenced; chose among all C"
        )
        kept = usable
    return kept, report


def probe_features(
    features: str | Path,
    out: str | Path,
    cfg: ProbeConfig = ProbeConfig(),
    for_model: str | None = None,
    qa_model: str | None = None,
    qa_questions: str | Path | None = None,
    qa_limit: int | None = None,
    test_features: tuple[str | Path, ...] = (),
    progress: bool = True,
    device: str = "cpu",
    placement: dict | None = None,
) -> dict[str, Any]:
    """``hedit probe``: refuse features of another model than ``for_model`` (when given), build the QA
    check on ``qa_model`` (when given), then ``run_probe``."""
    if for_model is not None:
        from hedit.io.checkpoint import read_config
        from hedit.model.builtin import resolve_model
        from hedit.registry import get_architecture

        config = read_config(resolve_model(for_model))
        arch = get_architecture(config.get("model_type"))
        check_features_model(
            open_features(features)[0], (arch.model_type, *arch.shape(config)), f"features in {features}"
        )
    qa = None
    if qa_model is not None:
        from hedit.io.questions import select_questions
        from hedit.model.builtin import resolve_model
        from hedit.model.load import load_model, load_tokenizer
        from hedit.score.capability import qa_checker

        qs = select_questions(qa_questions, None, qa_limit, default_split="heldout")
        path = resolve_model(qa_model)
        tok = load_tokenizer(path)
        if tok is None:
            raise HeditError(f"{path} has no tokenizer; the QA check needs one")
        lm = load_model(path, device=device, **(placement or {}))
        qa = qa_checker(lm, tok, [(q.question, q.aliases) for q in qs])
    return run_probe(features, out, cfg, progress, qa=qa, test_features=test_features)
