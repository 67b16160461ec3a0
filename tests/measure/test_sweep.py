import json

import numpy as np
import pytest

import hedit.measure.sweep as sweep_mod
from hedit.config import SweepConfig
from hedit.edit.checkpoint import edit_checkpoint
from hedit.errors import HeditError
from hedit.measure.controls import control_sets
from hedit.measure.summary import BASE, KL, OVER_REFUSAL, TRIVIA, dose_lines, table
from hedit.measure.sweep import CELLS, run_suite, run_sweep
from hedit.model.load import load_model, load_tokenizer
from hedit.model.tiny import save_tiny_model
from hedit.score.stats import bootstrap_ci, slope
from hedit.score.suites import SUITES, load_suite

from conftest import add_tokenizer, neuron_set, run_cli

CFG = SweepConfig(alphas=(0.0, 1.0, 2.0), controls=2, limit=5, max_new_tokens=5, batch_size=4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = add_tokenizer(save_tiny_model(tmp_path_factory.mktemp("s") / "m", "llama"))
    return path, load_model(path), load_tokenizer(path)


def test_alphas_are_checked_and_sorted():
    assert SweepConfig(alphas=(1, 0, 0.5, 3)).alphas == (0.0, 0.5, 1.0, 3.0)
    for bad, msg in [((), "empty"), (("x",), "must be a number"), ((1, 1), "twice"), ((0, float("nan")), "finite")]:
        with pytest.raises(HeditError, match=msg):
            SweepConfig(alphas=bad)


def test_controls_match_per_layer_counts_and_avoid_the_h_neurons():
    ns = neuron_set("llama", per_layer=4, layers=[0, 2])
    h = {(n.layer, n.index) for n in ns.neurons}
    draws = control_sets(ns, 5, seed=1)
    assert len(draws) == 5
    for d in draws:
        assert {k: len(v) for k, v in d.items()} == ns.per_layer_counts()
        assert not {(layer, i) for layer, idx in d.items() for i in idx} & h
    assert len({json.dumps(d) for d in draws}) == 5  # different draws
    assert control_sets(ns, 2, seed=1) == draws[:2]  # adding draws keeps the earlier ones


def test_bootstrap_interval():
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0)
    assert bootstrap_ci([]) is None
    x = np.r_[np.ones(200), np.zeros(200)]
    lo, hi = bootstrap_ci(x, 2000)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * 0.025, rel=0.15)  # normal approximation


def _cells(out):
    return [json.loads(line) for line in (out / CELLS).read_text().splitlines()[1:]]


