"""Generation through vLLM (its own environment, one engine per command): collect's samples keep their
token ids and resume, and a sweep's cells, each an exact LoRA, give the transformers intervention's greedy
replies in float32."""

from __future__ import annotations

import json
import os

import pytest

from hedit.config import EngineConfig, SamplingConfig, SweepConfig
from hedit.engine.vllm import find_vllm_python
from hedit.errors import HeditError
from hedit.find.collect import collect_model, read_responses
from hedit.io.questions import Question
from hedit.measure.sweep import run_sweep
from hedit.model.tiny import save_tiny_model

from conftest import add_tokenizer, neuron_set

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def vllm_python():
    try:
        return find_vllm_python()
    except HeditError as e:
        if os.environ.get("HEDIT_REQUIRE_VLLM") == "1":
            pytest.fail(str(e))
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    # vLLM's CPU attention needs a head size it has kernels for (64)
    path = save_tiny_model(
        tmp_path_factory.mktemp("engines") / "m",
        "llama",
        hidden_size=128,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
    )
    return add_tokenizer(path)


QS = [Question(f"q{i}", f"The capital of France is {i}", ("Paris",)) for i in range(6)]
VLLM32 = EngineConfig(engine="vllm", engine_dtype="float32")


def test_collect_through_vllm_matches_transformers_near_greedy(vllm_python, chat_model, tmp_path):
    """(Resuming is the journal's, shared by both engines: tests/find/test_collect.py.)"""
    cfg = SamplingConfig(samples=2, temperature=1e-5, max_new_tokens=6)  # sampling this cold is greedy
    hf, vl = tmp_path / "hf.jsonl", tmp_path / "vllm.jsonl"
    collect_model(str(chat_model), QS, hf, cfg, 3, progress=False, engine=EngineConfig(engine="hf"), log=lambda m: None)
    collect_model(str(chat_model), QS, vl, cfg, 3, progress=False, engine=VLLM32, log=lambda m: None)
    (h_head, h), (v_head, v) = read_responses(hf), read_responses(vl)
    assert v_head["config"]["engine"] == "vllm:float32" and "engine" not in h_head["config"]
    assert [r["question_id"] for r in v] == [q.qid for q in QS]
    for a, b in zip(h, v):
        assert a["prompt_ids"] == b["prompt_ids"]
        assert [s["response_ids"] for s in a["samples"]] == [s["response_ids"] for s in b["samples"]]


def test_sweep_cells_as_loras_in_vllm_equal_the_intervention(vllm_python, chat_model, tmp_path, monkeypatch):
    ns = neuron_set("llama", per_layer=6)
    cfg = SweepConfig(
        alphas=(0.0, 1.0),
        controls=1,
        limit=4,
        max_new_tokens=8,
        batch_size=4,
        suites=("false-premise",),
        capability=False,
    )
    run_sweep(
        str(chat_model), ns, tmp_path / "hf", cfg, progress=False, log=lambda m: None, engine=EngineConfig(engine="hf")
    )
    run_sweep(str(chat_model), ns, tmp_path / "vllm", cfg, progress=False, log=lambda m: None, engine=VLLM32)
    import hedit.measure.sweep as sweep_mod

    monkeypatch.setattr(sweep_mod, "mix_adapters", lambda device: True)  # what CUDA does: cells share batches
    run_sweep(str(chat_model), ns, tmp_path / "mixed", cfg, progress=False, log=lambda m: None, engine=VLLM32)

    def replies(folder):
        lines = (folder / "cells.jsonl").read_text().splitlines()[1:]
        return {(c["set"], c["alpha"]): [i["replies"] for i in c["items"]] for c in map(json.loads, lines)}

    hf, vl, mixed = replies(tmp_path / "hf"), replies(tmp_path / "vllm"), replies(tmp_path / "mixed")
    assert set(hf) == set(vl) == {("base", 1.0), ("h", 0.0), ("control-0", 0.0)}
    assert hf == vl == mixed
    assert hf[("h", 0.0)] != hf[("base", 1.0)]  # the edit changes replies: the equality is not vacuous
