"""Batched chat generation for evaluations: prompts from chat messages, left-padded batches, greedy by
default (sampling settable), responses cut at the first end token and decoded."""

from __future__ import annotations

import torch

from hedit.config import Decoding
from hedit.errors import HeditError


def chat_ids(tokenizer, messages: list[dict[str, str]], chat_template: bool = True) -> list[int]:
    """Token ids of a conversation ending with the prompt for the assistant's next turn."""
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise HeditError("the model's tokenizer has no chat template; pass --no-chat-template to use plain text")
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    text = "".join(f"{'Question' if m['role'] == 'user' else 'Answer'}: {m['content']}\n" for m in messages)
    return tokenizer(text + "Answer:")["input_ids"]


def end_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def left_pad(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every prompt right-aligned."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids, mask


def pad_id(tokenizer, ends: set[int]) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(ends, default=0)


def cut(row: list[int], ends: set[int]) -> list[int]:
    return row[: next((i for i, t in enumerate(row) if t in ends), len(row))]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    dec: Decoding = Decoding(),
    ends: set[int] | None = None,
    seed: int | None = None,
) -> list[str]:
    """One response per prompt, in one ``generate`` call (the caller batches)."""
    if not prompts:
        return []
    ends = end_ids(model, tokenizer) if ends is None else ends
    if isinstance(model, EngineModel):
        out = [
            o[0]
            for o in model.run(prompts, dec.max_new_tokens, ends, 1, dec.sample, dec.temperature, dec.top_p, dec.top_k)
        ]
        return [tokenizer.decode(cut(row, ends), skip_special_tokens=True).strip() for row in out]
    pad = pad_id(tokenizer, ends)
    ids, mask = left_pad(prompts, pad)
    kw = {"do_sample": False}
    if dec.sample:
        torch.manual_seed(dec.seed if seed is None else seed)
        kw = {"do_sample": True, "temperature": dec.temperature, "top_p": dec.top_p, "top_k": dec.top_k}
    else:
        kw |= {"temperature": None, "top_p": None, "top_k": None}
    out = model.generate(
        input_ids=ids.to(model.device),
        attention_mask=mask.to(model.device),
        max_new_tokens=dec.max_new_tokens,
        pad_token_id=pad,
        eos_token_id=sorted(ends) or None,
        **kw,
    )[:, ids.shape[1] :].tolist()
    return [tokenizer.decode(cut(row, ends), skip_special_tokens=True).strip() for row in out]


class EngineModel:
    """Stands in for a transformers model in hedit's generation calls (``generate``, ``collect``'s
    sampling) when generation runs in a vLLM engine (``hedit.check.runtime_vllm.VllmEngine``). ``lora``:
    the adapter the next calls run under (a sweep cell), or None for the unedited model."""

    def __init__(self, engine, eos_token_ids: list[int], engine_id: str = "vllm"):
        from types import SimpleNamespace

        self.engine = engine
        self.engine_id = engine_id
        self.lora = None
        self.generation_config = SimpleNamespace(eos_token_id=eos_token_ids)
        self.device = "cpu"  # inputs stay in hedit's process; the engine places its own model

    def run(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        ends: set[int],
        n: int = 1,
        sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
    ) -> list[list[list[int]]]:
        kw = {"temperature": temperature, "top_p": top_p, "top_k": top_k} if sample else {"temperature": 0.0}
        return self.engine.generate(prompts, max_tokens, n=n, stop_token_ids=sorted(ends), lora=self.lora, **kw)

    def eval(self) -> EngineModel:
        return self
