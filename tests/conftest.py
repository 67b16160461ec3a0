"""Shared fixtures: tiny random checkpoints (built once per session) and neuron-set files."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from hedit.cli import main
from hedit.model.tiny import TEXT, random_neurons, save_tiny_model
from hedit.neurons import ModelInfo, Neuron, NeuronSet
from hedit.registry import architectures

ARCHS = sorted(k for k, a in architectures().items() if a.moe is None)  # dense families
MOE_ARCHS = sorted(k for k, a in architectures().items() if a.moe is not None)
LAYERS, INTER = TEXT["num_hidden_layers"], TEXT["intermediate_size"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HEDIT_CACHE", str(tmp_path_factory.mktemp("hedit-cache")))
    monkeypatch.setenv("HEDIT_ENGINE", "hf")  # engine "auto" would pick vLLM where .venv-vllm exists


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """checkpoint(model_type, dtype=float32, shards=False, tie=None) -> folder, built once per key."""
    made: dict[tuple, Path] = {}

    def make(
        model_type: str = "llama", dtype: torch.dtype = torch.float32, shards: bool = False, tie: bool | None = None
    ) -> Path:
        key = (model_type, dtype, shards, tie)
        if key not in made:
            path = tmp_path_factory.mktemp(f"{model_type}-{str(dtype)[6:]}{'-sharded' if shards else ''}")
            save_tiny_model(path, model_type, dtype, max_shard_size="40KB" if shards else None, tie_word_embeddings=tie)
            for p in path.iterdir():  # sources are read-only: any write to them fails loudly
                p.chmod(0o444)
            made[key] = path
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_chat(tmp_path_factory):
    """(path, model, tokenizer) of a read-only tiny Llama with a word-level tokenizer and chat template."""
    from hedit.model.load import load_model, load_tokenizer

    path = add_tokenizer(save_tiny_model(tmp_path_factory.mktemp("chat") / "m", "llama"))
    for p in path.iterdir():
        p.chmod(0o444)
    return path, load_model(path), load_tokenizer(path)


def neuron_set(
    model_type: str = "llama",
    per_layer: int = 4,
    layers=None,
    seed: int = 0,
    alpha: float | None = None,
    num_layers: int = LAYERS,
    inter: int = INTER,
) -> NeuronSet:
    pairs = random_neurons(num_layers, inter, per_layer, seed, layers)
    return NeuronSet(
        ModelInfo(model_type, num_layers, inter, f"tiny-{model_type}"),
        [Neuron(layer, index) for layer, index in pairs],
        alpha=alpha,
    )


@pytest.fixture
def neurons_file(tmp_path):
    """neurons_file(model_type, **kw) -> path of a neurons.json written for the tiny model."""

    def make(model_type: str = "llama", name: str = "neurons.json", **kw) -> Path:
        path = tmp_path / name
        neuron_set(model_type, **kw).save(path)
        return path

    return make


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def run_cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def leftovers(parent: Path) -> list[str]:
    """Temporary folders hedit left beside its outputs."""
    return [p for p in os.listdir(parent) if ".hedit-" in p]


def add_tokenizer(path: Path, fill: int = 0) -> Path:
    """Give a tiny checkpoint a real (word-level) tokenizer with a chat template, built offline.
    ``fill``: pad the vocabulary with made-up words up to that many ids, so that every token a tiny
    model draws decodes to a word (else most decode to nothing)."""
    import re

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from hedit.check.common import PROMPTS

    words = sorted(set(re.findall(r"\w+|[^\w\s]", " ".join(PROMPTS))))
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3} | {w: i + 4 for i, w in enumerate(words)}
    vocab |= {f"w{i}": i for i in range(len(vocab), fill)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    fast.save_pretrained(str(path))
    return path


def yes_no_questions(n: int = 40) -> list:
    """Questions whose one alias is "yes" (odd ones) or "no"; every fifth is held out. With ``yes_judge``
    a random model then answers both classes consistently."""
    from hedit.io.questions import Question

    return [
        Question(f"q{i:02d}", f"Water boils {i}", ("yes" if i % 2 else "no",), "heldout" if i % 5 == 0 else "train")
        for i in range(n)
    ]


def write_questions(path: Path, questions) -> Path:
    """A flat-schema JSONL question file."""
    import json

    rows = [
        {"question_id": q.qid, "question": q.question, "answers": list(q.aliases), "split": q.split} for q in questions
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def yes_judge(monkeypatch):
    """The rule judge's trivia verdict replaced: an answer is correct when the question's alias is "yes"."""
    import hedit.score.compliance

    monkeypatch.setattr(
        hedit.score.compliance.RuleJudge,
        "qa",
        lambda self, q, aliases, text: "correct" if aliases[0] == "yes" else "incorrect",
    )


@contextlib.contextmanager
def small_disk(where: Path, size: str):
    """A tmpfs of ``size`` mounted at ``where`` (made here), unmounted after; skips where mounting is not
    allowed (hedit's tests run as root here, and in CI)."""
    import subprocess

    where.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    ).returncode:
        pytest.skip("mounting a small tmpfs is not allowed here")
    try:
        yield where
    finally:
        _unmount(where)


