"""Running `hedit edit` in a child process that stops mid-edit, for the fault tests (signals, kill -9,
races) on every copy path."""

import os
import subprocess
import sys
from pathlib import Path

# Runs `hedit ARGS...`; after the first shard is edited it prints MID and waits until the file named by
# $HEDIT_TEST_GATE exists (or forever), so the test can signal it there.
WRAPPER = r"""
import os, signal, sys, time
# SIGINT as in a terminal, also when the test runner itself was started with SIGINT ignored (a background
# job of a non-interactive shell), which Python would otherwise keep
signal.signal(signal.SIGINT, signal.default_int_handler)
import hedit.edit.checkpoint as e
real = e._apply
calls = []
def slow(*a, **k):
    real(*a, **k)
    calls.append(1)
    if len(calls) == 1:
        print("MID", flush=True)
        gate = os.environ.get("HEDIT_TEST_GATE", "")
        while not (gate and os.path.exists(gate)):
            time.sleep(0.05)
e._apply = slow
from hedit.cli import main
sys.argv = ["hedit"] + sys.argv[1:]
main()
"""


def start(args, gate: Path | None = None, cwd=None):
    env = os.environ | {"HEDIT_TEST_GATE": str(gate or ""), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )


def wait_mid(proc) -> None:
    line = proc.stdout.readline()
    assert line.strip() == "MID", (line, proc.stderr.read() if proc.poll() is not None else "")


def edit_args(big, out):
    src, nf = big
    return ["edit", src, "--neurons", nf, "--alpha", "0", "--out", out, "--quiet"]


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("hedit: error: ") and "Traceback" not in stderr, stderr
    return lines[0]
