import pytest
import torch

from hedit.engine.decoder import Decoding
from hedit.engine.intervention import scale_neurons
from hedit.score.capability import accuracy, mean_kl, neutral_texts, next_token_logprobs, qa_accuracy


def test_mean_kl_matches_torch_kl_div():
    g = torch.Generator().manual_seed(0)
    p = [torch.log_softmax(torch.randn(5, 11, generator=g), -1), torch.log_softmax(torch.randn(3, 11, generator=g), -1)]
    q = [torch.log_softmax(torch.randn(5, 11, generator=g), -1), torch.log_softmax(torch.randn(3, 11, generator=g), -1)]
    want = sum(torch.nn.functional.kl_div(b, a, log_target=True, reduction="sum").item() for a, b in zip(p, q)) / 8
    assert mean_kl(p, q) == pytest.approx(want, rel=1e-5)
    assert mean_kl(p, p) == 0.0


def test_padded_batches_give_each_text_its_own_distributions(tiny_chat):
    _, model, tok = tiny_chat
    texts = ["The capital of France is", "Water", "The largest planet in the solar system is"]
    batched = next_token_logprobs(model, tok, texts, batch_size=3)
    for t, lp in zip(texts, batched):
        alone = next_token_logprobs(model, tok, [t], batch_size=1)[0]
        assert lp.shape == alone.shape and (lp - alone).abs().max() < 1e-5


def test_kl_is_zero_unedited_and_grows_with_the_edit(tiny_chat):
    _, model, tok = tiny_chat
    texts = neutral_texts()[:6]
    ref = next_token_logprobs(model, tok, texts)
    layers = {1: [(i, 0.0) for i in range(0, 96, 2)]}
    with scale_neurons(model, layers):
        silenced = mean_kl(ref, next_token_logprobs(model, tok, texts))
    with scale_neurons(model, {1: [(i, 0.9) for i in range(0, 96, 2)]}):
        slight = mean_kl(ref, next_token_logprobs(model, tok, texts))
    assert mean_kl(ref, next_token_logprobs(model, tok, texts)) < 1e-10
    assert silenced > slight > 0


def test_neutral_texts_are_bundled():
    from hedit.io.questions import bundled_questions

    texts = neutral_texts()
    assert len(set(texts)) == len(texts) and all(len(t.split()) >= 8 for t in texts)
    questions = {q.question for q in bundled_questions("heldout")}
    assert not questions & set(texts)  # everyday prose, not the trivia it is measured beside


def test_qa_accuracy_counts_alias_matches(tiny_chat, monkeypatch):
    _, model, tok = tiny_chat
    import hedit.score.capability as cap

    replies = iter(["Paris", "I think it is Lyon", "paris, France"])
    monkeypatch.setattr(cap, "generate_cells", lambda m, t, prompts, *a, **k: [next(replies) for _ in prompts])
    qs = [("Capital of France?", ["Paris"])] * 3
    assert qa_accuracy(model, tok, qs, dec=Decoding(max_new_tokens=2)) == pytest.approx(2 / 3)
    assert accuracy(["correct", "incorrect", "uncertain", "correct"]) == 0.5
