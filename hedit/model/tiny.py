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
# Mixtures of experts: 8 experts, top-2, small expert widths; deepseek_v3's attention wants head_dim equal to
# its rotary part and as many key/value heads as query heads. Shared experts and dense layers where the family has them.
_GROUPED = dict(  # deepseek_v3 and glm4_moe: a shared expert, the first layer dense, one routing group
    n_routed_experts=8,
    num_experts_per_tok=2,
    moe_intermediate_size=32,
    n_shared_experts=1,
    first_k_dense_replace=1,
    n_group=1,
    topk_group=1,
)
# Gemma 4: sliding layers with a full-attention last layer of a wider head, per-layer embeddings (small)
_GEMMA4 = dict(
    global_head_dim=32,
    hidden_size_per_layer_input=8,
    vocab_size_per_layer_input=256,
    sliding_window=16,
    layer_types=["sliding_attention", "sliding_attention", "full_attention"],
)
# Qwen3.5: two Gated DeltaNet (linear attention) layers, then a full-attention one
_QWEN3_5 = dict(
    layer_types=["linear_attention", "linear_attention", "full_attention"],
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    linear_key_head_dim=16,
    linear_value_head_dim=16,
)
_QWEN3_5_MOE = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48)
# DeepSeek V3.2 and GLM-5: deepseek_v3's latent attention and experts, plus a sparse-attention indexer that
# keeps index_topk keys per query (8 here, so that prompts of more tokens exercise it)
_DEEPSEEK_V3 = (
    _GROUPED
    | dict(kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, head_dim=8)
    | dict(num_key_value_heads=4)  # multi-head latent attention: as many key/value heads as query heads
)
_DSA = dict(index_n_heads=4, index_head_dim=16, index_topk=8, q_lora_rank=16)
MOE = {
    "qwen3_moe": dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, mlp_only_layers=[0]),
    "qwen2_moe": dict(
        num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48
    ),
    "mixtral": dict(num_local_experts=8, num_experts_per_tok=2, intermediate_size=32),
    "olmoe": dict(num_experts=8, num_experts_per_tok=2, intermediate_size=32),
    "deepseek_v3": _DEEPSEEK_V3,
    "glm4_moe": _GROUPED,
    "gpt_oss": dict(num_local_experts=8, num_experts_per_tok=2, intermediate_size=32),
    "granitemoe": dict(num_local_experts=8, num_experts_per_tok=2, intermediate_size=32),
    "llama4_text": dict(  # layers 1 and 3 of 4 mixtures (the dense ones wider), one shared expert each; top-1
        num_local_experts=8,  # as the released Llama 4 models route (and all vLLM implements for them)
        num_experts_per_tok=1,
        intermediate_size=32,
        intermediate_size_mlp=96,
        interleave_moe_layer_step=2,
        num_hidden_layers=4,
    ),
    "minimax_m2": dict(num_local_experts=8, num_experts_per_tok=2, intermediate_size=32),
    "hunyuan_v1_moe": dict(num_experts=8, moe_topk=2, intermediate_size=32),  # shared_mlp as wide as an expert
    "dots1": _GROUPED | dict(n_shared_experts=2),  # two shared experts fused: 64 wide
    "mistral4": _GROUPED  # multi-head latent attention as deepseek_v3's; head_dim is qk_nope + qk_rope
    | dict(kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16)
    | dict(num_key_value_heads=4),
    "deepseek_v32": _DEEPSEEK_V3 | _DSA,
    "glm_moe_dsa": _DEEPSEEK_V3 | _DSA,
    "qwen3_next": _QWEN3_5 | _QWEN3_5_MOE,
    # LFM2: convolution blocks around an attention layer; its MLP is 2/3 of intermediate_size (144 -> 96, a
    # multiple of 32)
    "lfm2": dict(
        intermediate_size=144, block_auto_adjust_ff_dim=True, block_ffn_dim_multiplier=1.0, block_multiple_of=32
    )
    | dict(layer_types=["conv", "full_attention", "conv"]),
    "exaone_moe": dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, num_shared_experts=1)
    | dict(mlp_layer_types=["dense", "sparse", "sparse"], sliding_window=64),
    "ernie4_5_moe": dict(moe_num_experts=8, moe_k=2, moe_intermediate_size=32, moe_num_shared_experts=2)
    | dict(moe_layer_start_index=1),
    # Falcon-H1: a small Mamba-2 mixer (the default is 128 heads of a 256-wide state)
    "falcon_h1": dict(mamba_d_ssm=64, mamba_n_heads=8, mamba_d_head=8, mamba_d_state=16, mamba_chunk_size=16),
    # dense families whose text model needs more than TEXT
    "exaone4_5": dict(model_type="exaone4"),  # its text_config must name its model_type
    "gemma4_text": _GEMMA4,
    # Gemma 3n: its config turns intermediate_size into a per-layer list; no KV sharing across 3 layers; the
    # first layer's gate sparsified as the released models' first layers are
    "gemma3n_text": dict(hidden_size_per_layer_input=8, vocab_size_per_layer_input=256, num_kv_shared_layers=0)
    | dict(laurel_rank=8, activation_sparsity_pattern=[0.95, 0.0, 0.0])
    | dict(layer_types=["sliding_attention", "sliding_attention", "full_attention"], sliding_window=16),
    "gemma4": _GEMMA4 | dict(model_type="gemma4_text"),
    "qwen3_5_text": _QWEN3_5,
    "qwen3_5": _QWEN3_5 | dict(model_type="qwen3_5_text"),
    "qwen3_5_moe_text": _QWEN3_5 | _QWEN3_5_MOE,
    "qwen3_5_moe": _QWEN3_5 | _QWEN3_5_MOE | dict(model_type="qwen3_5_moe_text"),
}
VISION = dict(
    hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
)
_QWEN_VISION = dict(  # Qwen-VL style towers (depth / num_heads), merged to the text width
    depth=1, hidden_size=32, intermediate_size=48, num_heads=2, patch_size=14, out_hidden_size=TEXT["hidden_size"]
)
# Multimodal families: the language model's config goes in text_config, beside a tiny vision tower
MULTIMODAL = {
    "gemma3": dict(
        vision_config=VISION, mm_tokens_per_image=4, image_token_index=255, boi_token_index=253, eoi_token_index=254
    ),
    "mistral3": dict(vision_config=VISION | dict(head_dim=16), image_token_index=255),  # a Pixtral tower
    "exaone4_5": dict(
        vision_config=_QWEN_VISION | dict(num_key_value_heads=2, window_size=28, fullatt_block_indexes=[0]),
        image_token_id=255,
        video_token_id=254,
    ),
    "gemma4": dict(vision_config=None, audio_config=None),  # towers optional: hedit never edits them
    "qwen3_5": dict(
        vision_config=_QWEN_VISION | dict(patch_size=4, num_position_embeddings=16),
        image_token_id=255,
        video_token_id=254,
    ),
    "qwen3_5_moe": dict(
        vision_config=_QWEN_VISION | dict(patch_size=4, num_position_embeddings=16),
        image_token_id=255,
        video_token_id=254,
    ),
    "llama4": dict(
        vision_config=VISION | dict(projector_input_dim=32, projector_output_dim=64, vision_output_dim=32),
        image_token_index=255,
    ),
}
# Families whose checkpoints are saved by another class than the one hedit loads them with: Llama 4 as
# released (Llama4ForConditionalGeneration: language_model.model.layers.N beside vision_model.*), loaded
# as its text model (Llama4ForCausalLM; transformers maps the names)
SAVED_AS = {"llama4": "AutoModelForImageTextToText"}
TEXT_OF = {"llama4": "llama4_text"}  # a multimodal family whose text model's tiny settings are another's


