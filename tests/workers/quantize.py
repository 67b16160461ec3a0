"""Runs in the quantization environment (llmcompressor; `make quant-env`), never imports hedit:
quantizes a tiny random llama with llmcompressor (W4A16 pack-quantized, FP8 per channel with dynamic
activations), then decompresses each with compressed-tensors through transformers and saves the dense
weights, so the tests can hold hedit's dequantizers and edits against the library's own.

Usage: python quantize.py OUT          (llama: W4A16 and FP8_DYNAMIC, each with its dense weights)
       python quantize.py OUT moe      (a tiny qwen3_moe, FP8_DYNAMIC and W4A16: llmcompressor quantizes
                                        each expert as its own Linear)
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.utils.quantization_config import CompressedTensorsConfig


def main(out: Path) -> None:
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier

    cfg = AutoConfig.for_model(
        "llama",
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        vocab_size=256,
        max_position_embeddings=128,
        initializer_range=0.1,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out / "src")
    for scheme in ("W4A16", "FP8_DYNAMIC"):
        oneshot(
            model=str(out / "src"),
            recipe=QuantizationModifier(targets="Linear", scheme=scheme, ignore=["lm_head"]),
            output_dir=str(out / scheme),
        )
        dense = AutoModelForCausalLM.from_pretrained(
            str(out / scheme), dtype=torch.float32, quantization_config=CompressedTensorsConfig(run_compressed=False)
        )
        save_file(
            {k: v.contiguous() for k, v in dense.state_dict().items() if k.endswith("proj.weight")},
            out / f"{scheme}-dense.safetensors",
        )


def moe(out: Path) -> None:
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier

    cfg = AutoConfig.for_model(
        "qwen3_moe",
        hidden_size=128,
        intermediate_size=128,
        moe_intermediate_size=128,  # W4A16 groups 128 inputs: down_proj takes 128
        num_experts=8,
        num_experts_per_tok=2,
        mlp_only_layers=[0],
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        vocab_size=256,
        max_position_embeddings=128,
        initializer_range=0.1,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out / "src")
    for scheme in ("FP8_DYNAMIC", "W4A16"):
        recipe = QuantizationModifier(targets="Linear", scheme=scheme, ignore=["lm_head", "re:.*mlp.gate$"])
        oneshot(model=str(out / "src"), recipe=recipe, output_dir=str(out / scheme))


if __name__ == "__main__":
    (moe if sys.argv[2:] == ["moe"] else main)(Path(sys.argv[1]))
