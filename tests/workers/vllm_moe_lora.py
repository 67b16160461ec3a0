"""Runs in the vLLM environment (`make vllm-env`), never imports hedit: loads a LoRA adapter folder with
vLLM's own loader (``LoRAModel.from_local_checkpoint``, with the module names vLLM expects of a mixture of
experts) and packs each MoE layer's experts with the conversion vLLM's engine runs under
``--enable-mixed-moe-lora-format`` (``LoRAModelManager._convert_3d_to_2d_moe_lora``: the 3-D PEFT layout
into per-expert w1/w2/w3 factors), then saves what each factor pair adds to its weight, scaling included:
``NAME.w1`` / ``.w2`` / ``.w3`` [experts, out, in] for an experts module, ``NAME`` [out, in] for a Linear.

vLLM's CPU build cannot run a LoRA on a mixture (its fused-MoE LoRA layer runs Triton kernels), so this
is how far vLLM's own code can take an expert adapter on a machine without a GPU.

Usage: python vllm_moe_lora.py ADAPTER_DIR ARCHITECTURE NUM_EXPERTS OUT.safetensors
"""

import sys
import types

import torch
from safetensors.torch import save_file
from vllm.lora.lora_model import LoRAModel
from vllm.lora.model_manager import LoRAModelManager
from vllm.lora.peft_helper import PEFTHelper


def main(adapter: str, architecture: str, experts: int, out: str) -> None:
    helper = PEFTHelper.from_local_dir(adapter, None)
    # of the module names vLLM's worker expects of these models (every Linear's, and "experts" for each
    # MoERunner), the two an H-neuron edit touches: anything else in the adapter is refused
    expected = {"down_proj", "experts"}
    lora = LoRAModel.from_local_checkpoint(adapter, expected, helper, device="cpu", dtype=torch.float32)
    manager = types.SimpleNamespace(is_pooling_model=False)
    manager.model = types.SimpleNamespace(config=types.SimpleNamespace(architectures=[architecture]))
    manager._get_lora_layer_weights = types.MethodType(LoRAModelManager._get_lora_layer_weights, manager)
    module = types.SimpleNamespace(local_num_experts=experts, global_num_experts=experts, ep_rank=0)
    deltas = {}
    for name in [n for n in lora.loras if n.endswith(".experts")]:
        LoRAModelManager._convert_3d_to_2d_moe_lora(manager, lora, module, name)
        w = lora.loras[name]
        for k, (a, b) in enumerate(zip(w.lora_a, w.lora_b), start=1):  # [E, r, in], [E, out, r]
            deltas[f"{name}.w{k}"] = (b @ a) * w.scaling
    for name, w in lora.loras.items():
        if not name.endswith(".experts"):
            deltas[name] = (w.lora_b @ w.lora_a) * w.scaling
    save_file({k: v.contiguous() for k, v in deltas.items()}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
