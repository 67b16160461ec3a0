import pytest
import torch

from hedit.check.common import greedy
from hedit.engine.decoder import Decoding, cut, end_ids, generate, left_pad
from hedit.engine.prompts import chat_ids
from hedit.model.load import load_model, load_tokenizer
from hedit.model.tiny import save_tiny_model

from conftest import add_tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = add_tokenizer(save_tiny_model(tmp_path_factory.mktemp("g") / "m", "qwen3"))
    tok = load_tokenizer(path)
    tok.padding_side = "left"
    return load_model(path), tok


def test_left_pad_right_aligns():
    ids, mask = left_pad([[5, 6, 7], [8]], pad=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_cut_stops_at_the_first_end_token():
    assert cut([4, 5, 2, 6, 2], {2}) == [4, 5] and cut([4, 5], {2}) == [4, 5]


def test_chat_ids_with_and_without_template(tiny, capsys):
    _, tok = tiny
    msgs = [{"role": "user", "content": "Water boils"}]
    assert tok.decode(chat_ids(tok, msgs)) == tok.decode(tok("user: Water boils\n")["input_ids"])
    assert chat_ids(tok, msgs, chat_template=False) == tok("Question: Water boils\nAnswer:")["input_ids"]
    tok2 = type(tok).from_pretrained(tok.name_or_path)
    tok2.chat_template = None
    tok2.name_or_path = "base-model-without-template"
    assert chat_ids(tok2, msgs) == chat_ids(tok, msgs, chat_template=False)  # a base model: plain prompts
    err = capsys.readouterr().err
    assert err == (
        "note: base-model-without-template has no chat template (a base model): plain 'Question: ... Answer:' prompts\n"
    )
    chat_ids(tok2, msgs)
    assert capsys.readouterr().err == ""  # said once


def test_batched_greedy_equals_one_prompt_at_a_time(tiny):
    """Left padding must not change greedy answers: each reply equals the unbatched greedy tokens."""
    model, tok = tiny
    prompts = [
        tok("The capital of France is")["input_ids"],
        tok("Water")["input_ids"],
        tok("Q : Who wrote Romeo and Juliet ?")["input_ids"],
    ]
    dec = Decoding(max_new_tokens=6)
    ends = end_ids(model, tok)
    batched = generate(model, tok, prompts, dec, ends)
    for p, reply in zip(prompts, batched):
        alone = cut(greedy(model, p, 6)[len(p) :], ends)
        assert reply == tok.decode(alone, skip_special_tokens=True).strip()
    assert generate(model, tok, [], dec) == []


def test_sampling_is_seeded(tiny):
    model, tok = tiny
    prompts = [tok("The largest planet")["input_ids"]] * 4
    dec = Decoding(max_new_tokens=8, sample=True, temperature=1.5, top_k=0, top_p=1.0)
    a, b = generate(model, tok, prompts, dec, seed=3), generate(model, tok, prompts, dec, seed=3)
    assert a == b and len(set(a)) > 1  # same seed, same draws; rows differ from each other
    torch.manual_seed(0)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize(
    "arch, kw",
    [
        ("llama", {}),
        ("qwen3", {}),
        ("gemma3_text", {"sliding_window": 4}),
        ("gemma3_text", {"sliding_window": 64}),
        ("qwen3_5_text", {}),  # Gated DeltaNet layers: a recurrent state, no KV rows, no shared prefix
        ("gemma4_text", {}),  # per-layer embeddings, sliding layers, a wider full-attention head
        ("deepseek_v32", {}),  # a sparse-attention indexer whose keys sit in the cache beside the layer's
        ("qwen3_next", {}),  # linear attention with a mixture of experts
        ("falcon_h1", {}),  # Mamba-2 beside attention in every layer
        ("olmo_hybrid", {}),
        ("lfm2", {}),  # short-convolution blocks beside attention
        ("gemma3n_text", {}),  # AltUp streams, LAuReL, per-layer embeddings, a sparsified gate
    ],
)
def test_pruned_greedy_gives_generates_tokens(arch, kw, shared):
    """The sweep's greedy decoder drops finished replies from the batch; every reply must still be the
    token list `model.generate` gives (float32), with replies ending at different steps."""
    from hedit.engine.decoder import greedy as pruned
    from hedit.engine.decoder import shared_prefix
    from hedit.model.tiny import tiny_model

    model = tiny_model(arch, seed=3, **kw)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 250, (n,), generator=g).tolist() for n in (3, 9, 5, 12, 7, 4)]
    if shared:  # a chat template's common start: prefilled once and copied to every row
        head = torch.randint(3, 250, (10,), generator=g).tolist()
        prompts = [head + p for p in prompts]
        assert shared_prefix(prompts) == 10 + (prompts[0][10] == prompts[1][10])
    ids, mask = left_pad(prompts, 0)
    free = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=10,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
        temperature=None,
        top_p=None,
        top_k=None,
    )[:, ids.shape[1] :]
    # end tokens that stop rows at different steps: what rows 0 and 2 produce at steps 1 and 5
    ends = {int(free[0, 1]), int(free[2, 5])}
    ref = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=10,
        do_sample=False,
        eos_token_id=sorted(ends),
        pad_token_id=0,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    want = [cut(row, ends) for row in ref[:, ids.shape[1] :].tolist()]
    got = pruned(model, prompts, 10, ends, 0)
    assert got == want
    lengths = {len(r) for r in got}
    assert len(lengths) > 1 and min(lengths) <= 1  # some replies ended early, others ran on


