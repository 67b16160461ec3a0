import hedit.find.collect
import hedit.run.demo
import hedit.score.compliance
from hedit.find.identify import IdentifyConfig
from hedit.io.questions import bundled_questions
from hedit.model.tiny import save_tiny_model

from conftest import add_tokenizer


def test_demo_pipeline_on_a_tiny_model(tmp_path, monkeypatch, capsys):
    """The whole demo (identify, edit, LoRA, verify) on a tiny model; `make demo` runs it on SmolLM2.
    The judge is replaced so that a random model gives both classes."""
    monkeypatch.setattr(
        hedit.score.compliance.RuleJudge,
        "qa",
        lambda self, q, aliases, text: "correct" if len(aliases[0]) % 2 else "incorrect",
    )
    model = add_tokenizer(save_tiny_model(tmp_path / "m", "llama"))
    cfg = IdentifyConfig(samples=2, max_new_tokens=4, batch_size=16, random_draws=2)
    assert hedit.run.demo.main(str(tmp_path / "demo"), 40, str(model), cfg, progress=False) == 0
    out = capsys.readouterr().out
    assert out.count("PASS: max abs logit diff") == 2 and "FAIL" not in out and "H-neurons (" in out and "AUROC " in out
    for p in ("identify/neurons.json", "identify/c_sweep.png", "edited/hedit.json", "lora/adapter_config.json"):
        assert (tmp_path / "demo" / p).exists(), p


def test_demo_questions_mix_domains_and_hold_out_every_heldout_question(tmp_path):
    qs = hedit.run.demo.demo_questions()
    held = bundled_questions("heldout")
    assert qs[: len(held)] == held and len(qs) == len(held) + hedit.run.demo.TRAIN_QUESTIONS
    assert len({q.domain for q in qs}) >= 12 and {q.split for q in qs[len(held) :]} == {"train"}
    # every consistent answer is kept (the demo's questions run 3 to 1 correct): no balancing draw
    rec = [{"question_id": f"q{i}", "samples": [{"label": "correct" if i % 4 else "incorrect"}] * 2} for i in range(40)]
    kept = hedit.find.collect.write_filtered(
        tmp_path / "f.jsonl", {"_hedit": "responses"}, rec, hedit.run.demo.DEMO.balance
    )
    assert len(kept) == 40 and sum(r["class"] == "hallucinated" for r in kept) == 10
