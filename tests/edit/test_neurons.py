import json
import math

import pytest

from hedit.errors import HeditError
from hedit.neurons import ModelInfo, Neuron, NeuronSet, check_alpha


def sample(**kw):
    return NeuronSet(
        ModelInfo("llama", 4, 10, "org/model", "abc123"),
        [Neuron(0, 3, weight=0.5), Neuron(2, 9, alpha=0.25), Neuron(2, 1)],
        **kw,
    )


def test_round_trip(tmp_path):
    ns = sample(alpha=0.5, provenance={"probe": "l1"})
    ns.save(tmp_path / "n.json")
    back = NeuronSet.load(tmp_path / "n.json")
    assert back == ns
    data = json.loads((tmp_path / "n.json").read_text())
    assert data["format"] == "hedit.neurons" and data["version"] == 1
    assert data["neurons"][0] == {"layer": 0, "index": 3, "weight": 0.5}
    assert data["model"] == {
        "model_type": "llama",
        "num_layers": 4,
        "intermediate_size": 10,
        "name_or_path": "org/model",
        "revision": "abc123",
    }


def test_plan_precedence_neuron_then_cli_then_file():
    ns = sample(alpha=2.0)
    assert ns.plan() == {0: [(3, 2.0)], 2: [(1, 2.0), (9, 0.25)]}
    assert ns.plan(alpha=0.0) == {0: [(3, 0.0)], 2: [(1, 0.0), (9, 0.25)]}
    with pytest.raises(HeditError, match="no alpha"):
        sample().plan()
    assert sample().per_layer_counts() == {0: 1, 2: 2}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_alpha_is_refused(bad):
    with pytest.raises(HeditError, match="finite"):
        sample().plan(alpha=bad)


def test_negative_alpha_needs_the_flag():
    with pytest.raises(HeditError, match="allow-negative-alpha"):
        sample().plan(alpha=-1.0)
    assert sample().plan(alpha=-1.0, allow_negative=True)[0] == [(3, -1.0)]
    check_alpha(3.0)


def base():
    return sample().to_dict()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="x"), "'format' must be"),
        (lambda d: d.update(version=2), "unsupported version 2"),
        (lambda d: d.pop("model"), "'model' must be an object"),
        (lambda d: d["model"].pop("num_layers"), "'model.num_layers' is missing"),
        (lambda d: d["model"].update(intermediate_size=0), "positive integer"),
        (lambda d: d.update(neurons={}), "'neurons' must be a list"),
        (lambda d: d["neurons"].append({"layer": "1", "index": 2}), r"neurons\[3\] must be an object"),
        (lambda d: d["neurons"].append({"layer": 1, "index": 2, "alpha": "x"}), r"neurons\[3\].alpha"),
        (lambda d: d["neurons"].append({"layer": 4, "index": 2}), "layer 4 out of range: the model has 4"),
        (lambda d: d["neurons"].append({"layer": 1, "index": 10}), "index 10 in layer 1 out of range"),
        (lambda d: d["neurons"].append({"layer": 2, "index": 9}), "listed twice"),
        (lambda d: d.update(provenance=[]), "'provenance' must be an object"),
    ],
)
def test_malformed_files_give_one_clear_error(tmp_path, mutate, message):
    data = base()
    mutate(data)
    path = tmp_path / "n.json"
    path.write_text(json.dumps(data))
    with pytest.raises(HeditError, match=message):
        NeuronSet.load(path)


def test_missing_and_non_json_files(tmp_path):
    with pytest.raises(HeditError, match="not found"):
        NeuronSet.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(HeditError, match="not valid JSON"):
        NeuronSet.load(tmp_path / "bad.json")


def test_check_model_names_both_shapes():
    with pytest.raises(HeditError, match="llama with 4 layers x 10 neurons, but this model is llama with 30"):
        sample().check_model("llama", 30, 1536)
    sample().check_model("llama", 4, 10)
