"""`export-adapter --format mlx-lora`: an mlx-lm LoRA adapter over an MLX affine (or float) checkpoint. Its
factors are checked here against the dequantized weights and mlx-lm's loading rules (one rank, [in, r] and
[r, out]), and `verify --runtime structure` catches what would change the edit; mlx-lm itself loads it in
`tests/edit/test_mlx.py` where `.venv-mlx` exists."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from hedit.check.structure import verify_structure
from hedit.edit.adapters import export_adapter
from hedit.edit.adapters.mlx_lora import scale_to_alpha
from hedit.errors import HeditError
from hedit.io.quant import dequant_mlx
from hedit.model.tiny import save_tiny_model

from builders import mlx_affine
from conftest import add_tokenizer, neuron_set, run_cli


@pytest.fixture
def mlx_source(tmp_path):
    return mlx_affine(add_tokenizer(save_tiny_model(tmp_path / "f", "llama")), tmp_path / "q4")


@pytest.mark.parametrize("target", ["down", "up"])
def test_factors_apply_alpha_from_the_scale_on_the_dequantized_weights(tmp_path, mlx_source, target):
    ns = neuron_set("llama", per_layer=3)
    del ns.neurons[-2:]  # the last layer keeps one neuron: its pair is padded with zeros
    nf = tmp_path / "n.json"
    ns.save(nf)
    out = export_adapter(mlx_source, nf, tmp_path / "ad", "mlx-lora", alpha=0.0, target=target)
    config = json.loads((out / "adapter_config.json").read_text())
    lp = config["lora_parameters"]
    assert config["fine_tune_type"] == "lora" and config["num_layers"] == 3
    assert lp == {"rank": 3, "scale": 1.0, "dropout": 0.0, "keys": [f"mlp.{target}_proj"]}
    info = json.loads((out / "hedit.json").read_text())
    assert "S=-1 -> 2" in info["scale_to_alpha"] and info["lora_rank"] == 3
    w, t = load_file(str(mlx_source / "model.safetensors")), load_file(str(out / "adapters.safetensors"))
    assert len(t) == 6  # a pair on every block, as mlx-lm's loader expects
    for layer in range(3):
        k = f"model.layers.{layer}.mlp.{target}_proj."
        full = dequant_mlx(w[k + "weight"], w[k + "scales"], w[k + "biases"], 4, 32)  # [out, in]
        a, b = t[k + "lora_a"], t[k + "lora_b"]
        assert a.shape == (full.shape[1], 3) and b.shape == (3, full.shape[0]) and a.dtype == np.float32
        chosen = [n.index for n in ns.neurons if n.layer == layer]
        for s in (1.0, 0.5, -1.0):  # what mlx-lm adds at lora_parameters.scale S: S * x @ a @ b
            want = full.copy()
            if target == "down":
                want[:, chosen] *= scale_to_alpha(s, 0.0)
            else:
                want[chosen, :] *= scale_to_alpha(s, 0.0)
            assert np.allclose(full + s * (a @ b).T, want, rtol=0, atol=1e-6)
        delta = (a @ b).T  # [out, in]
        untouched = [j for j in range(full.shape[1 if target == "down" else 0]) if j not in chosen]
        assert not (delta[:, untouched] if target == "down" else delta[untouched, :]).any()
        if not chosen:
            assert not a.any() and not b.any()


def test_structure_catches_a_changed_factor_scale_or_alpha(tmp_path, mlx_source):
    nf = tmp_path / "n.json"
    neuron_set("llama", per_layer=2).save(nf)
    out = export_adapter(mlx_source, nf, tmp_path / "ad", "mlx-lora", alpha=0.5)
    res = verify_structure(mlx_source, nf, 0.5, adapter=out)
    assert res.passed and res.edited_tensors == 6, res.summary()
    assert not verify_structure(mlx_source, nf, 0.0, adapter=out).passed  # another alpha
    cfg_path = out / "adapter_config.json"
    config = json.loads(cfg_path.read_text())
    config["lora_parameters"]["scale"] = 2.0  # mlx-lm would apply alpha' = 1 + 2 (0.5 - 1) = 0
    cfg_path.write_text(json.dumps(config))
    bad = verify_structure(mlx_source, nf, 0.5, adapter=out)
    assert bad.mismatches == ["adapter_config.json: not the one the plan implies (lora_parameters differ)"]
    config["lora_parameters"]["scale"] = 1.0
    cfg_path.write_text(json.dumps(config))
    t = load_file(str(out / "adapters.safetensors"))
    t["model.layers.1.mlp.up_proj.lora_a"][0, 0] += 1e-3  # auto: up rows, as for the quantized source
    save_file(t, str(out / "adapters.safetensors"))
    bad = verify_structure(mlx_source, nf, 0.5, adapter=out)
    assert bad.mismatches == ["model.layers.1.mlp.up_proj.lora_a: not the factor the plan implies"]


def test_float_source_and_bad_input(tmp_path):
    src = add_tokenizer(save_tiny_model(tmp_path / "f", "llama"))
    nf = tmp_path / "n.json"
    neuron_set("llama", per_layer=2).save(nf)
    r = run_cli("export-adapter", src, "--neurons", nf, "--format", "mlx-lora", "--alpha", "0", "--out", tmp_path / "a")
    assert r.exit_code == 0 and "mlx-lm --adapter-path" in r.output, r.output
    w = load_file(str(src / "model.safetensors"))
    t = load_file(str(tmp_path / "a" / "adapters.safetensors"))
    for n in neuron_set("llama", per_layer=2).neurons:
        b = t[f"model.layers.{n.layer}.mlp.down_proj.lora_b"]
        assert any(np.array_equal(row, -w[f"model.layers.{n.layer}.mlp.down_proj.weight"][:, n.index]) for row in b)
    assert verify_structure(src, nf, 0.0, adapter=tmp_path / "a").passed
    r = run_cli("verify", src, "--neurons", nf, "--alpha", "0", "--adapter", tmp_path / "a")
    assert r.exit_code != 0 and "--runtime mlx" in r.output, r.output
    with pytest.raises(HeditError, match="would change nothing"):
        export_adapter(src, nf, tmp_path / "one", "mlx-lora", alpha=1.0)
    q = json.loads((src / "config.json").read_text())
    mx = {"group_size": 32, "bits": 4, "mode": "mxfp4"}
    (src / "config.json").write_text(json.dumps(q | {"quantization": mx, "quantization_config": mx}))
    with pytest.raises(HeditError, match="MLX affine or a float checkpoint.*MLX mxfp4: use `hedit edit`"):
        export_adapter(src, nf, tmp_path / "m", "mlx-lora", alpha=0.0)
    assert not (tmp_path / "one").exists() and not (tmp_path / "m").exists()
