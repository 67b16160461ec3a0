"""hedit's one decoder: greedy and sampled replies in left-padded batches, finished replies leaving the
batch, the prompts of several sweep cells sharing batches (``decode``), the same calls served by a vLLM
engine (``EngineModel``), and replies cut at their first end token."""

from __future__ import annotations

import torch

from hedit.config import Decoding
from hedit.errors import HeditError


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
def replies(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int,
    ends: set[int],
    n: int = 1,
    sampling: tuple[float, float, int, int] | None = None,
    cells=None,
) -> list[list[list[int]]]:
    """The one entry to generation: for each prompt, ``n`` replies as token ids cut before their first end
    token, greedy, or sampled with ``sampling`` = (temperature, top_p, top_k, seed). Served by a vLLM
    engine (``EngineModel``), else by hedit's decoder (``decode``: finished replies leave the batch), else,
    for a model whose generation config sets logits processors, by ``model.generate``. ``cells``: (the
    cells, the cell of each prompt) where ``cells_share_batches``: the prompts of several sweep cells in one
    batch (a ``hedit.engine.intervention.CellScales`` on a transformers model; on a vLLM engine anything
    with ``adapters``, each cell's LoRA folder or None)."""
    if not prompts:
        return []
    if cells is not None and (sampling is not None or not ends):
        raise HeditError("sweep cells share a batch only in greedy decoding")
    if isinstance(model, EngineModel):
        kw = {"loras": [cells[0].adapters[c] for c in cells[1]]} if cells is not None else {}
        if sampling is not None:
            kw |= dict(zip(("temperature", "top_p", "top_k"), sampling[:3]), sample=True)
        out = model.run(prompts, max_new_tokens, ends, n, **kw)
        return [[cut(row, ends) for row in rows] for rows in out]
    pad = pad_id(tokenizer, ends)
    if ends and plain_greedy(model):
        if sampling is None:
            out = decode(model, prompts, max_new_tokens, ends, pad, n, cells=cells)
        else:
            out = sample(model, prompts, max_new_tokens, ends, pad, n, *sampling)
        return [out[i * n : (i + 1) * n] for i in range(len(prompts))]
    if cells is not None:
        raise HeditError("sweep cells share a batch only in greedy decoding")
    ids, mask = left_pad(prompts, pad)
    kw = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    if sampling is not None:
        temperature, top_p, top_k, seed = sampling
        torch.manual_seed(seed)
        kw = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k}
    out = model.generate(
        input_ids=ids.to(model.device),
        attention_mask=mask.to(model.device),
        max_new_tokens=max_new_tokens,
        num_return_sequences=n,
        pad_token_id=pad,
        eos_token_id=sorted(ends) or None,
        **kw,
    )[:, ids.shape[1] :].tolist()
    rows = [cut(row, ends) for row in out]
    return [rows[i * n : (i + 1) * n] for i in range(len(prompts))]


def generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    dec: Decoding = Decoding(),
    ends: set[int] | None = None,
    seed: int | None = None,
    cells=None,
) -> list[str]:
    """One decoded response per prompt (``replies`` under ``dec``), in one call (the caller batches)."""
    ends = end_ids(model, tokenizer) if ends is None else ends
    sampling = (dec.temperature, dec.top_p, dec.top_k, dec.seed if seed is None else seed) if dec.sample else None
    out = replies(model, tokenizer, prompts, dec.max_new_tokens, ends, 1, sampling, cells)
    return [tokenizer.decode(rows[0], skip_special_tokens=True).strip() for rows in out]