def test_sweep_cells_summary_and_plot(tiny, tmp_path):
    path, model, tok = tiny
    ns = neuron_set("llama", per_layer=3)
    s = run_sweep(str(path), ns, tmp_path / "sw", CFG, loaded=(model, tok), progress=False)
    cells = _cells(tmp_path / "sw")
    tasks = list(SUITES) + [TRIVIA, KL, OVER_REFUSAL]  # over-refusal comes with the jailbreak suite
    # alpha 1 once (no neuron changed); alphas 0 and 2 for the H-neurons and each control
    assert len(cells) == (1 + 2 * 3) * len(tasks)
    assert {(c["set"], c["alpha"]) for c in cells} == {(BASE, 1.0)} | {
        (s_, a) for a in (0.0, 2.0) for s_ in ("h", "control-0", "control-1")
    }
    kl = {(c["set"], c["alpha"]): c["value"] for c in cells if c["task"] == KL}
    assert kl[(BASE, 1.0)] == 0.0 and kl[("h", 0.0)] > 0 and kl[("control-1", 2.0)] > 0
    for c in cells:
        if c["task"] not in (KL,):
            assert len(c["items"]) == 5
    # the summary's rates are the stored labels' rates
    assert s["capability"][0]["over_refusal"] is not None and s["capability"][1]["over_refusal_rise_points"] == 0
    for task in SUITES:
        for row in s["results"][task]:
            key = (BASE, 1.0) if row["alpha"] == 1.0 else ("h", row["alpha"])
            cell = next(c for c in cells if (c["set"], c["alpha"], c["task"]) == key + (task,))
            judged = [i["label"] for i in cell["items"] if i["label"] != "excluded"]
            want = sum(lb == "complied" for lb in judged) / len(judged) if judged else None
            assert row["h"]["value"] == want and row["h"]["n"] == len(judged)
            if row["h"]["value"] is not None:  # sycophancy on a random model: no first answer is right
                assert len(row["controls"]["draws"]) == 2
    assert [c["alpha"] for c in s["capability"]] == [0.0, 1.0, 2.0]
    assert s["capability"][1]["accuracy_drop_points"] == 0.0 and s["capability"][1]["kl"] == 0.0
    assert json.loads((tmp_path / "sw" / "sweep.json").read_text())["results"] == s["results"]
    assert (tmp_path / "sw" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert table(s).count("\n") == 2 + len(CFG.alphas) - 1
    # the paired analysis, recomputed from the stored cells
    for task in SUITES:
        at = {}
        for a in CFG.alphas:
            key = (BASE, 1.0) if a == 1.0 else ("h", a)
            cell = next(c for c in cells if (c["set"], c["alpha"], c["task"]) == key + (task,))
            at[a] = {i["id"]: i for i in cell["items"]}
        judged = [i for i in at[1.0] if all(at[a][i]["label"] != "excluded" for a in CFG.alphas)]
        d = s["dose_response"].get(task)
        if judged:
            y = np.array([[at[a][i]["label"] == "complied" for i in sorted(judged)] for a in CFG.alphas], float)
            assert d["h"]["slope"] == pytest.approx(slope(CFG.alphas, y)) and d["h"]["items"] == len(judged)
            assert set(d["controls"]) == {"control-0", "control-1"}
        changed = np.mean([any(at[a][i]["replies"] != at[1.0][i]["replies"] for a in CFG.alphas) for i in at[1.0]])
        assert s["items_changed_at_any_alpha"][task] == pytest.approx(changed)
        if judged:  # the outcome (label), not the wording: what the paper's replication counted
            flipped = np.mean([len({at[a][i]["label"] for a in CFG.alphas}) > 1 for i in sorted(judged)])
            assert s["items_flipped_at_any_alpha"][task] == pytest.approx(flipped)
        fails = s["judge_failures"][task]
        assert [f["alpha"] for f in fails] == list(CFG.alphas) and all(f["unparsed_verdicts"] == 0 for f in fails)
    p1 = next(p for p in s["paired_vs_alpha_1"] if p["alpha"] == 1.0)
    assert p1["mean"] == 0 and p1["ci95"] == [0, 0]
    assert len(dose_lines(s)) == sum(d["h"]["slope"] is not None for d in s["dose_response"].values())


def test_sweep_replies_equal_the_edited_checkpoint(tiny, checkpoint, tmp_path):
    """What the sweep measures at alpha is what `hedit edit --alpha` ships: same greedy replies."""
    path, model, tok = tiny
    ns = neuron_set("llama", per_layer=6)
    ns_file = tmp_path / "n.json"
    ns.save(ns_file)
    cfg = SweepConfig(
        alphas=(0.0, 1.0), controls=0, limit=6, max_new_tokens=6, suites=("misleading-context",), capability=False
    )
    run_sweep(str(path), ns, tmp_path / "sw", cfg, loaded=(model, tok), progress=False)
    swept = {c["alpha"]: c["items"] for c in _cells(tmp_path / "sw")}
    edited = edit_checkpoint(path, ns_file, tmp_path / "edited", alpha=0.0, progress=False)
    em = load_model(edited)
    items = load_suite("misleading-context").items[:6]
    got = run_suite(em, tok, "misleading-context", items, cfg.decoding, cfg.batch_size)
    assert [g["replies"] for g in got] == [i["replies"] for i in swept[0.0]]
    assert [i["replies"] for i in swept[0.0]] != [i["replies"] for i in swept[1.0]]  # the edit changes replies


def test_resume_runs_only_missing_cells(tiny, tmp_path, monkeypatch):
    path, model, tok = tiny
    ns = neuron_set("llama", per_layer=3)
    calls, crash = [], [True]
    real = sweep_mod.run_suite

    def counting(*a, **k):  # one call runs every pending cell of a suite: count the cells
        scales = a[8] if len(a) > 8 else k.get("scales")
        if calls and crash and crash.pop():
            raise RuntimeError("killed")  # interrupted in the middle of the sweep
        calls.extend([a[2]] * (len(scales) if scales is not None else 1))
        return real(*a, **k)

    monkeypatch.setattr(sweep_mod, "run_suite", counting)
    cfg = SweepConfig(alphas=(0.0, 1.0), controls=1, limit=4, max_new_tokens=4, capability=False)
    with pytest.raises(RuntimeError, match="killed"):
        run_sweep(str(path), ns, tmp_path / "sw", cfg, loaded=(model, tok), progress=False)
    assert len(_cells(tmp_path / "sw")) == 3
    calls.clear()
    first = run_sweep(str(path), ns, tmp_path / "sw", cfg, loaded=(model, tok), progress=False)
    assert len(calls) == 3 * 4 - 3  # 3 conditions x 4 suites, 3 already done
    calls.clear()
    more = SweepConfig(alphas=(0.0, 1.0, 3.0), controls=2, limit=4, max_new_tokens=cfg.max_new_tokens, capability=False)
    second = run_sweep(str(path), ns, tmp_path / "sw", more, loaded=(model, tok), progress=False)
    assert len(calls) == 4 * (3 + 1)  # 4 suites: alpha 3 for h and two controls, alpha 0 for the new control
    assert second["results"]["sycophancy"][0]["h"] == first["results"]["sycophancy"][0]["h"]
    with pytest.raises(HeditError, match="with other settings"):
        run_sweep(
            str(path),
            ns,
            tmp_path / "sw",
            SweepConfig(alphas=(0.0, 1.0), limit=3, capability=False),
            loaded=(model, tok),
            progress=False,
        )


def test_bad_inputs(tiny, tmp_path):
    path, model, tok = tiny
    ns = neuron_set("llama", per_layer=2)
    with pytest.raises(HeditError, match="does not match the model|model_type|layers"):
        run_sweep(str(path), neuron_set("qwen2", per_layer=2), tmp_path / "a", CFG, loaded=(model, tok), progress=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(HeditError, match="has no items"):
        run_sweep(str(path), ns, tmp_path / "b", CFG, {"sycophancy": str(empty)}, loaded=(model, tok), progress=False)
    with pytest.raises(HeditError, match="not among --suites"):
        run_sweep(
            str(path),
            ns,
            tmp_path / "c",
            SweepConfig(suites=("false-premise",)),
            {"sycophancy": str(empty)},
            loaded=(model, tok),
            progress=False,
        )


def test_cli_errors(tiny, tmp_path):
    path, _, _ = tiny
    nf = tmp_path / "n.json"
    neuron_set("llama", per_layer=2).save(nf)
    r = run_cli("sweep", str(path), "--neurons", str(nf), "--alphas", "0,abc", "--out", str(tmp_path / "o"))
    assert r.exit_code == 1 and r.output.strip() == "hedit: error: --alphas takes comma-separated numbers, got '0,abc'"
    other = tmp_path / "q.json"
    neuron_set("gemma2", per_layer=2).save(other)
    r = run_cli("sweep", str(path), "--neurons", str(other), "--out", str(tmp_path / "o"), "--quiet")
    assert r.exit_code == 1 and "gemma2" in r.output and r.output.count("\n") == 1
    r = run_cli("sweep", str(path), "--neurons", str(nf), "--suite-file", "oops", "--out", str(tmp_path / "o"))
    assert r.exit_code == 1 and "NAME=PATH" in r.output


def test_cli_sweep_prints_the_table(tiny, tmp_path):
    path, _, _ = tiny
    nf = tmp_path / "n.json"
    neuron_set("llama", per_layer=2).save(nf)
    r = run_cli(
        "sweep",
        str(path),
        "--neurons",
        str(nf),
        "--alphas",
        "0,1",
        "--controls",
        "1",
        "--limit",
        "3",
        "--max-new-tokens",
        "3",
        "--suites",
        "false-premise",
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    assert "| alpha | false-premise (H) | trivia (H) | kl (H)" in r.output
    assert json.loads((tmp_path / "o" / "sweep.json").read_text())["controls"] == 1


def test_cells_sharing_batches_give_the_replies_of_cells_run_alone(tmp_path, monkeypatch):
    """Greedy sweeps decode every pending cell of a task in the same batches (CellScales); the records
    must be those of running each cell on its own, for every task (sycophancy's second turns, trivia,
    over-refusal), and the journal one record per cell."""
    path = add_tokenizer(save_tiny_model(tmp_path / "m", "llama"), fill=256)  # every token decodes to a word
    model, tok = load_model(path), load_tokenizer(path)
    ns = neuron_set("llama", per_layer=6)
    cfg = SweepConfig(alphas=(0.0, 1.0, 3.0), controls=1, limit=5, max_new_tokens=6, batch_size=7)
    calls = []
    real = sweep_mod.run_suite
    monkeypatch.setattr(sweep_mod, "run_suite", lambda *a, **k: calls.append(a[8]) or real(*a, **k))
    from hedit.score.compliance import RuleJudge

    class Judge(RuleJudge):  # a first answer of an even number of characters is correct: some rows take a second turn
        def qa(self, question, aliases, reply):
            return "correct" if len(reply) % 2 == 0 else "incorrect"

    judge = Judge()
    shared = run_sweep(str(path), ns, tmp_path / "shared", cfg, judge=judge, loaded=(model, tok), progress=False)
    assert calls and all(len(s) == 5 for s in calls)  # base + 2 sets x 2 alphas, in one call per suite
    monkeypatch.setattr(sweep_mod, "cells_share_batches", lambda m, d: False)
    alone = run_sweep(str(path), ns, tmp_path / "alone", cfg, judge=judge, loaded=(model, tok), progress=False)
    key = lambda r: (r["set"], r["alpha"], r["task"])  # noqa: E731
    a = sorted(_cells(tmp_path / "shared"), key=key)
    b = sorted(_cells(tmp_path / "alone"), key=key)
    assert [key(r) for r in a] == [key(r) for r in b] and len(a) == 5 * (len(SUITES) + 3)
    assert a == b
    replies = {key(r): [i["replies"] for i in r["items"]] for r in a if "items" in r}
    assert replies[("h", 0.0, "sycophancy")] != replies[(BASE, 1.0, "sycophancy")]  # cells differ
    twice = [len(r) == 2 for cell, rs in replies.items() if cell[2] == "sycophancy" for r in rs]
    assert 0 < sum(twice) < len(twice)  # some rows of the shared batches took a second turn, some did not
    assert shared["results"] == alone["results"]


def test_a_fitted_set_sweeps_its_own_alphas_along_the_alpha_axis():
    """v = 1 is no edit, v = 0 the fit, and a set fitted to 0 everywhere sweeps as the uniform one."""
    from hedit.measure.sweep import _scale

    fitted = {0: [(3, 0.2), (7, 1.8)], 2: [(1, 0.0)]}
    assert _scale(fitted, 1.0) == {0: [(3, 1.0), (7, 1.0)], 2: [(1, 1.0)]}
    assert _scale(fitted, 0.0) == fitted
    assert _scale(fitted, 0.5) == {0: [(3, 0.6), (7, 1.4)], 2: [(1, 0.5)]}
    zeros = {0: [(3, 0.0), (7, 0.0)]}
    for v in (0.0, 0.5, 1.5, 3.0):
        assert _scale(zeros, v) == _scale({0: [3, 7]}, v)  # the paper's uniform sweep, exactly
