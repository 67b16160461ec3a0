"""`make demo`: edit, export and verify on a small random Llama built on the fly.

Until `hedit identify` lands, the neurons are a fixed random set: this shows the editing half of the
pipeline end to end (edit, LoRA, IA3, verification in transformers), not a real H-neuron set.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .adapters import export_adapter
from .edit import edit_checkpoint
from .neurons import ModelInfo, Neuron, NeuronSet
from .tiny import random_neurons, save_tiny_model
from .verify import verify


def main(out: str = "demo-out") -> int:
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    src = root / "model"
    if not src.exists():
        save_tiny_model(src, "llama", hidden_size=128, num_attention_heads=2, num_key_value_heads=1,
                        head_dim=64, num_hidden_layers=4, intermediate_size=256)
    ns = NeuronSet(ModelInfo("llama", 4, 256, "tiny-llama"),
                   [Neuron(layer, i) for layer, i in random_neurons(4, 256, 6, seed=0)],
                   provenance={"note": "random demo neurons, not identified H-neurons"})
    ns.save(root / "neurons.json")
    print(f"model:   {src}  (random llama, 4 layers x 256 neurons)")
    print(f"neurons: {root / 'neurons.json'}  ({len(ns.neurons)} neurons)")
    artifacts = {
        "edited": edit_checkpoint(src, ns, root / "edited", alpha=0.0, overwrite=True, progress=False),
        "lora": export_adapter(src, ns, root / "lora", "lora", alpha=0.0, overwrite=True),
        "ia3": export_adapter(src, ns, root / "ia3", "ia3", alpha=0.0, overwrite=True),
    }
    ok = True
    for name, path in artifacts.items():
        kw = {"edited": path} if name == "edited" else {"adapter": path}
        r = verify(src, ns, 0.0, **kw)
        ok &= r.passed
        print(f"{name:7s}  {path}  {'PASS' if r.passed else 'FAIL'}: max abs logit diff "
              f"{r.max_abs_logit_diff:.1e} vs the runtime intervention (edit moves logits by {r.effect:.2f}), "
              f"greedy agreement {r.token_agreement:.0%}")
    print(f"\nSame with the CLI:\n  hedit edit {src} --neurons {root / 'neurons.json'} --alpha 0 --out {root / 'edited'}"
          f"\n  hedit verify {src} --neurons {root / 'neurons.json'} --alpha 0 --edited {root / 'edited'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
