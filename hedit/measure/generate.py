"""Batched chat generation for evaluations: prompts from chat messages, left-padded batches, greedy by
default (sampling settable), responses cut at the first end token and decoded."""

from __future__ import annotations

import torch

from hedit.config import Decoding
from hedit.errors import HeditError


def chat_ids(tokenizer, messages: list[dict[str, str]], chat_template: bool = True) -> list[int]:
    """Token ids of a conversation ending with the prompt for the assistant's next turn."""
    if chat_template and not getattr(tokenizer, "chat_template", None):
        _note_plain(tokenizer)
        chat_template = False
    if chat_template:
        ids = render_chat(tokenizer, messages)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    text = "".join(f"{'Question' if m['role'] == 'user' else 'Answer'}: {m['content']}\n" for m in messages)
    return tokenizer(text + "Answer:")["input_ids"]


RENDER_SECONDS = 10.0  # one prompt through a chat template; a real template takes milliseconds


def render_chat(tokenizer, messages: list[dict[str, str]]):
    """The chat template applied to ``messages`` (token ids), bounded: a template that raises, has bad
    syntax or an unknown filter, or runs past ``RENDER_SECONDS`` is one HeditError naming the model."""
    from hedit.io.files import time_limit

    name = str(getattr(tokenizer, "name_or_path", "") or "the model")
    with time_limit(
        RENDER_SECONDS, f"the chat template of {name} ran for more than {RENDER_SECONDS:g} s on one prompt"
    ):
        try:
            return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        except Exception as e:  # jinja2's TemplateError kinds, and what a template's own code raises
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise HeditError(f"the chat template of {name} cannot be applied: {type(e).__name__}: {why}") from None


_NOTED: set[str] = set()


def _note_plain(tokenizer) -> None:
    """A tokenizer without a chat template is a base model's: plain prompts, said once per tokenizer."""
    name = str(getattr(tokenizer, "name_or_path", "") or "the model")
    if name not in _NOTED:
        _NOTED.add(name)
        import sys

        print(
            f"note: {name} has no chat template (a base model): plain 'Question: ... Answer:' prompts",
            file=sys.stderr,
        )


class Ends(frozenset):
    """The tokens that end a reply (the set's members), and ``soft`` ones that end it only once it holds
    something else: a base model's line break ends its answer, but a line break before any answer
    does not."""

    soft: frozenset[int] = frozenset()

    def __new__(cls, hard, soft=frozenset()):
        self = super().__new__(cls, hard)
        self.soft = frozenset(soft) - self
        return self


def end_ids(model, tokenizer, chat_template: bool | None = None) -> Ends:
    """The tokens that end a reply: the model's and tokenizer's end-of-sequence tokens; for plain prompts
    (``chat_template`` False, or a tokenizer without one: a base model) every token that holds a line
    break ends it too, once it has begun (``Ends.soft``), since a base model answers on one line and
    then goes on with the next 'Question:'."""
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    soft = frozenset()
    if chat_template is not None and (not chat_template or not getattr(tokenizer, "chat_template", None)):
        soft = line_break_ids(tokenizer)
    return Ends(ids, soft)


_LINE_BREAKS: dict[tuple[str, int], frozenset[int]] = {}


def line_break_ids(tokenizer) -> frozenset[int]:
    """Ids of the vocabulary's tokens whose text holds a line break (computed once per tokenizer)."""
    key = (str(getattr(tokenizer, "name_or_path", "")), len(tokenizer))
    if key not in _LINE_BREAKS or not key[0]:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        _LINE_BREAKS[key] = frozenset(i for i, t in enumerate(texts) if "\n" in t)
    return _LINE_BREAKS[key]


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
    """``row`` up to its first end token (a soft end of ``Ends`` counts once a token before it is not one)."""
    soft = getattr(ends, "soft", frozenset())
    begun = False
    for i, t in enumerate(row):
        if t in ends or (begun and t in soft):
            return row[:i]
        begun = begun or t not in soft
    return row


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    dec: Decoding = Decoding(),
    ends: set[int] | None = None,
    seed: int | None = None,
    cells=None,
) -> list[str]:
    """One response per prompt, in one ``generate`` call (the caller batches). ``cells``: (the cells,
    the cell of each prompt) where ``cells_share_batches(model, dec)``: the prompts of several sweep
    cells in one batch; the cells are a ``hedit.check.intervention.CellScales`` on a transformers model,
    on a vLLM engine anything with ``adapters`` (each cell's LoRA folder, or None)."""
    if not prompts:
        return []
    ends = end_ids(model, tokenizer) if ends is None else ends
    if cells is not None:
        if not cells_share_batches(model, dec) or not ends:
            raise HeditError("sweep cells share a batch only in greedy decoding")
        scales, row_cells = cells
        if isinstance(model, EngineModel):  # each prompt under its cell's adapter, in the engine's batches
            loras = [scales.adapters[c] for c in row_cells]
            out = [o[0] for o in model.run(prompts, dec.max_new_tokens, ends, loras=loras)]
            return [tokenizer.decode(cut(row, ends), skip_special_tokens=True).strip() for row in out]
        out = decode(model, prompts, dec.max_new_tokens, ends, pad_id(tokenizer, ends), cells=cells)
        return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]
    if isinstance(model, EngineModel):
        out = [
            o[0]
            for o in model.run(prompts, dec.max_new_tokens, ends, 1, dec.sample, dec.temperature, dec.top_p, dec.top_k)
        ]
        return [tokenizer.decode(cut(row, ends), skip_special_tokens=True).strip() for row in out]
    pad = pad_id(tokenizer, ends)
    if not dec.sample and ends and plain_greedy(model):
        out = greedy(model, prompts, dec.max_new_tokens, ends, pad)
        return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]
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


