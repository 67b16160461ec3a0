"""MLX checkpoints (mlx-lm's `convert -q`): `hedit edit` through the affine scales and biases, or the mxfp4
E8M0 exponents; `verify --runtime structure`; and, with the MLX environment (`make mlx-env`), the edited
checkpoint loaded by mlx-lm against the intervention on the dequantized weights (`verify --runtime mlx`)."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from hedit.check.verify import verify_artifact
from hedit.config import VerifyConfig
from hedit.edit.checkpoint import edit_checkpoint
from hedit.errors import HeditError
from hedit.io.checkpoint import open_checkpoint
from hedit.io.quant import dequant_mlx
from hedit.model.builtin import DEFAULT_MODEL, resolve_model
from hedit.neurons import ModelInfo, Neuron, NeuronSet

MLX_PYTHON = os.environ.get("HEDIT_MLX_PYTHON") or (
    ".venv-mlx/bin/python" if Path(".venv-mlx/bin/python").is_file() else None
)
needs_mlx = pytest.mark.skipif(MLX_PYTHON is None, reason="no MLX environment (make mlx-env)")


def convert(src: Path, dst: Path, *args: str) -> Path:
    """`mlx_lm convert -q` in the MLX environment; the top-level rope_theta that mlx-lm 0.32 reads is
    added (transformers 5 keeps it under rope_parameters, and mlx-lm would use its default 10000)."""
    r = subprocess.run(
        [MLX_PYTHON, "-m", "mlx_lm", "convert", "--hf-path", str(src), "--mlx-path", str(dst), "-q", *args],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    config = json.loads((dst / "config.json").read_text())
    config["rope_theta"] = (config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta"))
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def neurons(model_type="llama", layers=30, inter=1536, per_layer=4, seed=0):
    rng = np.random.default_rng(seed)
    ns = [Neuron(la, int(j)) for la in range(0, layers, 3) for j in rng.choice(inter, per_layer, replace=False)]
    return NeuronSet(ModelInfo(model_type, layers, inter, DEFAULT_MODEL), ns)


@pytest.fixture(scope="module")
def mlx_models(tmp_path_factory):
    if MLX_PYTHON is None:
        pytest.skip("no MLX environment (make mlx-env)")
    root = tmp_path_factory.mktemp("mlx")
    src = resolve_model(DEFAULT_MODEL)
    models = {bits: convert(src, root / f"q{bits}", "--q-bits", str(bits)) for bits in (4, 8)}
    return models | {"mxfp4": convert(src, root / "mxfp4", "--q-mode", "mxfp4")}


@needs_mlx
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_affine_edit_equals_the_intervention_in_mlx(mlx_models, tmp_path, bits, alpha):
    src = mlx_models[bits]
    ns = neurons()
    nf = tmp_path / "n.json"
    ns.save(nf)
    out = edit_checkpoint(src, nf, tmp_path / "e", alpha=alpha, progress=False)
    info = json.loads((out / "hedit.json").read_text())
    assert info["target"] == "up" and {t["format"] for t in info["tensors"]} == {"mlx", "mlx-biases"}
    # only the chosen rows of the chosen up_proj scales and biases change, by alpha, on dequantizing
    a, b = load_file(str(src / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for name in a:
        if not any(name == f"model.layers.{n.layer}.mlp.up_proj.{k}" for n in ns.neurons for k in ("scales", "biases")):
            assert np.array_equal(a[name], b[name]), name
    for layer, pairs in ns.by_layer().items():
        k = f"model.layers.{layer}.mlp.up_proj."
        old = dequant_mlx(a[k + "weight"], a[k + "scales"], a[k + "biases"], bits, 64)
        new = dequant_mlx(b[k + "weight"], b[k + "scales"], b[k + "biases"], bits, 64)
        want = old.copy()
        want[pairs] *= alpha
        assert np.allclose(new, want, rtol=0, atol=1e-6)
        assert not np.array_equal(old[pairs], new[pairs])
    cfg = VerifyConfig(runtime="structure")
    assert verify_artifact(src, nf, alpha, edited=out, cfg=cfg).passed
    if (bits, alpha) != (4, 0.5):  # mlx-lm itself on one of the four (a minute per run; README: all four)
        return
    r = verify_artifact(src, nf, alpha, edited=out, cfg=VerifyConfig(runtime="mlx"))
    assert r.passed, r.summary()
    assert r.max_abs_logit_diff < r.tolerance < r.effect  # a wrong alpha: caught by the structure check
    assert not verify_artifact(src, nf, 1.0 - alpha + 0.25, edited=out, cfg=cfg).passed


@needs_mlx
def test_mxfp4_exponents_and_zeroed_rows(mlx_models, tmp_path):
    """mxfp4: alpha 0.5 takes one from the rows' E8M0 exponents and alpha 0 zeroes their FP4 codes; MLX's
    own dequantize of the edited tensors equals alpha times the source's; other alphas are refused."""
    src = mlx_models["mxfp4"]
    ns = neurons(per_layer=3)
    nf = tmp_path / "n.json"
    ns.save(nf)
    a = load_file(str(src / "model.safetensors"))
    for alpha in (0.5, 0.0):
        out = edit_checkpoint(src, nf, tmp_path / f"e{alpha}", alpha=alpha, progress=False)
        b = load_file(str(out / "model.safetensors"))
        script = (
            "import sys, numpy as np, mlx.core as mx\n"
            "from safetensors.numpy import load_file\n"
            "t = load_file(sys.argv[1]); out = {}\n"
            "for k in sys.argv[3:]:\n"
            "    w, s = mx.array(t[k + 'weight']), mx.array(t[k + 'scales'])\n"
            "    out[k] = np.array(mx.dequantize(w, s, group_size=32, bits=4, mode='mxfp4').astype(mx.float32))\n"
            "np.savez(sys.argv[2], **out)\n"
        )
        names = [f"model.layers.{la}.mlp.up_proj." for la in ns.by_layer()]
        deq = {}
        for which, path in (("old", src), ("new", out)):
            subprocess.run(
                [MLX_PYTHON, "-c", script, str(path / "model.safetensors"), str(tmp_path / f"{which}.npz"), *names],
                check=True,
            )
            with np.load(tmp_path / f"{which}.npz", allow_pickle=False) as z:  # numbers only, no pickle
                deq[which] = {k: z[k] for k in z.files}
        for layer, pairs in ns.by_layer().items():
            k = f"model.layers.{layer}.mlp.up_proj."
            want = deq["old"][k].copy()
            want[pairs] *= alpha
            assert np.array_equal(deq["new"][k], want)
            if alpha == 0.5:
                assert np.array_equal(b[k + "scales"][pairs].astype(int), a[k + "scales"][pairs].astype(int) - 1)
    with pytest.raises(HeditError, match="only alpha 0 or a power of two"):
        edit_checkpoint(src, nf, tmp_path / "bad", alpha=0.3, progress=False)
    assert not (tmp_path / "bad").exists()


