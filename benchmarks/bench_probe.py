"""Benchmark the L1 probe at Llama-3.1-8B width, in one run.

A synthetic float32 feature matrix of 4,000 rows x 458,752 features (32 layers x 14,336 neurons, 7.3 GB)
is held in memory, with a planted signal in 12 neurons. hedit's probe (liblinear on a working set of
features, every feature's KKT condition checked on the full matrix) is timed for one C, with peak RSS.
A plain liblinear fit on the whole matrix would first copy it into float64 feature nodes (16 bytes per
value, ~29 GB): the script prints that size instead of running it on a 24 GB machine.

    python benchmarks/bench_probe.py [--rows 4000] [--layers 32] [--inter 14336] [--c 0.1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hedit.find.l1 import fit_l1
from hedit.find.probe import metrics


def peak_rss_gb() -> float:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--inter", type=int, default=14336)
    ap.add_argument("--c", type=float, default=0.1)
    args = ap.parse_args()
    d = args.layers * args.inter
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    x = np.empty((args.rows, d), dtype=np.float32)
    for i in range(0, args.rows, 250):  # CETT-like magnitudes, generated in blocks
        x[i : i + 250] = rng.random((min(250, args.rows - i), d), dtype=np.float32) * 0.05
    y = (np.arange(args.rows) % 4 == 0).astype(np.int64)  # 1 positive : 3 negatives, like 3-vs-1
    planted = rng.choice(d, 12, replace=False)
    x[np.ix_(y == 1, planted)] += 0.02
    print(
        f"matrix: {args.rows} x {d} float32 = {x.nbytes / 2**30:.1f} GiB, built in {time.perf_counter() - t:.0f} s;"
        f" peak RSS so far {peak_rss_gb():.1f} GiB"
    )
    print(f"plain liblinear would first copy it to float64 feature nodes: {x.size * 16 / 2**30:.0f} GiB")
    train = np.arange(args.rows) % 5 != 0
    xtr, ytr = x[train], y[train]  # a copy of 80% of the rows, as the probe's Dataset makes
    t = time.perf_counter()
    fit = fit_l1(xtr, ytr, args.c)
    sec = time.perf_counter() - t
    found = set(np.flatnonzero(fit.coef > 0))
    m = metrics(y[~train], fit.predict_proba(x[~train]))
    print(
        f"fit (C={args.c}): {sec:.1f} s, {fit.rounds} working-set rounds, {len(found)} positive weights, "
        f"{len(found & set(planted.tolist()))}/12 planted neurons found; held-out accuracy {m['accuracy']:.3f}, "
        f"AUROC {m['auroc']:.3f}"
    )
    print(
        f"peak RSS {peak_rss_gb():.1f} GiB (matrix {x.nbytes / 2**30:.1f} GiB + train copy "
        f"{xtr.nbytes / 2**30:.1f} GiB)"
    )


if __name__ == "__main__":
    main()
