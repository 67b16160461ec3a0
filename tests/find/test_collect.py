import json

import pytest

import hedit.find.collect as collect_mod
from hedit.errors import HeditError
from hedit.find.collect import SamplingConfig, balance, build_prompt, class_counts, collect, consistent, read_responses
from hedit.io.questions import Question
from hedit.model.load import load_model, load_tokenizer
from hedit.model.tiny import save_tiny_model
from hedit.score.judge import declines

from conftest import add_tokenizer, run_cli

QS = [Question(f"q{i}", f"What is the capital of France {i}", ("Paris",)) for i in range(7)]
CFG = SamplingConfig(samples=3, max_new_tokens=5)


def test_collect_writes_prompts_responses_and_labels(tiny_chat, tmp_path):
    path, model, tok = tiny_chat
    out = collect(model, tok, QS, tmp_path / "r.jsonl", CFG, batch_size=3, progress=False)
    header, recs = read_responses(out)
    assert header["config"]["samples"] == 3 and header["config"]["top_k"] == 50
    assert [r["question_id"] for r in recs] == [q.qid for q in QS]
    for r, q in zip(recs, QS):
        assert r["prompt_ids"] == build_prompt(tok, q.question, CFG)
        assert len(r["samples"]) == 3
        for s in r["samples"]:
            assert 0 < len(s["response_ids"]) <= 5 and s["label"] in ("correct", "incorrect", "uncertain")
            assert s["response"] == tok.decode(s["response_ids"], skip_special_tokens=True)


def test_left_padding_gives_the_same_samples_as_unpadded(tiny_chat):
    """A short prompt batched with a long one decodes like the short prompt alone (same seed)."""
    path, model, tok = tiny_chat
    cfg = SamplingConfig(samples=1, max_new_tokens=4, temperature=1e-4)  # near-greedy: padding must not matter
    short = build_prompt(tok, "Paris", cfg)
    long = build_prompt(tok, "What is the capital of France ? Water boils", cfg)
    ends = collect_mod.end_ids(model, tok)
    tok.padding_side = "left"
    alone = collect_mod.sample_batch(model, tok, [short], cfg, 0, ends)[0]
    batched = collect_mod.sample_batch(model, tok, [long, short], cfg, 0, ends)[1]
    assert alone == batched


def test_same_seed_same_samples(tiny_chat, tmp_path):
    _, model, tok = tiny_chat
    a = collect(model, tok, QS[:3], tmp_path / "a.jsonl", CFG, progress=False)
    b = collect(model, tok, QS[:3], tmp_path / "b.jsonl", CFG, progress=False)
    assert read_responses(a)[1] == read_responses(b)[1]