def generate_cells(
    model,
    tokenizer,
    prompts: list[list[int]],
    dec: Decoding,
    ends,
    seed: int,
    scales=None,
    row_cells=None,
    batch_size=0,
) -> list[str]:
    """``generate`` for the rows of one batch of a sweep: without ``scales`` one call under whatever the
    model runs now (``seed`` for sampling); with ``scales`` (CellScales) row ``r`` runs under cell
    ``row_cells[r]``, in calls of at most ``batch_size`` rows."""
    if scales is None:
        return generate(model, tokenizer, prompts, dec, ends, seed=seed)
    step = batch_size or len(prompts)
    out: list[str] = []
    for s in range(0, len(prompts), step):
        rows = (scales, row_cells[s : s + step])
        out += generate(model, tokenizer, prompts[s : s + step], dec, ends, cells=rows)
    return out


# generation_config fields that make `generate`'s greedy tokens differ from the argmax of the logits
_PROCESSORS = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_new_tokens": (None, 0),
    "min_length": (None, 0),
    "suppress_tokens": (None, []),
    "begin_suppress_tokens": (None, []),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "sequence_bias": (None,),
}


def cells_share_batches(model, dec: Decoding) -> bool:
    """Can the prompts of several sweep cells decode in one batch? In greedy decoding (sampled replies
    keep a seed per batch): on a transformers model, by hedit's decoder under
    ``hedit.check.intervention.CellScales``; on a vLLM engine that mixes adapters (``mix_adapters``),
    each prompt under its cell's adapter."""
    if isinstance(model, EngineModel):
        return not dec.sample and model.mix_adapters
    return not dec.sample and plain_greedy(model)


def plain_greedy(model) -> bool:
    """Does greedy decoding of this model take the argmax of the logits (no logits processors set in
    its generation config)? Else ``generate`` keeps calling ``model.generate``."""
    gc = getattr(model, "generation_config", None)
    return gc is not None and all(getattr(gc, k, None) in ok for k, ok in _PROCESSORS.items())


@torch.no_grad()
def greedy(model, prompts: list[list[int]], max_new_tokens: int, ends: set[int], pad: int) -> list[list[int]]:
    """Greedy replies (cut before the first end token), the tokens ``model.generate`` gives, without its
    waste: a reply that has ended leaves the batch (its rows of the KV cache are dropped), so the batch
    shrinks as replies finish instead of decoding padding until the longest one ends."""
    return decode(model, prompts, max_new_tokens, ends, pad)


