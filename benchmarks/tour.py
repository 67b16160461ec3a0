"""Time the README's tour, command by command, as written, and hold each against the time
its comment states.

    make demo                                  # the tour starts from demo-out/
    .venv/bin/python benchmarks/tour.py        # prints step, stated, measured, ratio

The commands are read from the README itself (the fenced block under its "tour" heading), so what is
timed is what a newcomer types. Each step's outputs (`--out`, `--work` under demo-out/) are removed first,
so no step is timed as a cached rerun. Time it on a quiet machine: work beside it skews the figures 2-6x.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tour_steps(readme: str) -> list[tuple[str, str, float | None]]:
    """(title, command, stated minutes or None for "seconds") of each numbered step of the tour."""
    heading = re.search(r"^## A .*tour.*$", readme, re.M)
    block = readme[heading.end() :].split("```bash", 1)[1].split("```", 1)[0]
    steps, title, lines = [], None, []

    def flush():
        if title and lines:
            cmd = " ".join(ln.rstrip("\\").strip() for ln in lines)
            m = re.search(r"\((\d+(?:\.\d+)?) min", title)
            steps.append((title, cmd, float(m.group(1)) if m else None))

    for line in block.splitlines():
        if re.match(r"# \d+\.", line):
            flush()
            title, lines = line[2:], []
        elif line.startswith("hedit ") or (lines and lines[-1].rstrip().endswith("\\")):
            lines.append(line)
    flush()
    return steps


def outputs(cmd: str) -> list[Path]:
    words = shlex.split(cmd)
    return [Path(words[i + 1]) for i, w in enumerate(words[:-1]) if w in ("--out", "--work")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="", help="comma-separated step numbers (default: all)")
    args = ap.parse_args()
    os.chdir(ROOT)
    if not (ROOT / "demo-out" / "identify" / "neurons.json").is_file():
        sys.exit("run `make demo` first: the tour starts from demo-out/")
    steps = tour_steps((ROOT / "README.md").read_text())
    wanted = {int(s) for s in args.steps.split(",") if s}
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}")
    print(f"{'step':<70} {'stated':>8} {'measured':>9} {'ratio':>6}")
    for n, (title, cmd, stated) in enumerate(steps, 1):
        if wanted and n not in wanted:
            continue
        for out in outputs(cmd):
            if out.parts[:1] == ("demo-out",) and out.exists():
                shutil.rmtree(out) if out.is_dir() else out.unlink()
        t = time.perf_counter()
        r = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True)
        minutes = (time.perf_counter() - t) / 60
        status = "" if r.returncode == 0 else f"  (exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]})"
        shown = f"{stated:g} min" if stated is not None else "seconds"
        ratio = f"{minutes / stated:.2f}" if stated else ("ok" if minutes < 1 else "SLOW")
        print(f"{title[:70]:<70} {shown:>8} {minutes:>7.2f} m {ratio:>6}{status}", flush=True)


if __name__ == "__main__":
    main()