def test_resume_after_interruption(tiny_chat, tmp_path, monkeypatch):
    _, model, tok = tiny_chat
    out = tmp_path / "r.jsonl"
    real, calls = collect_mod.sample_batch, []

    def dies_on_second_batch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(collect_mod, "sample_batch", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        collect(model, tok, QS, out, CFG, batch_size=3, progress=False)
    first = read_responses(out)[1]
    assert [r["question_id"] for r in first] == ["q0", "q1", "q2"]  # only the batch in flight is lost
    with open(out, "a") as f:
        f.write('{"question_id": "q3", "trunc')  # a torn write from a crash
    monkeypatch.setattr(collect_mod, "sample_batch", real)
    collect(model, tok, QS, out, CFG, batch_size=3, progress=False)
    header, recs = read_responses(out)
    assert [r["question_id"] for r in recs] == [q.qid for q in QS]
    assert recs[:3] == first and out.read_text().count('"_hedit"') == 1


def test_other_settings_refuse_to_resume(tiny_chat, tmp_path):
    _, model, tok = tiny_chat
    collect(model, tok, QS[:1], tmp_path / "r.jsonl", CFG, progress=False)
    with pytest.raises(HeditError, match="collected with other settings"):
        collect(model, tok, QS[:1], tmp_path / "r.jsonl", SamplingConfig(samples=2), progress=False)


def test_a_journal_of_another_model_is_never_appended_to(tiny_chat, tmp_path):
    """The same settings and questions, another model (a fine-tune: same shape, other weights): the
    rerun is refused before it samples, and the journal keeps only the first model's answers."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    path, _, _ = tiny_chat
    other = tmp_path / "other"
    shutil.copytree(path, other)
    for p in other.iterdir():
        p.chmod(0o644)
    weights = load_file(other / "model.safetensors")
    save_file({k: v + 0.01 * torch.ones_like(v) for k, v in weights.items()}, other / "model.safetensors")
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps({"question": q.question, "answers": list(q.aliases)}) + "\n" for q in QS))
    out = tmp_path / "r.jsonl"
    args = ["--questions", qfile, "--out", out, "--samples", "2", "--max-new-tokens", "3", "--quiet"]
    assert run_cli("collect", path, *args, "--limit", "3").exit_code == 0
    before = out.read_bytes()
    r = run_cli("collect", other, *args)
    assert r.exit_code == 1 and "was collected with another model" in r.stderr, r.stderr
    assert out.read_bytes() == before
    assert run_cli("collect", path, *args).exit_code == 0  # the same model resumes
    header, recs = read_responses(out)
    assert len(recs) == len(QS) and header["model_id"] == collect_mod.fingerprint(path)


def test_two_writers_of_one_journal_are_refused(tiny_chat, tmp_path):
    """While one run holds the journal, a second is refused at once (no waiting, nothing written); a
    run that failed before its first answer leaves no file."""
    import fcntl

    path, model, tok = tiny_chat
    out = tmp_path / "r.jsonl"
    collect(model, tok, QS[:1], out, CFG, progress=False)
    before = out.read_bytes()
    with open(out, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(HeditError, match="another hedit run is writing"):
            collect(model, tok, QS, out, CFG, progress=False)
    assert out.read_bytes() == before
    fresh = tmp_path / "fresh.jsonl"

    def judge_fails(*a):
        raise HeditError("judge down")

    class Judge:
        name = "broken"
        qa = staticmethod(judge_fails)

    with pytest.raises(HeditError, match="judge down"):
        collect(model, tok, QS, fresh, CFG, progress=False, grader=Judge())
    assert not fresh.exists()


def test_no_chat_template(tmp_path):
    path = save_tiny_model(tmp_path / "m", "llama")
    add_tokenizer(path)
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))
    for f in path.glob("chat_template*"):
        f.unlink()
    tok = load_tokenizer(path)
    plain = tok("Question: Water " + CFG.suffix + "\nAnswer:")["input_ids"]
    assert build_prompt(tok, "Water", SamplingConfig(chat_template=False)) == plain
    assert build_prompt(tok, "Water", SamplingConfig()) == plain  # a base model: plain text without asking


def rec(qid, labels):
    return {"question_id": qid, "samples": [{"label": lab} for lab in labels]}


def test_consistency_filter_and_balance():
    recs = [
        rec("a", ["correct"] * 3),
        rec("b", ["incorrect"] * 3),
        rec("c", ["correct", "incorrect", "correct"]),
        rec("d", ["incorrect", "uncertain", "incorrect"]),
        rec("e", ["correct"] * 3),
        rec("f", ["correct"] * 3),
    ]
    kept = consistent(recs)
    assert [(r["question_id"], r["class"]) for r in kept] == [
        ("a", "correct"),
        ("b", "hallucinated"),
        ("e", "correct"),
        ("f", "correct"),
    ]
    bal = balance(kept, seed=1)
    assert class_counts(bal) == {"correct": 1, "hallucinated": 1}
    assert "b" in [r["question_id"] for r in bal]  # the only hallucinated question is always kept
    assert balance(kept, seed=1) == bal  # seeded


def test_cli_collect_and_filter(tiny_chat, tmp_path):
    path, _, _ = tiny_chat
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps({"question": q.question, "answers": list(q.aliases)}) + "\n" for q in QS[:2]))
    r = run_cli(
        "collect",
        path,
        "--questions",
        qfile,
        "--out",
        tmp_path / "r.jsonl",
        "--samples",
        "2",
        "--max-new-tokens",
        "3",
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    assert len(read_responses(tmp_path / "r.jsonl")[1]) == 2
    r = run_cli("filter", tmp_path / "r.jsonl", "--out", tmp_path / "f.jsonl")
    assert r.exit_code == 0 and "kept" in r.stdout
    r = run_cli("collect", tmp_path / "nope", "--out", tmp_path / "x.jsonl")
    assert r.exit_code == 1 and "model not found" in r.stderr


@pytest.mark.slow
def test_embedded_model_collect_on_a_few_questions(tmp_path):
    """The real embedded SmolLM2: converted from its GGUF, it answers easy questions, mostly right."""
    from hedit.model.builtin import resolve_model

    path = resolve_model("smollm2-135m-instruct")
    assert (path / "chat_template.jinja").exists() or "chat_template" in (path / "tokenizer_config.json").read_text()
    model, tok = load_model(path), load_tokenizer(path)
    qs = [
        Question("fr", "What is the capital of France?", ("Paris",)),
        Question("jp", "What is the capital of Japan?", ("Tokyo",)),
    ]
    out = collect(model, tok, qs, tmp_path / "r.jsonl", SamplingConfig(samples=4, max_new_tokens=20), progress=False)
    recs = read_responses(out)[1]
    labels = [s["label"] for r in recs for s in r["samples"]]
    assert labels.count("correct") >= 4  # it knows these; sampling at temperature 1 makes some miss


def test_cli_collect_on_the_bundled_fabricated_set(tiny_chat, tmp_path):
    """`--questions fabricated`: questions about things that do not exist, judged without aliases, so
    a sample is correct (declined) or incorrect (answered) and never uncertain."""
    path, _, tok = tiny_chat
    r = run_cli(
        "collect",
        path,
        "--questions",
        "fabricated",
        "--limit",
        "3",
        "--out",
        tmp_path / "r.jsonl",
        "--samples",
        "2",
        "--max-new-tokens",
        "4",
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    header, recs = read_responses(tmp_path / "r.jsonl")
    assert [x["question_id"] for x in recs] == ["fab-001", "fab-002", "fab-003"]  # train split first
    for x in recs:
        for s in x["samples"]:
            assert s["label"] == ("correct" if declines(s["response"]) else "incorrect")
