import hedit.demo
from hedit.questions import bundled_questions


def test_demo_settings_and_question_mix():
    """The demo's own settings; the full demo run (minutes, the real model) is `make demo`."""
    cfg = hedit.demo.DEMO
    assert (cfg.sampling.samples, cfg.sampling.temperature, cfg.mode) == (5, 0.7, "3-vs-1")
    qs = bundled_questions()[: hedit.demo.QUESTIONS]
    assert len(qs) == hedit.demo.QUESTIONS
    assert len({q.domain for q in qs}) >= 12  # the bundled order mixes domains, so a prefix does too
    assert {q.split for q in qs} == {"train", "heldout"}
