import pytest
import torch

from hedit.check.verify import greedy
from hedit.errors import HeditError
from hedit.measure.generate import Decoding, chat_ids, cut, end_ids, generate, left_pad
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


def test_chat_ids_with_and_without_template(tiny):
    _, tok = tiny
    msgs = [{"role": "user", "content": "Water boils"}]
    assert tok.decode(chat_ids(tok, msgs)) == tok.decode(tok("user: Water boils\n")["input_ids"])
    assert chat_ids(tok, msgs, chat_template=False) == tok("Question: Water boils\nAnswer:")["input_ids"]
    tok2 = type(tok).from_pretrained(tok.name_or_path)
    tok2.chat_template = None
    with pytest.raises(HeditError, match="no chat template"):
        chat_ids(tok2, msgs)


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
