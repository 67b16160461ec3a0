"""lm-evaluation-harness as the capability check: its API on the model in memory (hooks on), a local
multiple-choice task over a JSON file (offline), and `sweep --lm-eval` / `tune --max-drop`."""

import json
import random

import pytest

from hedit.choose.tune import choose_alpha
from hedit.config import Bounds, SweepConfig, TuneConfig
from hedit.engine.intervention import scale_neurons
from hedit.errors import HeditError
from hedit.measure.summary import table
from hedit.measure.sweep import run_sweep
from hedit.model.load import load_model, load_tokenizer
from hedit.model.tiny import save_tiny_model
from hedit.score.harness import check_tasks, choice_outcomes, run_tasks

from conftest import add_tokenizer, neuron_set, run_cli

pytest.importorskip("lm_eval")

WORDS = "capital France Water planet system temperature Romeo Juliet solar largest".split()
CONTEXTS = ["The capital of France is", "Water boils at a", "The largest planet in the", "Who wrote Romeo and"]


def items(n=40, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        choices = rng.sample(WORDS, 4)
        out.append({"id": i, "question": rng.choice(CONTEXTS), "choices": choices, "answer": rng.randrange(4)})
    return out


def local_task(folder, rows, name="hedit_mc"):
    """An lm-eval task over a local JSON-lines file: what runs offline."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: answer\nmetric_list:\n  - metric: acc\n"
        "    aggregation: mean\n    higher_is_better: true\n"
    )
    return folder


def own(model, tok, rows):
    """hedit's own scoring of the same items: lm-eval puts a space between the text and each choice."""
    return choice_outcomes(model, tok, [(r["question"], [" " + c for c in r["choices"]], r["answer"]) for r in rows])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = add_tokenizer(save_tiny_model(tmp_path_factory.mktemp("h") / "m", "llama"))
    return path, load_model(path), load_tokenizer(path)


def test_lm_eval_scores_what_hedit_scores_and_sees_the_intervention(tiny, tmp_path):
    path, model, tok = tiny
    rows = items()
    folder = local_task(tmp_path / "tasks", rows)
    plain = run_tasks(model, tok, ["hedit_mc"], include=folder)["hedit_mc"]
    mine = own(model, tok, rows)
    assert plain["metric"] == "acc" and plain["ids"] == list(range(40))
    assert plain["outcomes"] == mine and plain["value"] == pytest.approx(sum(mine) / 40)
    # an intervention that changes answers changes lm-eval's score, and both scorings agree under it
    ns = neuron_set("llama", per_layer=40)
    with scale_neurons(model, {la: [(j, 3.0) for j in idx] for la, idx in ns.by_layer().items()}):
        edited = run_tasks(model, tok, ["hedit_mc"], include=folder)["hedit_mc"]
        mine_edited = own(model, tok, rows)
    assert edited["outcomes"] == mine_edited
    assert edited["outcomes"] != plain["outcomes"]
    # the hooks are gone after the block: the unedited score again
    assert run_tasks(model, tok, ["hedit_mc"], include=folder)["hedit_mc"]["outcomes"] == plain["outcomes"]


def test_the_embedded_model_on_a_local_task(tmp_path):
    from hedit.model.builtin import DEFAULT_MODEL, resolve_model

    path = resolve_model(DEFAULT_MODEL)
    model, tok = load_model(path), load_tokenizer(path)
    rows = [
        {"question": "The capital of France is", "choices": ["Paris", "London", "Berlin"], "answer": 0},
        {"question": "Two plus two equals", "choices": ["five", "four", "seven"], "answer": 1},
        {"question": "The opposite of hot is", "choices": ["cold", "warm", "red"], "answer": 0},
        {"question": "Romeo and Juliet was written by William", "choices": ["Blake", "Shakespeare", "Wordsworth"]}
        | {"answer": 1},
        {"question": "The largest planet in the solar system is", "choices": ["Mars", "Venus", "Jupiter"], "answer": 2},
        {"question": "Water freezes at zero degrees", "choices": ["Celsius", "Kelvin", "Rankine"], "answer": 0},
    ]
    folder = local_task(tmp_path / "tasks", rows, "hedit_facts")
    r = run_tasks(model, tok, ["hedit_facts"], include=folder)["hedit_facts"]
    assert r["outcomes"] == own(model, tok, rows)
    assert r["value"] >= 4 / 6  # a real model knows most of these


def test_unknown_tasks_and_bad_bounds_are_one_line(tmp_path):
    with pytest.raises(HeditError, match="lm-eval knows no task 'no_such_task'"):
        check_tasks(["no_such_task"], None)
    with pytest.raises(HeditError, match="not a folder"):
        check_tasks(["x"], tmp_path / "missing")
    for bad in ("mmlu", "mmlu=-1", "=2", "mmlu=x"):
        with pytest.raises(HeditError, match="TASK=POINTS"):
            TuneConfig(max_drop=(bad,))
    assert Bounds(max_drop=("a=2", "b=0.5")).drops() == {"a": 2.0, "b": 0.5}


def test_sweep_and_tune_with_lm_eval(tiny, tmp_path, monkeypatch):
    path, model, tok = tiny
    rows = items(30, seed=1)
    folder = local_task(tmp_path / "tasks", rows)
    ns = neuron_set("llama", per_layer=40)
    cfg = SweepConfig(
        alphas=(0.0, 1.0, 3.0), controls=1, limit=4, max_new_tokens=4, batch_size=8, suites=("false-premise",),
        lm_eval=("hedit_mc",), lm_eval_include=str(folder),
    )  # fmt: skip
    s = run_sweep(str(path), ns, tmp_path / "sw", cfg, loaded=(model, tok), progress=False)
    res = s["results"]["lm-eval:hedit_mc"]
    base = own(model, tok, rows)
    at = {r["alpha"]: r for r in res}
    assert at[1.0]["h"]["value"] == pytest.approx(sum(base) / 30) and at[1.0]["h"]["n"] == 30
    with scale_neurons(model, {la: [(j, 3.0) for j in idx] for la, idx in ns.by_layer().items()}):
        edited = own(model, tok, rows)
    assert at[3.0]["h"]["value"] == pytest.approx(sum(edited) / 30)
    assert "controls" in at[3.0] and at[3.0]["h"]["metric"] == "acc"
    per = {r["alpha"]: r for r in s["lm_eval"]["hedit_mc"]["per_alpha"]}
    assert per[3.0]["drop_points"] == pytest.approx(100 * (sum(base) - sum(edited)) / 30)
    assert "lm-eval:hedit_mc (H)" in table(s)
    assert (tmp_path / "sw" / "sweep.png").stat().st_size > 10_000
    # tune bounds the drop: a bound below alpha 3's drop rejects it, and names the task
    drop = per[3.0]["drop_points"]
    assert drop != 0
    strict = Bounds(max_accuracy_drop=100, max_kl=100, max_drop=(f"hedit_mc={abs(drop) / 2 if drop > 0 else 0}",))
    d = choose_alpha(s, strict)
    row = next(c for c in d["candidates"] if c["alpha"] == 3.0)
    if drop > 0:
        assert any(w.startswith("hedit_mc drop") for w in row["rejected_because"])
    assert row["lm_eval_drop_points"] == {"hedit_mc": drop} and d["bounds"]["max_drop_points"]
    with pytest.raises(HeditError, match="did not run"):
        choose_alpha(s, Bounds(max_drop=("mmlu=1",)))
    # a rerun with the same settings runs nothing again
    import hedit.score.harness

    monkeypatch.setattr(hedit.score.harness, "run_tasks", lambda *a, **k: pytest.fail("a finished cell ran again"))
    again = run_sweep(str(path), ns, tmp_path / "sw", cfg, loaded=(model, tok), progress=False)
    assert again["results"]["lm-eval:hedit_mc"] == res


def test_cli_flags(tiny, tmp_path):
    path, _, _ = tiny
    neuron_set("llama", per_layer=2).save(tmp_path / "n.json")
    r = run_cli("sweep", path, "--neurons", tmp_path / "n.json", "--out", tmp_path / "o", "--lm-eval", "nope_task")
    assert r.exit_code != 0 and "lm-eval knows no task 'nope_task'" in r.output
    assert not (tmp_path / "o").exists()
    assert "--lm-eval" in run_cli("sweep", "--help").output and "--max-drop" in run_cli("tune", "--help").output


def test_local_task_folders_are_checked_before_any_model_runs(tiny, tmp_path, capfd, monkeypatch):
    """A local task lm-eval cannot build (an unknown key, data_files naming no file) is one line from
    check_tasks; a task that runs the folder's Python (!function) is said once, naming its file; and a run
    outside a git repository prints no "fatal: not a git repository" (lm-eval's own git lookup)."""
    from hedit.score.harness import check_tasks

    rows = items(3)
    ok = local_task(tmp_path / "ok", rows)
    said = []
    check_tasks(["hedit_mc"], ok, said.append)
    assert said == []
    bad = local_task(tmp_path / "bad", rows)
    (bad / "hedit_mc.yaml").write_text((bad / "hedit_mc.yaml").read_text() + "no_such_key: 1\n")
    with pytest.raises(HeditError, match=r"lm-eval task 'hedit_mc' \(.*hedit_mc.yaml\) cannot be loaded: TaskConfig"):
        check_tasks(["hedit_mc"], bad)
    gone = local_task(tmp_path / "gone", rows)
    (gone / "hedit_mc.jsonl").unlink()
    with pytest.raises(HeditError, match="cannot be loaded: Unable to find"):
        check_tasks(["hedit_mc"], gone)
    code = local_task(tmp_path / "code", rows)
    (code / "utils.py").write_text("def docs(ds):\n    return ds\n")
    (code / "hedit_mc.yaml").write_text((code / "hedit_mc.yaml").read_text() + "process_docs: !function utils.docs\n")
    check_tasks(["hedit_mc"], code, said.append)
    check_tasks(["hedit_mc"], code, said.append)
    assert len(said) == 1 and "uses !function" in said[0] and str(code / "hedit_mc.yaml") in said[0]
    path, model, tok = tiny
    monkeypatch.chdir(tmp_path)  # not a git repository
    capfd.readouterr()
    run_tasks(model, tok, ["hedit_mc"], limit=2, include=ok)
    out = capfd.readouterr()
    assert "fatal" not in out.out + out.err
