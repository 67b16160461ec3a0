"""Property-based fuzzing of every parser of untrusted bytes: whatever the input, the result is a valid
object or a HeditError, never another exception."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hedit.config import IdentifyConfig, SweepConfig
from hedit.errors import HeditError
from hedit.io.checkpoint import weight_files
from hedit.io.gguf_header import read_gguf_header
from hedit.io.journal import CHECKS, read_journal
from hedit.io.questions import load_questions, parse_row
from hedit.io.safetensors_header import parse_header
from hedit.neurons import NeuronSet
from hedit.run.recipe import load_recipe

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=20
)


def valid_or_hedit(fn, *args):
    try:
        return fn(*args)
    except HeditError:
        return None


def near(valid: dict, keys_from: dict) -> st.SearchStrategy:
    """Dictionaries like ``valid`` with some values replaced, some keys dropped or added."""
    return st.fixed_dictionaries({}, optional={k: json_values | st.just(v) for k, v in valid.items()}) | st.builds(
        lambda extra, base: {**base, **extra},
        st.dictionaries(st.text(max_size=6), json_values, max_size=2),
        st.just(valid),
    )


NEURONS = {
    "format": "hedit.neurons",
    "version": 1,
    "model": {"model_type": "llama", "num_layers": 3, "intermediate_size": 96},
    "alpha": 0.5,
    "neurons": [{"layer": 1, "index": 4, "alpha": 0.0, "weight": 1.0}],
    "provenance": {},
}


@FUZZ
@given(
    st.one_of(
        json_values,
        near(NEURONS, NEURONS),
        st.builds(
            lambda m, n: {**NEURONS, "model": m, "neurons": n},
            near(NEURONS["model"], {}),
            st.lists(near(NEURONS["neurons"][0], {}), max_size=3),
        ),
    )
)
def test_neurons_file(data):
    ns = valid_or_hedit(NeuronSet.from_dict, data)
    if ns is not None:
        ns.check_indices()
        assert NeuronSet.from_dict(ns.to_dict()).to_dict() == ns.to_dict()


@FUZZ
@given(
    st.binary(max_size=300)
    | st.builds(lambda d: json.dumps(d).encode(), json_values)
    | st.builds(
        lambda e: json.dumps({"w": e}).encode(), near({"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, {})
    )
)
def test_safetensors_header(raw):
    r = valid_or_hedit(parse_header, raw, 8 + len(raw) + 64, "x.safetensors")
    if r is not None:
        tensors, meta, start = r
        assert all(start <= t.start <= t.end <= 8 + len(raw) + 64 for t in tensors.values())


@FUZZ
@given(
    json_values
    | st.builds(
        lambda m: {"weight_map": m},
        st.dictionaries(
            st.text(max_size=5),
            json_values | st.sampled_from(["../x.safetensors", "/etc/passwd", "a.safetensors"]),
            max_size=3,
        ),
    )
)
def test_safetensors_index(data):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "a.safetensors").write_bytes(b"")
        (Path(d) / "model.safetensors.index.json").write_text(json.dumps(data))
        files = valid_or_hedit(weight_files, Path(d))
        if files is not None:
            assert all((Path(d) / f).resolve().parent == Path(d).resolve() for f in files)


def _gguf_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        w = gguf.GGUFWriter(str(Path(d) / "m.gguf"), "llama")
        w.add_block_count(1)
        w.add_feed_forward_length(32)
        w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
        w.add_tensor("blk.0.ffn_down.weight", np.ones((4, 32), dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return (Path(d) / "m.gguf").read_bytes()


GGUF = _gguf_bytes()


@FUZZ
@given(
    st.binary(max_size=200)
    | st.builds(
        lambda pos, val: GGUF[:pos] + bytes([val]) + GGUF[pos + 1 :], st.integers(0, len(GGUF) - 1), st.integers(0, 255)
    )
    | st.builds(lambda n: GGUF[:n], st.integers(0, len(GGUF)))
    | st.builds(
        lambda pos, val: GGUF[:pos] + struct.pack("<Q", val) + GGUF[pos + 8 :],
        st.integers(0, 200),
        st.integers(0, 2**64 - 1),
    )
)
def test_gguf_header(raw):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.gguf"
        p.write_bytes(raw)
        h = valid_or_hedit(read_gguf_header, p)
        if h is not None:
            assert all(t.offset + t.n_bytes <= len(raw) for t in h.tensors.values())


ROW = {"question": "Q?", "question_id": "q1", "answers": ["a"], "answer": {"aliases": ["b"]}, "split": "train"}


@FUZZ
@given(json_values | near(ROW, ROW))
def test_question_rows(row):
    q = valid_or_hedit(parse_row, row, "f:1", 1)
    if q is not None:
        assert q.question and q.aliases and all(isinstance(a, str) for a in q.aliases)


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode), st.sampled_from([".jsonl", ".csv"]))
def test_question_files(raw, suffix):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"q{suffix}"
        p.write_bytes(raw)
        valid_or_hedit(load_questions, p)


@FUZZ
@given(
    st.text(max_size=300)
    | st.builds(lambda d: json.dumps(d), json_values)
    | st.builds(
        lambda sec, d: json.dumps({sec: d}),
        st.sampled_from(["identify", "tune", "sweep", "verify"]),
        near(IdentifyConfig.defaults() | SweepConfig.defaults(), {}),
    )
)
def test_recipes(text):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.yaml"
        p.write_text(text)
        valid_or_hedit(load_recipe, p)


@FUZZ
@given(
    st.lists(json_values | near({"question_id": "q", "prompt_ids": [1], "aliases": [], "samples": []}, {}), max_size=4),
    st.binary(max_size=40),
)
def test_journals(records, tail):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.jsonl"
        p.write_bytes(
            (
                json.dumps({"_hedit": "responses", "config": {}})
                + "\n"
                + "".join(json.dumps(r) + "\n" for r in records)
            ).encode()
            + tail
        )
        r = valid_or_hedit(read_journal, p, "responses", CHECKS["responses"])
        if r is not None:
            assert all(CHECKS["responses"](x) for x in r[1])


@pytest.mark.parametrize("cls", [IdentifyConfig, SweepConfig])
def test_settings_from_any_mapping(cls):
    @FUZZ
    @given(near(cls.defaults(), {}) | json_values)
    def check(data):
        valid_or_hedit(cls.from_dict, data, "section")

    check()
