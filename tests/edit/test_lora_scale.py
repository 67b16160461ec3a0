"""One PEFT LoRA covers every alpha: hedit's LoRA is linear in (alpha - 1), so scaling PEFT's adapter
(``LoraLayer.set_scale``, the same as ``lora_alpha`` times S) applies alpha' = 1 + S (alpha - 1)."""

import json

import pytest
import torch
from peft import PeftModel

from hedit.edit.adapters import export_adapter
from hedit.edit.adapters.gguf_lora import scale_to_alpha
from hedit.engine.intervention import scale_neurons
from hedit.model.load import load_model
from hedit.model.tiny import save_tiny_model

from conftest import neuron_set


@pytest.mark.parametrize("written", [0.0, 0.5])
def test_one_adapter_every_alpha(tmp_path, written):
    src = save_tiny_model(tmp_path / "m", "llama")
    ns = neuron_set("llama", per_layer=4)
    nf = tmp_path / "n.json"
    ns.save(nf)
    ad = export_adapter(src, nf, tmp_path / "lora", "lora", alpha=written)
    cfg = json.loads((ad / "adapter_config.json").read_text())
    assert cfg["lora_alpha"] == cfg["r"]  # PEFT's scale is 1 as written
    base = load_model(src)
    peft = PeftModel.from_pretrained(load_model(src), str(ad)).eval()
    ids = torch.tensor([[1, 5, 9, 2, 7, 3]])
    with torch.no_grad():
        plain = base(ids).logits
        for s in (1.0, 0.5, -1.0, -2.0, 0.0):
            for module in peft.modules():
                if hasattr(module, "set_scale") and "default" in getattr(module, "scaling", {}):
                    module.set_scale("default", s)
            got = peft(ids).logits
            a = scale_to_alpha(s, written)
            with scale_neurons(base, {la: [(j, a) for j in idx] for la, idx in ns.by_layer().items()}):
                want = base(ids).logits
            assert torch.allclose(got, want, atol=1e-5), (s, a)
            if a != 1.0:
                assert (want - plain).abs().max() > 1e-3  # the scale really moved the model
