"""Engine choice, made once per command: by job and device from the measured figures (on CPU vLLM's
start-up and speed lose to hedit's decoder), printed with the job's size as part of its reason;
``$HEDIT_ENGINE`` and ``--engine`` override ``auto``."""

from __future__ import annotations

import pytest

from hedit.config import EngineConfig
from hedit.engine.choice import choose_engine
from hedit.errors import HeditError


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """A vLLM environment as choose_engine finds one (a Python file); nothing is started."""
    monkeypatch.delenv("HEDIT_ENGINE", raising=False)
    python = tmp_path / "python"
    python.write_text("")
    return str(python)


def test_auto_picks_by_job_and_device(fake_vllm):
    auto = EngineConfig(vllm_python=fake_vllm)
    small, big = choose_engine("sample", auto, "cpu", 640), choose_engine("sample", auto, "cpu", 10**8)
    assert (small.kind, small.engine_id) == ("hf", None) and "640 tokens" in small.describe()
    assert big.kind == "hf" and "never pays its start-up back" in big.why  # on CPU vLLM loses at any size
    gpu = choose_engine("sample", auto, "cuda", 10)
    assert (gpu.kind, gpu.dtype, gpu.python, gpu.engine_id) == ("vllm", "auto", fake_vllm, "vllm:auto")
    assert choose_engine("sweep", auto, "cpu", 10**9).kind == "hf"
    assert choose_engine("sweep", auto, "cuda")[:2] == ("vllm", "float32")
    assert choose_engine("sample", EngineConfig(vllm_python=fake_vllm + "-missing"), "cpu").kind == "hf"


def test_asked_engines_win_over_size(fake_vllm, monkeypatch):
    asked = choose_engine("sample", EngineConfig(engine="vllm", vllm_python=fake_vllm), "cpu", 1)
    assert asked.kind == "vllm" and "asked for (--engine vllm)" in asked.describe()
    monkeypatch.setenv("HEDIT_ENGINE", "hf")
    site = choose_engine("sample", EngineConfig(vllm_python=fake_vllm), "cpu", 10**9)
    assert site.kind == "hf" and "$HEDIT_ENGINE=hf" in site.why
    with pytest.raises(HeditError, match="no vLLM environment found"):
        choose_engine("sample", EngineConfig(engine="vllm", vllm_python=fake_vllm + "-missing"), "cpu")
