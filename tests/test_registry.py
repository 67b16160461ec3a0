import pytest

from hedit.engine.intervention import down_proj_module, model_shape
from hedit.errors import HeditError
from hedit.model.tiny import tiny_model
from hedit.registry import architectures, get_architecture

from conftest import ARCHS, INTER, LAYERS

REQUIRED = {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "gemma3", "phi3"}


def test_required_architectures_are_registered():
    assert REQUIRED <= set(architectures())


@pytest.mark.parametrize("model_type", ARCHS)
def test_registry_paths_match_real_models(model_type):
    """The data in the registry points at the real down_proj modules and tensor names."""
    model = tiny_model(model_type)
    arch = get_architecture(model_type)
    assert model_shape(model) == (model_type, LAYERS, INTER)
    for layer in range(LAYERS):
        mod = down_proj_module(model, layer)
        assert tuple(mod.weight.shape) == (model.config.get_text_config().hidden_size, INTER)
    names = [n for n in model.state_dict() if arch.layer_of_tensor(n) is not None]
    # state_dict names (new layout) match, one per layer, and never a vision-tower tensor
    assert sorted(arch.layer_of_tensor(n) for n in names) == list(range(LAYERS))
    assert not any("vision" in n for n in names)


def test_gemma3_matches_both_checkpoint_layouts_and_never_the_vision_tower():
    arch = get_architecture("gemma3")
    assert arch.layer_of_tensor("language_model.model.layers.7.mlp.down_proj.weight") == 7
    assert arch.layer_of_tensor("model.language_model.layers.7.mlp.down_proj.weight") == 7
    assert arch.layer_of_tensor("vision_tower.vision_model.encoder.layers.0.mlp.fc2.weight") is None
    assert arch.layer_of_tensor("model.vision_tower.encoder.layers.0.mlp.down_proj.weight") is None
    assert arch.shape({"text_config": {"num_hidden_layers": 34, "intermediate_size": 10240}}) == (34, 10240)


def test_unknown_and_moe_architectures_are_named_in_the_error():
    with pytest.raises(HeditError, match="'gpt2' is not supported; supported: apertus, cohere2, ") as e:
        get_architecture("gpt2")
    assert str(e.value).endswith(", ".join(sorted(architectures())))  # every family, in order
    with pytest.raises(HeditError, match="'phimoe' is not supported: it is a mixture-of-experts"):
        get_architecture("phimoe")
    with pytest.raises(HeditError, match="no model_type"):
        get_architecture(None)


def test_config_without_layer_count_is_an_error():
    with pytest.raises(HeditError, match="num_hidden_layers"):
        get_architecture("llama").shape({"intermediate_size": 8})
    with pytest.raises(HeditError, match="per-layer intermediate sizes"):  # MLPs of two widths
        get_architecture("llama").shape({"num_hidden_layers": 2, "intermediate_size": [8, 16]})
    with pytest.raises(HeditError, match="per-layer intermediate sizes"):  # a list that is not one per layer
        get_architecture("llama").shape({"num_hidden_layers": 3, "intermediate_size": [8, 8]})
    with pytest.raises(HeditError, match="per-layer intermediate sizes"):  # a family whose config has no list
        get_architecture("llama").shape({"num_hidden_layers": 2, "intermediate_size": [8, 8]})
    # one width per layer, all the same (Gemma 3n's configs): that width
    gemma3n = get_architecture("gemma3n_text")
    assert gemma3n.shape({"num_hidden_layers": 2, "intermediate_size": [8, 8]}) == (2, 8)
    with pytest.raises(HeditError, match="per-layer intermediate sizes"):
        gemma3n.shape({"num_hidden_layers": 2, "intermediate_size": [8, 16]})


def test_the_readme_s_architectures_table_is_the_registry_s():
    """The README's table is `hedit architectures --markdown`, row for row: a new JSON file needs its row."""
    from pathlib import Path

    from conftest import run_cli

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = run_cli("architectures", "--markdown").output.strip()
    assert table.count("\n") > 30 and table in readme


def test_lfm2_s_mlp_width_follows_its_sizing_rule():
    """LFM2-1.2B's config says intermediate_size 12288 with block_auto_adjust_ff_dim: its w1/w2/w3 are 8192
    wide (2/3 of it, times 1.0, rounded up to 256), as Lfm2MLP builds them."""
    lfm2 = get_architecture("lfm2")
    config = dict(num_hidden_layers=16, intermediate_size=12288, block_auto_adjust_ff_dim=True)
    assert lfm2.shape(config | dict(block_ffn_dim_multiplier=1.0, block_multiple_of=256)) == (16, 8192)
    assert lfm2.shape(config | dict(block_ffn_dim_multiplier=1.5, block_multiple_of=256)) == (16, 12288)
    assert lfm2.shape(config | dict(block_auto_adjust_ff_dim=False)) == (16, 12288)
