import pytest

from hedit.find.spans import alias_char_span, answer_positions, content_positions
from hedit.model.tiny import save_tiny_model

from conftest import add_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from hedit.model.load import load_tokenizer

    return load_tokenizer(add_tokenizer(save_tiny_model(tmp_path_factory.mktemp("t") / "m", "llama")))


def test_alias_char_span():
    text = "The capital of France is Paris."
    assert text[slice(*alias_char_span(text, "Paris"))] == "Paris"
    assert alias_char_span("Parisian", "Paris") is None
    t = "It was Charlotte Brontë, in 1847"
    assert t[slice(*alias_char_span(t, "charlotte bronte"))] == "Charlotte Brontë"
    t = "Washington D.C. is the capital"
    assert t[slice(*alias_char_span(t, "Washington, D.C."))] == "Washington D.C"
    assert alias_char_span("x", "!!!") is None


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_correct_answer_is_the_alias_tokens(tok):
    ids = ids_of(tok, "Who wrote Romeo and Juliet ?")  # every word is in the test vocabulary
    pos = answer_positions(tok, ids, "correct", "Romeo and Juliet")
    assert [tok.decode([ids[k]]) for k in pos] == ["Romeo", "and", "Juliet"]
    assert [tok.decode([ids[k]]) for k in answer_positions(tok, ids, "correct", "juliet")] == ["Juliet"]


def test_wrong_answer_is_the_claim_without_filler_echo_or_special(tok):
    ids = ids_of(tok, "The largest planet is Juliet ?") + [tok.eos_token_id]
    pos = content_positions(tok, ids)
    assert [tok.decode([ids[k]]) for k in pos] == ["The", "largest", "planet", "is", "Juliet"]
    question = "What is the largest planet in the solar system?"
    claim = answer_positions(tok, ids, "incorrect", None, question)
    assert [tok.decode([ids[k]]) for k in claim] == ["Juliet"]  # echo and function words dropped
    # a correct label whose alias is not found falls back to the same rule
    assert answer_positions(tok, ids, "correct", "Paris", question) == claim
    # nothing but echo left: the content tokens
    echo = ids_of(tok, "The largest planet")
    assert answer_positions(tok, echo, "incorrect", None, question) == [0, 1, 2]