def tiny_config(model_type: str, tie_word_embeddings: bool | None = None, **overrides):
    """A small config of ``model_type``; a multimodal family (``MULTIMODAL``) gets a tiny vision tower too."""
    from transformers import AutoConfig

    text = TEXT | MOE.get(TEXT_OF.get(model_type, model_type), {}) | overrides
    if tie_word_embeddings is not None:
        text["tie_word_embeddings"] = tie_word_embeddings
    if model_type in MULTIMODAL:
        return AutoConfig.for_model(model_type, text_config=text, **MULTIMODAL[model_type])
    return AutoConfig.for_model(model_type, **text)


def tiny_model(model_type: str, seed: int = 0, **kw) -> torch.nn.Module:
    """A random tiny model of ``model_type``, of the class hedit loads its checkpoints as (``auto_class``)."""
    import transformers

    from hedit.registry import architectures

    arch = architectures().get(model_type)
    cls = getattr(transformers, arch.auto_class if arch else "AutoModelForCausalLM")
    torch.manual_seed(seed)
    return cls.from_config(tiny_config(model_type, **kw)).eval()


def save_tiny_model(
    path: str | Path,
    model_type: str = "llama",
    dtype: torch.dtype = torch.float32,
    max_shard_size: str | None = None,
    seed: int = 0,
    stacked: bool = False,
    **kw,
) -> Path:
    """Save a random tiny model as a safetensors checkpoint (sharded when ``max_shard_size`` is set).
    ``stacked``: a mixture's experts as the 3-D tensors transformers holds in memory (as checkpoints saved
    that way store them), where ``save_pretrained`` writes one tensor per expert."""
    if model_type in SAVED_AS:
        import transformers

        torch.manual_seed(seed)
        cls = getattr(transformers, SAVED_AS[model_type])
        model = cls.from_config(tiny_config(model_type, **kw)).eval()
    else:
        model = tiny_model(model_type, seed, **kw)
    if dtype != torch.float32:  # (a float32 model stays as built: Llama 4's vision rope buffer is complex)
        model = model.to(dtype)
    extra = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(str(path), **extra)
    if stacked:
        from safetensors.torch import save_file

        for f in Path(path).glob("*.safetensors*"):
            f.unlink()
        state = {
            k: v.contiguous()
            for k, v in model.state_dict().items()
            if k != "lm_head.weight" or not model.config.tie_word_embeddings
        }
        save_file(state, str(Path(path) / "model.safetensors"), metadata={"format": "pt"})
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