def test_modes_hedit_cannot_scale_exactly_and_down_are_refused(tmp_path):
    """Without MLX: a config in mlx-lm's layout names the mode; nvfp4 is refused with its reason, and an
    affine checkpoint refuses --target down."""
    from hedit.model.tiny import save_tiny_model

    src = save_tiny_model(tmp_path / "m", "llama")
    config = json.loads((src / "config.json").read_text())
    for mode, msg in (("nvfp4", "FP8 \\(E4M3\\) values under one global scale"),):
        q = {"group_size": 16, "bits": 4, "mode": mode}
        (src / "config.json").write_text(json.dumps(config | {"quantization": q, "quantization_config": q}))
        with pytest.raises(HeditError, match=msg):
            open_checkpoint(src)
    q = {"group_size": 64, "bits": 4, "mode": "affine"}
    (src / "config.json").write_text(json.dumps(config | {"quantization": q, "quantization_config": q}))
    assert open_checkpoint(src).quant_method == "mlx"
    ns = NeuronSet.load(_tiny_neurons(tmp_path))
    with pytest.raises(HeditError, match="down_proj column cannot be scaled exactly"):
        edit_checkpoint(src, ns, tmp_path / "d", alpha=0.0, target="down", progress=False)


def _tiny_neurons(tmp_path):
    from conftest import neuron_set

    neuron_set("llama", per_layer=2).save(tmp_path / "tn.json")
    return tmp_path / "tn.json"


