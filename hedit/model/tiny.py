"""Tiny random models of every registered architecture, built on the fly (tests, demo, benchmarks)."""

from __future__ import annotations

from pathlib import Path

import torch

TEXT = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    vocab_size=256,
    max_position_embeddings=128,
    initializer_range=0.1,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
VISION = dict(
    hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
)


def tiny_config(model_type: str, tie_word_embeddings: bool | None = None, **overrides):
    """A small config of ``model_type``; gemma3 gets a tiny vision tower too."""
    from transformers import AutoConfig

    text = TEXT | overrides
    if tie_word_embeddings is not None:
        text["tie_word_embeddings"] = tie_word_embeddings
    if model_type == "gemma3":
        return AutoConfig.for_model(
            "gemma3",
            text_config=text,
            vision_config=VISION,
            mm_tokens_per_image=4,
            image_token_index=255,
            boi_token_index=253,
            eoi_token_index=254,
        )
    return AutoConfig.for_model(model_type, **text)


def tiny_model(model_type: str, seed: int = 0, **kw) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(model_type, **kw)).eval()


def save_tiny_model(
    path: str | Path,
    model_type: str = "llama",
    dtype: torch.dtype = torch.float32,
    max_shard_size: str | None = None,
    seed: int = 0,
    **kw,
) -> Path:
    """Save a random tiny model as a safetensors checkpoint (sharded when ``max_shard_size`` is set)."""
    model = tiny_model(model_type, seed, **kw).to(dtype)
    extra = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(str(path), **extra)
    return Path(path)


def random_neurons(
    num_layers: int, intermediate_size: int, per_layer: int, seed: int = 0, layers: list[int] | None = None
) -> list[tuple[int, int]]:
    """(layer, index) pairs: ``per_layer`` distinct random neurons in each chosen layer."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for layer in layers if layers is not None else range(num_layers):
        idx = torch.randperm(intermediate_size, generator=g)[:per_layer].sort().values
        out += [(layer, int(i)) for i in idx]
    return out