def items_per_batch(batch_size: int, cells: int) -> int:
    """Items per batch when each item runs under ``cells`` cells and a batch holds ``batch_size`` sequences."""
    return max(1, batch_size // cells)


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
    ``hedit.engine.intervention.CellScales``; on a vLLM engine that mixes adapters (``mix_adapters``),
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
    the next tokens (the argmax when None). ``cells``: (``hedit.engine.intervention.CellScales``, the cell
    of each prompt), so that prompts of several sweep cells share the batch; the decoder keeps telling
    the hooks which cell each row is as rows leave."""
    from transformers import DynamicCache

    scales, row_cells = cells if cells is not None else (None, None)
    rc = torch.as_tensor(row_cells, dtype=torch.long) if scales is not None else None
    dev = model.device
    cache = DynamicCache(config=model.config)
    kw = cache_keyword(model)
    k = shared_prefix(prompts) if len(prompts) > 1 else 0
    window = getattr(model.config, "sliding_window", None) or getattr(
        getattr(model.config, "text_config", None), "sliding_window", None
    )
    if k and window and max(len(p) for p in prompts) + max_new_tokens >= window:
        k = 0  # a sliding-window cache drops its oldest keys, which a prefix filled apart cannot survive
    if k and not set(getattr(model.config.get_text_config(), "layer_types", None) or ()) <= KV_LAYERS:
        k = 0  # a recurrent or convolution state (Gated DeltaNet, Mamba-2, LFM2's short convolutions) would read
        # [prefix | pads | rest]'s pads as input: only layers that keep keys and values share a prefix
    if k:  # the prompts' common start (a chat template's system turn): its KV once per cell, copied to every row
        heads = sorted(set(rc.tolist())) if rc is not None else [0]
        if scales is not None:
            scales.select(heads)
        model(
            input_ids=torch.tensor([prompts[0][:k]] * len(heads), device=dev),
            position_ids=torch.arange(k, device=dev)[None].expand(len(heads), k),
            **{kw: cache},
            use_cache=True,
            logits_to_keep=1,
        )
        if rc is None:
            rows(cache, torch.zeros(len(prompts), dtype=torch.long, device=dev))
        else:
            rows(cache, torch.tensor([heads.index(c) for c in rc.tolist()], device=dev))
    if scales is not None:
        scales.select(rc)
    tail, tmask = left_pad([p[k:] for p in prompts], pad)  # [prefix | pads | rest]: the pads are masked out
    tail, tmask = tail.to(dev), tmask.to(dev)
    mask = torch.cat([tmask.new_ones((len(prompts), k)), tmask], dim=1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, k:]
    logits = model(
        input_ids=tail, attention_mask=mask, position_ids=pos, **{kw: cache}, use_cache=True, logits_to_keep=1
    ).logits[:, -1]
    ids = torch.cat([torch.tensor(prompts[0][:k], dtype=torch.long, device=dev).expand(len(prompts), k), tail], 1)
    if n > 1:
        rows(cache, torch.arange(len(prompts), device=dev).repeat_interleave(n))
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
            rows(cache, keep)
            live = [live[i] for i in keep.tolist()]
            mask, nxt, seqs, begun = mask[keep], nxt[keep], seqs[keep], begun[keep]
            if scales is not None:
                rc = rc[keep.cpu()]
                scales.select(rc)
        mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
        seqs = torch.cat([seqs, nxt[:, None]], dim=1)
        pos = mask.sum(-1, keepdim=True) - 1
        logits = model(
            input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, **{kw: cache}, use_cache=True
        ).logits[:, -1]
        nxt = logits.argmax(-1) if pick is None else pick(seqs, logits)
    return out


# layer types whose cache holds only keys and values (one row per token, masked pads skipped)
KV_LAYERS = {"full_attention", "sliding_attention", "chunked_attention", "indexed_attention"}


def rows(cache, index: torch.Tensor) -> None:
    """Keep (or repeat) the cache's batch rows ``index``, in that order, in every layer: key/value layers
    and the convolution and recurrent states of linear-attention layers alike (their layers have no
    ``batch_select_indices``; ``reorder_cache`` is an ``index_select`` on each)."""
    cache.reorder_cache(index)


def cache_keyword(model) -> str:
    """The name under which ``model.forward`` takes the KV cache: ``cache`` from transformers 5.20 on,
    ``past_key_values`` before (5.16-5.19: the range vLLM 0.32 pins, which hedit shares an environment
    with). A name the forward does not declare would be swallowed by its ``**kwargs``: no cache at all."""
    import inspect

    params = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


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
