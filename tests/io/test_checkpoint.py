import json
import shutil

import pytest

from hedit.errors import HeditError
from hedit.io.checkpoint import open_checkpoint

from conftest import INTER, LAYERS


def test_single_file(checkpoint):
    ck = open_checkpoint(checkpoint("llama"))
    assert ck.weight_files == ["model.safetensors"]
    assert (ck.num_layers, ck.intermediate_size, ck.down_proj[0][1].shape[0]) == (LAYERS, INTER, 64)
    assert sorted(ck.modules) == [(layer, w) for layer in range(LAYERS) for w in ("down", "gate", "up")]
    assert sorted(ck.down_proj) == list(range(LAYERS))
    assert {p.name for p in ck.aux_files()} == {"config.json", "generation_config.json"}


def test_sharded(checkpoint):
    import json

    path = checkpoint("llama", shards=True)
    ck = open_checkpoint(path)
    index = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    assert sorted(ck.weight_files) == sorted(set(index.values())) and len(ck.weight_files) == len(set(index.values()))
    assert all(index[i.name] == f for f, i in ck.down_proj.values())  # each tensor read from its own shard
    assert len({f for f, _ in ck.down_proj.values()}) > 1  # down_projs spread over several shards


def test_aux_files_skip_stale_weights_and_subfolders(checkpoint, tmp_path):
    src = tmp_path / "m"
    shutil.copytree(checkpoint("llama"), src)
    for name in ("tokenizer.json", "chat_template.jinja", "pytorch_model.bin", "model.gguf", "README.md"):
        (src / name).write_text("x")
    (src / "original").mkdir()
    ck = open_checkpoint(src)
    assert {p.name for p in ck.aux_files()} == {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "chat_template.jinja",
    }
    assert ck.skipped_entries() == ["model.gguf", "original", "pytorch_model.bin"]


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "source not found"),
        ("file", "must be a checkpoint folder"),
        ("no_config", "has no config.json"),
        ("bin_only", "only PyTorch pickle weights"),
        ("empty", "has no safetensors weights"),
        ("bad_index", "not a valid safetensors index"),
        ("missing_shard", "shard .* is missing"),
        ("moe", "mixture-of-experts"),
        ("wrong_shape", "expected \\[hidden, 50\\]"),
        ("missing_layer", "layers \\[3\\] not found"),
    ],
)
def test_bad_sources(checkpoint, tmp_path, case, message):
    src = tmp_path / "m"
    good = checkpoint("llama")
    config = json.loads((good / "config.json").read_text())
    if case == "file":
        src.write_text("x")
    elif case != "missing":
        src.mkdir()
        (src / "config.json").write_text(json.dumps(config))
    if case == "no_config":
        (src / "config.json").unlink()
    elif case == "bin_only":
        (src / "pytorch_model.bin").write_bytes(b"x")
    elif case == "bad_index":
        (src / "model.safetensors.index.json").write_text("{}")
    elif case == "missing_shard":
        (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "m-1.safetensors"}}))
    elif case in ("moe", "wrong_shape", "missing_layer"):
        shutil.copy(good / "model.safetensors", src)
        config |= {
            "moe": {"model_type": "phimoe"},
            "wrong_shape": {"intermediate_size": 50},
            "missing_layer": {"num_hidden_layers": 4},
        }[case]
        (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(HeditError, match=message):
        open_checkpoint(src)