@torch.no_grad()
def sample(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    ends: set[int],
    pad: int,
    n: int,
    temperature: float,
    top_p: float,
    top_k: int,
    seed: int,
) -> list[list[int]]:
    """``n`` sampled replies per prompt (rows ``i * n ... i * n + n - 1`` for prompt ``i``), drawn as
    ``model.generate`` draws them (transformers' own temperature, top-k and top-p warpers, in its order),
    with each prompt's prefill computed once for its ``n`` samples and finished replies leaving the batch.
    Seeded with ``seed`` (a generator of its own, so the global RNG is left alone)."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    gen = torch.Generator(device=model.device).manual_seed(seed)

    def pick(rows: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(warpers(rows, logits.float()), dim=-1)
        return torch.multinomial(probs, 1, generator=gen).squeeze(1)

    return decode(model, prompts, max_new_tokens, ends, pad, n, pick)


MIN_SHARED = 8  # a shorter common start is not worth a forward pass of its own


def shared_prefix(prompts: list[list[int]]) -> int:
    """The length of the prompts' common first tokens (at least ``MIN_SHARED``, else 0), leaving every
    prompt at least one token of its own."""
    k = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        i = 0
        while i < k and p[i] == first[i]:
            i += 1
        k = i
        if k < MIN_SHARED:
            return 0
    return k if k >= MIN_SHARED else 0


def decode(
    model, prompts, max_new_tokens: int, ends: set[int], pad: int, n: int = 1, pick=None, cells=None
) -> list[list[int]]:
    """The decoding loop of ``greedy`` and ``sample``: one prefill per prompt (its KV cache repeated for
    ``n`` replies), then one token per step for the replies still running; ``pick(ids, logits)`` chooses
    the next tokens (the argmax when None). ``cells``: (``hedit.check.intervention.CellScales``, the cell
    of each prompt), so that prompts of several sweep cells share the batch; the decoder keeps telling
    the hooks which cell each row is as rows leave."""
    from transformers import DynamicCache

    scales, row_cells = cells if cells is not None else (None, None)
    rc = torch.as_tensor(row_cells, dtype=torch.long) if scales is not None else None
    dev = model.device
    cache = DynamicCache(config=model.config)
    k = shared_prefix(prompts) if len(prompts) > 1 else 0
    window = getattr(model.config, "sliding_window", None) or getattr(
        getattr(model.config, "text_config", None), "sliding_window", None
    )
    if k and window and max(len(p) for p in prompts) + max_new_tokens >= window:
        k = 0  # a sliding-window cache drops its oldest keys, which a prefix filled apart cannot survive
    if k:  # the prompts' common start (a chat template's system turn): its KV once per cell, copied to every row
        heads = sorted(set(rc.tolist())) if rc is not None else [0]
        if scales is not None:
            scales.select(heads)
        model(
            input_ids=torch.tensor([prompts[0][:k]] * len(heads), device=dev),
            position_ids=torch.arange(k, device=dev)[None].expand(len(heads), k),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        if rc is None:
            cache.batch_repeat_interleave(len(prompts))
        else:
            cache.batch_select_indices(torch.tensor([heads.index(c) for c in rc.tolist()], device=dev))
    if scales is not None:
        scales.select(rc)
    tail, tmask = left_pad([p[k:] for p in prompts], pad)  # [prefix | pads | rest]: the pads are masked out
    tail, tmask = tail.to(dev), tmask.to(dev)
    mask = torch.cat([tmask.new_ones((len(prompts), k)), tmask], dim=1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, k:]
    logits = model(
        input_ids=tail, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1
    ).logits[:, -1]
    ids = torch.cat([torch.tensor(prompts[0][:k], dtype=torch.long, device=dev).expand(len(prompts), k), tail], 1)
    if n > 1:
        cache.batch_repeat_interleave(n)
        mask, ids, logits = (t.repeat_interleave(n, dim=0) for t in (mask, ids, logits))
        if scales is not None:
            rc = rc.repeat_interleave(n)
            scales.select(rc)
    seqs = ids  # what the warpers see (top-k and top-p do not read it; kept for their signature)
    nxt = logits.argmax(-1) if pick is None else pick(seqs, logits)
    live = list(range(len(prompts) * n))  # reply index of each row still in the batch
    out: list[list[int]] = [[] for _ in live]
    stop = torch.tensor(sorted(ends), device=dev, dtype=torch.long)
    soft = torch.tensor(sorted(getattr(ends, "soft", ())), device=dev, dtype=torch.long)
    begun = torch.zeros(len(live), dtype=torch.bool, device=dev)  # holds a token that is not a soft end
    for step in range(max_new_tokens):
        is_soft = torch.isin(nxt, soft)
        done = torch.isin(nxt, stop) | (is_soft & begun)
        begun |= ~is_soft
        for row, tok, end in zip(live, nxt.tolist(), done.tolist()):
            if not end:
                out[row].append(tok)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):
            keep = torch.nonzero(~done).flatten()
            cache.batch_select_indices(keep)
            live = [live[i] for i in keep.tolist()]
            mask, nxt, seqs, begun = mask[keep], nxt[keep], seqs[keep], begun[keep]
            if scales is not None:
                rc = rc[keep.cpu()]
                scales.select(rc)
        mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
        seqs = torch.cat([seqs, nxt[:, None]], dim=1)
        pos = mask.sum(-1, keepdim=True) - 1
        logits = model(
            input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, cache=cache, use_cache=True
        ).logits[:, -1]
        nxt = logits.argmax(-1) if pick is None else pick(seqs, logits)
    return out


class EngineModel:
    """Stands in for a transformers model in hedit's generation calls (``generate``, ``collect``'s
    sampling) when generation runs in a vLLM engine (``hedit.check.runtime_vllm.VllmEngine``). ``lora``:
    the adapter the next calls run under (a sweep cell), or None for the unedited model. ``mix_adapters``:
    whether a sweep sends the prompts of all its cells together, each under its adapter (the engine
    holding several at once), rather than cell after cell."""

    def __init__(self, engine, eos_token_ids: list[int], engine_id: str = "vllm", mix_adapters: bool = False):
        from types import SimpleNamespace

        self.engine = engine
        self.engine_id = engine_id
        self.mix_adapters = mix_adapters
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
        loras: list | None = None,
    ) -> list[list[list[int]]]:
        """``loras``: each prompt's adapter (None: the model alone), else ``self.lora`` for all."""
        kw = {"temperature": temperature, "top_p": top_p, "top_k": top_k} if sample else {"temperature": 0.0}
        lora = self.lora if loras is None else loras
        return self.engine.generate(prompts, max_tokens, n=n, stop_token_ids=sorted(ends), lora=lora, **kw)

    def eval(self) -> EngineModel:
        return self
