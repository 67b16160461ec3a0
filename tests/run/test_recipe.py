from pathlib import Path

import pytest

from hedit.errors import HeditError
from hedit.io.hub import is_repo_id
from hedit.io.hub_data import parse
from hedit.model.builtin import BUILTINS
from hedit.run.recipe import Recipe, load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_the_five_recipes_load():
    names = sorted(p.stem for p in RECIPES.glob("*.yaml"))
    assert names == [
        "gemma-3-4b-it",
        "llama-3.1-8b-instruct",
        "mistral-7b-instruct-v0.3",
        "qwen3-8b",
        "smollm2-135m-instruct",
    ]
    for p in RECIPES.glob("*.yaml"):
        r = load_recipe(p)
        assert r.model in BUILTINS or is_repo_id(r.model)
        assert r.identify.top_p == 0.9 and r.identify.top_k == 50 and r.identify.mode == "3-vs-1"
        assert r.tune.max_accuracy_drop == 2.0 and r.tune.max_kl == 0.1
        if p.stem != "smollm2-135m-instruct":  # the paper's sampling; the demo model uses gentler settings
            assert (r.identify.samples, r.identify.temperature, r.identify.max_new_tokens) == (10, 1.0, 50)
            assert r.sweep.alphas == (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
            # the paper's data by Hub id: TriviaQA rc.nocontext train, the first 10,000 questions
            spec = parse(r.identify.questions)
            assert (spec.repo_id, spec.config, spec.split, r.identify.limit) == (
                "mandarjoshi/trivia_qa",
                "rc.nocontext",
                "train",
                10000,
            )


def test_defaults_are_the_papers():
    r = Recipe()
    assert (
        r.identify.samples,
        r.identify.temperature,
        r.identify.top_p,
        r.identify.top_k,
        r.identify.max_new_tokens,
    ) == (10, 1.0, 0.9, 50, 50)


def test_command_line_overrides_the_recipe(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model: team/x\nidentify:\n  samples: 4\n  c_grid: [0.1, 1]\ntune:\n  enabled: false\n")
    r = load_recipe(p, ["identify.samples=2", "tune.alphas=[0, 0.5]", "work=/tmp/w"])
    assert (r.model, r.identify.samples, r.identify.c_grid, r.tune.alphas, r.tune.enabled, r.work) == (
        "team/x",
        2,
        (0.1, 1.0),
        (0.0, 0.5),
        False,
        "/tmp/w",
    )
    assert r.identify.temperature == 1.0  # untouched keys keep the defaults


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ("modle: x\n", [], "unknown key 'modle'"),
        ("identify:\n  sampels: 3\n", [], "unknown key 'identify.sampels'"),
        ("", ["tune.max_kll=0.2"], "unknown key 'tune.max_kll'"),
        ("identify:\n  samples: many\n", [], "identify.samples must be an integer"),
        ("identify:\n  c_grid: 0.1\n", [], "identify.c_grid must be a list"),
        ("tune: 3\n", [], "tune must be a mapping"),
        ("identify: [\n", [], "not valid YAML"),
        ("", ["identify.samples"], "--set takes KEY=VALUE"),
        ("identify:\n  mode: 2-vs-2\n", [], "identify.mode must be"),
        ("tune:\n  suites: [harmful]\n", [], "tune.suites: unknown value 'harmful'"),
        ("verify:\n  runtime: llama.cpp\n", [], "verify.runtime must be"),
        ("identify:\n  questions: hf://datasets/trivia_qa\n", [], "is not a Hub dataset id of the form"),
        ("", ["identify.questions=hf://datasets/a/b@..%2Fx"], "is not a revision the Hub has"),
    ],
)
def test_bad_recipes_name_the_problem(tmp_path, text, overrides, message):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(HeditError, match=message):
        load_recipe(p, overrides)


def test_missing_recipe(tmp_path):
    with pytest.raises(HeditError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize("work", ["/abs/path", "../up", "a/../../b", "~/x"])
def test_a_recipe_work_folder_outside_the_current_folder_is_refused(tmp_path, work):
    p = tmp_path / "r.yaml"
    p.write_text(f"work: {work}\n")
    with pytest.raises(HeditError, match="points outside the current folder"):
        load_recipe(p)
    assert load_recipe(p, [f"work={tmp_path / 'w'}"]).work == str(tmp_path / "w")  # --work / --set: the user's


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("identify.batch_size", "0", "identify.batch_size must be at least 1"),
        ("identify.limit", "-3", "identify.limit must be at least 1"),
        ("identify.samples", "0", "identify.samples must be at least 1"),
        ("identify.temperature", "0", "identify.temperature must be greater than 0"),
        ("identify.top_p", "1.5", "identify.top_p must be at most 1"),
        ("identify.c_grid", "[]", "identify.c_grid is empty"),
        ("tune.temperature", "-1", "tune.temperature must be greater than 0"),
        ("tune.max_kl", "-0.1", "tune.max_kl must be at least 0"),
        ("sweep.controls", "-1", "sweep.controls must be at least 0"),
        ("sweep.alphas", "[0, .nan]", "sweep.alphas\\[1\\] must be a finite number"),
        ("verify.new_tokens", "0", "verify.new_tokens must be at least 1"),
    ],
)
def test_out_of_range_values_are_refused(key, value, message):
    with pytest.raises(HeditError, match=message):
        load_recipe(None, [f"{key}={value}"])