def test_a_generation_config_with_processors_keeps_generate(tiny):
    from hedit.engine.decoder import plain_greedy

    model, tok = tiny
    assert plain_greedy(model)
    model.generation_config.repetition_penalty = 1.3
    try:
        assert not plain_greedy(model)
        prompts = [tok("The capital of France is")["input_ids"], tok("Water")["input_ids"]]
        ends = end_ids(model, tok)
        ids, mask = left_pad(prompts, 0)
        ref = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=sorted(ends),
            temperature=None,
            top_p=None,
            top_k=None,
        )
        want = [tok.decode(cut(r, ends), skip_special_tokens=True).strip() for r in ref[:, ids.shape[1] :].tolist()]
        assert generate(model, tok, prompts, Decoding(max_new_tokens=6), ends) == want
    finally:
        model.generation_config.repetition_penalty = 1.0


def test_plain_prompts_end_replies_at_a_line_break(tiny):
    """A base model answers on one line and goes on with the next 'Question:': with plain prompts every
    token holding a line break ends the reply."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from hedit.engine.decoder import line_break_ids

    model, _ = tiny
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(), decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=alphabet)
    bpe.train_from_iterator(["Paris\nQuestion: what is it?\n\nAnswer: Lyon.\n"] * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="</s>", pad_token="<pad>", name_or_path="bpe")
    breaks = line_break_ids(tok)
    assert breaks == {i for i in range(len(tok)) if "\n" in tok.decode([i])} and len(breaks) >= 1
    assert tok.convert_tokens_to_ids("Ċ") in breaks  # the byte-level line break itself
    base = end_ids(model, tok)
    assert base == {2} and not base.soft
    plain = end_ids(model, tok, chat_template=False)
    assert plain == base and plain.soft == breaks
    assert end_ids(model, tok, chat_template=True).soft == breaks  # no template: a base model, plain prompts
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert not end_ids(model, tok, chat_template=True).soft
    # a line break ends a reply once it has begun; one before any answer does not
    nl = tok.convert_tokens_to_ids("Ċ")
    assert cut([nl, 40, 41, nl, 42], plain) == [nl, 40, 41] and cut([40, 2, nl], plain) == [40]
    assert cut([nl, nl], plain) == [nl, nl] and cut([40, nl], base) == [40, nl]


def test_the_decoder_lets_a_leading_line_break_pass():
    """Soft ends in the decoding loop: the same replies as `model.generate` run to full length and cut
    by the rule, for rows that begin with the soft token, hit it later, or never."""
    from hedit.engine.decoder import Ends
    from hedit.engine.decoder import greedy as pruned
    from hedit.model.tiny import tiny_model

    model = tiny_model("llama", seed=6)
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(3, 250, (n,), generator=g).tolist() for n in (5, 8, 3, 11)]
    free = pruned(model, prompts, 12, {9999}, 0)  # full length: no end token in a 256-word vocabulary
    ends = Ends({9999}, {free[0][0], free[1][3]})  # row 0 begins with a soft end; row 1 meets one later
    got = pruned(model, prompts, 12, ends, 0)
    assert got == [cut(r, ends) for r in free]
    assert got[0][0] == free[0][0] and len(got[0]) > 1  # the leading one let the reply go on
    assert len(got[1]) <= 3
    assert len({len(r) for r in got}) > 1


def test_sampler_near_greedy_equals_greedy_per_reply():
    """n replies per prompt from one prefill, finished ones leaving the batch: at a temperature near 0
    every reply is the greedy one of its prompt."""
    from hedit.engine.decoder import greedy as pruned
    from hedit.engine.decoder import sample
    from hedit.model.tiny import tiny_model

    model = tiny_model("llama", seed=4)
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(3, 250, (n,), generator=g).tolist() for n in (4, 10, 6)]
    free = pruned(model, prompts, 8, {9999}, 0)
    ends = {free[0][2], free[2][4]}
    want = pruned(model, prompts, 8, ends, 0)
    got = sample(model, prompts, 8, ends, 0, 3, 1e-4, 1.0, 0, seed=0)
    assert got == [w for w in want for _ in range(3)]
    assert len({len(w) for w in want}) > 1


def test_sampler_draws_from_the_warped_distribution():
    """First tokens of 6,000 replies against softmax(logits / T) cut to the top k and the top-p nucleus,
    computed here by hand: the total variation distance is sampling noise only. Same seed, same replies."""
    from hedit.engine.decoder import sample
    from hedit.model.tiny import tiny_model

    model = tiny_model("qwen3", seed=5)
    prompt = [5, 17, 33, 60]
    temperature, top_k, top_p, n = 1.7, 12, 0.8, 6000
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1].double() / temperature
    order = torch.argsort(logits, descending=True)[:top_k]
    probs = torch.softmax(logits[order], -1)
    keep = int((torch.cumsum(probs, 0) - probs < top_p).sum())  # smallest prefix with mass >= top_p
    expected = torch.zeros_like(logits)
    expected[order[:keep]] = probs[:keep] / probs[:keep].sum()
    got = sample(model, [prompt], 1, {9999}, 0, n, temperature, top_p, top_k, seed=1)
    counts = torch.bincount(torch.tensor([r[0] for r in got]), minlength=len(logits)).double() / n
    assert set(torch.nonzero(counts).flatten().tolist()) <= set(order[:keep].tolist())
    assert 0.5 * (counts - expected).abs().sum() < 0.03
    assert sample(model, [prompt], 3, {9999}, 0, 5, temperature, top_p, top_k, seed=7) == sample(
        model, [prompt], 3, {9999}, 0, 5, temperature, top_p, top_k, seed=7
    )


@pytest.mark.parametrize(
    "arch, kw",
    [("llama", {}), ("qwen3", {}), ("gemma3_text", {"sliding_window": 64}), ("phi3", {}), ("qwen3_5_text", {})],
)
def test_cells_in_one_batch_give_each_cells_replies(arch, kw):
    """A sweep decodes the prompts of several cells (neuron sets x alphas) in one batch: each reply must
    be the token list the decoder gives for that cell alone, with the shared start prefilled per cell and
    rows of every cell leaving at different steps."""
    from hedit.engine.decoder import decode
    from hedit.engine.intervention import CellScales, scale_neurons

    from conftest import neuron_set

    model = tiny_model_for(arch, **kw)
    g = torch.Generator().manual_seed(2)
    head = torch.randint(3, 250, (10,), generator=g).tolist()
    prompts = [head + torch.randint(3, 250, (n,), generator=g).tolist() for n in (3, 9, 5, 12)]
    ns = neuron_set(arch, per_layer=8)
    cells = [{}, ns.plan(0.0), ns.plan(3.0)]
    with torch.no_grad():
        free = decode(model, prompts, 10, set(), 0)
    ends = {free[0][1], free[2][5]}
    alone = []
    for layers in cells:
        with torch.no_grad(), scale_neurons(model, layers):
            alone.append(decode(model, prompts, 10, ends, 0))
    assert alone[0] != alone[1] and alone[0] != alone[2]  # the cells do differ
    rows = [(c, i) for c in range(len(cells)) for i in range(len(prompts))]
    with torch.no_grad(), CellScales(model, cells) as scales:
        got = decode(model, [prompts[i] for _, i in rows], 10, ends, 0, cells=(scales, [c for c, _ in rows]))
        some = decode(model, [prompts[3], prompts[0]], 10, ends, 0, cells=(scales, [2, 1]))  # a subset, any order
    assert got == [alone[c][i] for c, i in rows]
    assert some == [alone[2][3], alone[1][0]]
    assert len({len(r) for r in got}) > 1


def tiny_model_for(arch, **kw):
    from hedit.model.tiny import tiny_model

    return tiny_model(arch, seed=3, **kw)


def test_cells_need_greedy_on_a_transformers_model(tiny):
    from hedit.engine.intervention import CellScales
    from hedit.errors import HeditError

    model, tok = tiny
    with CellScales(model, [{}, {0: [(1, 0.0)]}]) as scales:
        with pytest.raises(HeditError, match="share a batch only in greedy decoding"):
            generate(model, tok, [[5, 6]], Decoding(sample=True), cells=(scales, [1]))