@needs_mlx
@pytest.mark.parametrize("bits", [4])
def test_mlx_lora_adapter_equals_the_intervention_in_mlx(mlx_models, tmp_path, bits):
    """An mlx-lora adapter written at alpha 0 over the 4-bit MLX checkpoint, loaded by mlx-lm with
    ``adapter_path``: its logits equal the intervention on the dequantized weights (within MLX's floor),
    far below the edit's own effect."""
    from hedit.edit.adapters import export_adapter

    src = mlx_models[bits]
    ns = neurons()
    nf = tmp_path / "n.json"
    ns.save(nf)
    out = export_adapter(src, nf, tmp_path / "ad", "mlx-lora", alpha=0.0, target="down")
    assert verify_artifact(src, nf, 0.0, adapter=out, cfg=VerifyConfig(runtime="structure")).passed
    r = verify_artifact(src, nf, 0.0, adapter=out, cfg=VerifyConfig(runtime="mlx"))
    print(r.summary())
    assert r.passed, r.summary()
    assert r.max_abs_logit_diff < r.tolerance < r.effect


def test_a_module_left_in_float_is_edited_as_float_beside_quantized_ones(tmp_path):
    """mlx-lm quantizes a module only where its scales are stored (or its config entry says so): a module a
    quantization predicate skipped stays a float weight. Its rows are scaled exactly; the others' scales."""
    from hedit.model.tiny import save_tiny_model

    from builders import mlx_affine
    from conftest import INTER, LAYERS

    up0 = "model.layers.0.mlp.up_proj"
    src = mlx_affine(save_tiny_model(tmp_path / "f", "llama"), tmp_path / "q", float_modules=(up0,))
    ns = NeuronSet(ModelInfo("llama", LAYERS, INTER, "tiny"), [Neuron(0, 1), Neuron(0, 5), Neuron(1, 3)])
    nf = tmp_path / "n.json"
    ns.save(nf)
    out = edit_checkpoint(src, nf, tmp_path / "e", alpha=0.25, progress=False)
    formats = {t["name"]: t["format"] for t in json.loads((out / "hedit.json").read_text())["tensors"]}
    assert formats[f"{up0}.weight"] == "float" and formats["model.layers.1.mlp.up_proj.scales"] == "mlx"
    a, b = load_file(str(src / "model.safetensors")), load_file(str(out / "model.safetensors"))
    want = a[f"{up0}.weight"].astype(np.float32)
    want[[1, 5]] *= 0.25
    assert np.array_equal(b[f"{up0}.weight"].astype(np.float32), want)
    k = "model.layers.1.mlp.up_proj."
    old = dequant_mlx(a[k + "weight"], a[k + "scales"], a[k + "biases"], 4, 32)
    new = dequant_mlx(b[k + "weight"], b[k + "scales"], b[k + "biases"], 4, 32)
    old[3] *= 0.25
    assert np.allclose(new, old, rtol=0, atol=1e-6)
    assert verify_artifact(src, nf, 0.25, edited=out, cfg=VerifyConfig(runtime="structure")).passed
    assert not verify_artifact(src, nf, 0.5, edited=out, cfg=VerifyConfig(runtime="structure")).passed