@contextlib.contextmanager
def reflink_disk(where: Path, size_mb: int = 300):
    """An XFS filesystem with reflink (file clones), from an image loop-mounted at ``where``; skips where
    that cannot be made (no root, no mkfs.xfs: ``apt-get install xfsprogs``; ``.ci/run`` installs it)."""
    import shutil
    import subprocess

    if shutil.which("mkfs.xfs") is None:
        pytest.skip("no mkfs.xfs (apt-get install xfsprogs) to make a reflink filesystem")
    image = where.with_suffix(".img")
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    where.mkdir()
    made = subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image)], capture_output=True)
    if (
        made.returncode
        or subprocess.run(["mount", "-o", "loop", str(image), str(where)], capture_output=True).returncode
    ):
        image.unlink()
        pytest.skip("cannot make and loop-mount an XFS image here")
    try:
        yield where
    finally:
        _unmount(where)
        image.unlink(missing_ok=True)


def _unmount(where: Path) -> None:
    """Unmount ``where``, retrying while a just-closed file still holds it busy."""
    import subprocess
    import time

    for _ in range(20):
        if subprocess.run(["umount", str(where)], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)


LLAMA_PYTHON = os.environ.get("HEDIT_LLAMA_PYTHON") or (
    ".venv-llama/bin/python" if Path(".venv-llama/bin/python").is_file() else None
)
LLAMA_WORKER = Path(__file__).parent / "workers" / "llama_logits.py"
# llama.cpp's own converter from the same release (`make llama-env` unpacks it beside the environment)
LLAMA_CONVERT = Path(os.environ.get("HEDIT_LLAMA_CONVERT") or ".venv-llama/convert/convert_hf_to_gguf.py")


def llama_logits(models: list, ids: list[int], tmp_path: Path, python: str | None = None) -> list:
    """llama.cpp's logits [positions, vocab] (float64 numpy) for ``ids`` under each model: a GGUF path, or
    {"path", "lora", "scale"} for a GGUF LoRA adapter at a scale (``tests/workers/llama_logits.py`` in the
    llama.cpp environment)."""
    import json
    import subprocess

    import numpy as np

    req, res = tmp_path / "llama-req.json", tmp_path / "llama-res.json"
    spec = [{k: str(v) if k != "scale" else v for k, v in m.items()} if isinstance(m, dict) else str(m) for m in models]
    req.write_text(json.dumps({"models": spec, "ids": ids}))
    r = subprocess.run(
        [python or LLAMA_PYTHON, str(LLAMA_WORKER), str(req), str(res)], capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return [np.array(x, dtype=np.float64) for x in json.loads(res.read_text())["logits"]]
