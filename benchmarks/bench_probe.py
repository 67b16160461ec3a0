"""Benchmark the L1 probe at real widths, in one run: a dense model at Llama-3.1-8B width against a
mixture of experts at Qwen3-30B-A3B width, each in its own process (its own peak RSS), same rows and C.

  dense  - 4,000 rows x 458,752 features (32 layers x 14,336 neurons) float32, 7.3 GB, in memory, with a
           planted signal in 12 neurons (as `hedit probe` holds a dense model's features)
  sparse - 4,000 rows x 4,718,592 features (48 layers x 128 experts x 768 neurons) as CSR (float32 values,
           int32 columns): in each MoE layer a row holds only the experts its region's tokens were routed
           to (top-8 per token; --tokens tokens per region, so 8 x tokens of 128 experts at most), planted
           signal in 12 neurons of experts routed on every row

Stability selection (``--stability B``, dense mode): B refits on half the training rows at 2C, each warm-started
from the full fit's nonzeros, timed against the one fit (and one refit without the warm start).

Each process builds its matrix, takes the training rows (80%) as the probe's Dataset does, and fits one C
(liblinear on a working set of features, every feature's KKT condition checked on the full matrix). The
driver prints both, the time ratio (target: sparse within 3x of dense) and the sparse peak RSS (target:
under 16 GB). A plain liblinear fit would first copy its input to float64 feature nodes (16 bytes per
value): the sizes are printed instead of run.

    python benchmarks/bench_probe.py [--rows 4000] [--c 0.1] [--tokens 1] [--stability 20]
    python benchmarks/bench_probe.py --only dense|sparse ...   (one mode, as the driver runs it)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from hedit.find.l1 import fit_l1
from hedit.find.probe import metrics

DENSE = (32, 14336)  # Llama-3.1-8B: layers x intermediate
MOE = (48, 128, 768, 8)  # Qwen3-30B-A3B: layers x experts x expert intermediate, top-k


def peak_rss_gb() -> float:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 2**20


def labels(rows: int) -> np.ndarray:
    return (np.arange(rows) % 4 == 0).astype(np.int64)  # 1 positive : 3 negatives, like 3-vs-1


def dense(rows: int, rng) -> tuple:
    d = DENSE[0] * DENSE[1]
    y = labels(rows)
    planted = rng.choice(d, 12, replace=False)
    train = np.arange(rows) % 5 != 0
    parts = []
    for keep in (train, ~train):  # the Dataset's two copies, built directly
        idx = np.flatnonzero(keep)
        x = np.empty((len(idx), d), dtype=np.float32)
        for i in range(0, len(idx), 250):  # CETT-like magnitudes, generated in blocks
            x[i : i + 250] = rng.random((min(250, len(idx) - i), d), dtype=np.float32) * 0.05
        x[np.ix_(y[idx] == 1, planted)] += 0.02
        parts.append((x, y[idx]))
    return parts, planted, d, d * rows * 4


def sparse(rows: int, rng, tokens: int) -> tuple:
    from scipy.sparse import csr_matrix

    layers, experts, inter, k = MOE
    d = layers * experts * inter
    routed = min(experts, k * tokens)
    y = labels(rows)
    planted_sites = [(int(la), int(e)) for la, e in zip(rng.choice(layers, 12), rng.choice(experts, 12))]
    planted = np.array(sorted({(la * experts + e) * inter + int(rng.integers(inter)) for la, e in planted_sites}))
    always = {}
    for la, e in planted_sites:
        always.setdefault(la, set()).add(e)
    train = np.arange(rows) % 5 != 0
    parts = []
    for keep in (train, ~train):
        idx = np.flatnonzero(keep)
        n_per_row = layers * routed * inter
        indptr = np.arange(len(idx) + 1, dtype=np.int64) * n_per_row
        indices = np.empty(len(idx) * n_per_row, dtype=np.int32)
        data = np.empty(len(idx) * n_per_row, dtype=np.float32)
        block = np.arange(inter, dtype=np.int32)
        for r in range(len(idx)):
            cols = []
            for la in range(layers):
                must = sorted(always.get(la, ()))
                rest = np.setdiff1d(rng.choice(experts, routed, replace=False), must)[: routed - len(must)]
                chosen = np.sort(np.concatenate([must, rest]).astype(np.int32))
                cols.append(((la * experts + chosen)[:, None] * inter + block).ravel())
            lo = r * n_per_row
            indices[lo : lo + n_per_row] = np.concatenate(cols)
            data[lo : lo + n_per_row] = rng.random(n_per_row, dtype=np.float32) * 0.05
        x = csr_matrix((data, indices, indptr), shape=(len(idx), d))
        pos = np.flatnonzero(y[idx] == 1)
        sub = x[pos][:, planted]  # planted columns: +0.02 on positive rows (their experts are always routed)
        x[pos[:, None], planted[None, :]] = sub.toarray() + 0.02
        parts.append((x, y[idx]))
    nnz = sum(p[0].nnz for p in parts)
    return parts, planted, d, nnz * 8


def refits(x, y, c: float, fit, b: int) -> dict:
    """B half-sample refits at 2C warm-started from ``fit``'s nonzeros, and one without the warm start."""
    rng = np.random.default_rng(1)
    start = np.flatnonzero(fit.coef != 0)
    halves = [np.sort(rng.choice(len(y), len(y) // 2, replace=False)) for _ in range(b)]
    t = time.perf_counter()
    cold = fit_l1(x[halves[0]], y[halves[0]], 2 * c)
    cold_s = time.perf_counter() - t
    t, rounds = time.perf_counter(), []
    for keep in halves:
        r = fit_l1(x[keep], y[keep], 2 * c, start=start)
        rounds.append(r.rounds)
    warm_s = time.perf_counter() - t
    return {"refits": b, "refits_s": warm_s, "cold_refit_s": cold_s, "cold_rounds": cold.rounds} | {
        "warm_rounds_mean": float(np.mean(rounds))
    }


def one(mode: str, rows: int, c: float, tokens: int, stability: int = 0) -> dict:
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    parts, planted, d, nbytes = dense(rows, rng) if mode == "dense" else sparse(rows, rng, tokens)
    built = time.perf_counter() - t
    (xtr, ytr), (xte, yte) = parts
    t = time.perf_counter()
    fit = fit_l1(xtr, ytr, c)
    sec = time.perf_counter() - t
    found = set(np.flatnonzero(fit.coef > 0).tolist())
    m = metrics(yte, fit.predict_proba(xte))
    stab = refits(xtr, ytr, c, fit, stability) if stability and mode == "dense" else {}
    nnz = nbytes // (4 if mode == "dense" else 8)
    return {
        "mode": mode,
        "rows": rows,
        "features": d,
        "stored_gb": nbytes / 2**30,
        "density": nnz / (rows * d),
        "liblinear_float64_gb": nnz * 16 / 2**30,
        "build_s": built,
        "fit_s": sec,
        "rounds": fit.rounds,
        "positive": len(found),
        "planted_found": len(found & set(planted.tolist())),
        "planted": len(planted),
        "accuracy": m["accuracy"],
        "auroc": m["auroc"],
        "peak_rss_gb": peak_rss_gb(),
    } | stab


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--c", type=float, default=0.1)
    ap.add_argument("--tokens", type=int, default=1, help="tokens per region in the sparse mode (routing density)")
    ap.add_argument("--stability", type=int, default=20, help="half-sample refits to time (dense mode; 0: none)")
    ap.add_argument("--only", choices=("dense", "sparse"))
    args = ap.parse_args()
    if args.only:
        print(json.dumps(one(args.only, args.rows, args.c, args.tokens, args.stability)))
        return
    res = {}
    for mode in ("dense", "sparse"):
        cmd = [sys.executable, __file__, "--only", mode, "--rows", str(args.rows), "--c", str(args.c)]
        cmd += ["--tokens", str(args.tokens), "--stability", str(args.stability)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        res[mode] = r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{mode:6s} {r['rows']} x {r['features']:,} ({r['density']:.2%} stored, {r['stored_gb']:.1f} GiB; plain "
            f"liblinear would copy {r['liblinear_float64_gb']:.0f} GiB): fit {r['fit_s']:.1f} s (C={args.c}, "
            f"{r['rounds']} rounds), {r['planted_found']}/{r['planted']} planted found, {r['positive']} positive, "
            f"held-out AUROC {r['auroc']:.3f}; peak RSS {r['peak_rss_gb']:.1f} GiB (built in {r['build_s']:.0f} s)"
        )
    d = res["dense"]
    if d.get("refits"):
        print(
            f"stability, dense: {d['refits']} half-sample refits at 2C in {d['refits_s']:.1f} s = "
            f"{d['refits_s'] / d['fit_s']:.2f}x the one fit "
            f"({d['refits_s'] / d['refits'] / d['fit_s']:.2f}x per refit, "
            f"{d['warm_rounds_mean']:.1f} rounds warm-started); one refit without the warm start "
            f"{d['cold_refit_s'] / d['fit_s']:.2f}x the fit ({d['cold_rounds']} rounds)"
        )
    layers, experts, inter, k = MOE
    ratio = res["sparse"]["fit_s"] / res["dense"]["fit_s"]
    print(
        f"sparse / dense fit time: {ratio:.2f}x (target <= 3x); sparse peak RSS "
        f"{res['sparse']['peak_rss_gb']:.1f} GiB (target < 16)"
    )
    for t in (1, 2, 4):
        share = 1 - (1 - k / experts) ** t  # experts routed at least once over t tokens (uniform routing)
        gb = args.rows * layers * experts * inter * share * 8 / 2**30
        print(f"  at {t} token(s) per region, uniform routing would store ~{share:.0%} of the values: {gb:.0f} GiB")


if __name__ == "__main__":
    main()
