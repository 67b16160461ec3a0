"""The rule judge on hand-labelled responses."""

import pytest

from hedit.score.judge import CORRECT, INCORRECT, UNCERTAIN, judge, matched_alias, normalize


def test_normalize():
    assert normalize("The  Brontë Sisters!") == "bronte sisters"
    assert normalize("Washington, D.C.") == "washington d c"
    assert normalize("An Apple a day") == "apple day"


@pytest.mark.parametrize(
    "response, aliases, label",
    [
        ("Paris", ["Paris"], CORRECT),
        ("The capital of France is Paris.", ["Paris"], CORRECT),
        ("paris<|im_end|>", ["Paris"], CORRECT),
        ("Charlotte Brontë", ["Charlotte Bronte"], CORRECT),
        ("It was written by Jane Austen in 1813.", ["Jane Austen", "Austen"], CORRECT),
        ("Lyon", ["Paris"], INCORRECT),
        ("Australia", ["Au"], INCORRECT),  # no match inside a word
        ("The symbol is Au.", ["Au"], CORRECT),
        ("Parisian cafes", ["Paris"], INCORRECT),
        ("1945", ["1945"], CORRECT),
        ("It ended in 1944.", ["1945"], INCORRECT),
        ("I don't know.", ["Paris"], UNCERTAIN),
        ("I'm not sure, maybe Lyon?", ["Paris"], UNCERTAIN),
        ("I’m sorry, I cannot answer that.", ["Paris"], UNCERTAIN),
        ("", ["Paris"], UNCERTAIN),
        ("  ", ["Paris"], UNCERTAIN),
        ("Not sure, but I think it is Paris.", ["Paris"], CORRECT),  # a correct answer wins over hedging
    ],
)
def test_labelled_responses(response, aliases, label):
    assert judge(response, aliases) == label


def test_longest_alias_is_reported():
    assert matched_alias("Leonardo da Vinci painted it", ["Leonardo", "Leonardo da Vinci"]) == "Leonardo da Vinci"
    assert matched_alias("nothing", ["x"]) is None


@pytest.mark.parametrize(
    "response, label",
    [
        ("Halvard Quennick does not exist.", CORRECT),
        ("I couldn't find any record of a painter by that name.", CORRECT),
        ("I'm not aware of such a person.", CORRECT),
        ("That appears to be a fictional place.", CORRECT),
        ("I don’t know.", CORRECT),
        ("", CORRECT),
        ("He completed them in 1887.", INCORRECT),
        ("The violin.", INCORRECT),
        ("Oxford University", INCORRECT),
    ],
)
def test_unanswerable_questions_reward_declining(response, label):
    """A question about something that does not exist has no aliases: declining is faithful, any
    answer is a hallucination, and nothing is left UNCERTAIN."""
    assert judge(response, []) == label
