"""Every command against hostile-but-realistic input. For each case: a non-zero exit, exactly one
``hedit: error:`` line naming the problem, no traceback, nothing left beside ``--out`` (hidden entries
included), every source byte unchanged, nothing written anywhere else, and the Hub token never printed."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import pickle
import re
import shutil
import signal
import stat
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from hedit.model.tiny import save_tiny_model

from builders import craft_gguf, llama_gguf_metadata, llama_gguf_tensors, mlx_affine, quantized, write_gguf
from builders import neurons as gguf_neurons
from conftest import add_tokenizer, neuron_set, run_cli

TOKEN = "hf_SECRETtoken0123456789"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A tiny llama with a tokenizer, sharded; a neurons file; a GGUF; a features folder; a responses file."""
    root = tmp_path_factory.mktemp("pristine")
    add_tokenizer(save_tiny_model(root / "src", "llama", max_shard_size="150KB"))
    neuron_set("llama", per_layer=2).save(root / "n.json")
    save_tiny_model(root / "bare", "llama")  # no tokenizer
    w = gguf.GGUFWriter(str(root / "m.gguf"), "llama")
    w.add_block_count(3)
    w.add_feed_forward_length(96)
    for layer in range(3):
        w.add_tensor(f"blk.{layer}.ffn_down.weight", np.ones((64, 96), dtype=np.float32))
        w.add_tensor(f"blk.{layer}.ffn_up.weight", np.ones((96, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    feats = root / "feats"
    feats.mkdir()
    rows = [
        {"question_id": f"q{i}", "class": c, "region": r, "split": None}
        for i in range(8)
        for c in (("correct", "hallucinated")[i % 2],)
        for r in ("answer", "other")
    ]
    (feats / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    np.zeros((len(rows), 3 * 96), dtype=np.float32).tofile(feats / "features.f32")
    (feats / "meta.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "num_layers": 3,
                "intermediate_size": 96,
                "rows": len(rows),
                "columns": 288,
                "layout": "row-major",
            }
        )
    )
    _journal(root, [RECORD])
    (root / "q.jsonl").write_text(json.dumps({"question": "Water boils at?", "answers": ["100"]}) + "\n")
    return root


CASE_SECONDS = 60  # each case ends well within this; one that does not is a hang, and fails


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float, name: str):
    def expired(signum, frame):
        raise Hang(f"{name}: still running after {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def digest(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Every entry below ``root``: a file's SHA-256, a link's target, a FIFO or a folder by kind (a FIFO
    or a device is never opened)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        key = str(p.relative_to(root))
        if p.is_symlink():
            out[key] = f"link -> {os.readlink(p)}"
        elif stat.S_ISFIFO(p.lstat().st_mode):
            out[key] = "fifo"
        else:
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def _index(w):
    return w / "src" / "model.safetensors.index.json"


def _set_index(w, fn):
    data = json.loads(_index(w).read_text())
    fn(data)
    _index(w).write_text(json.dumps(data))


def _shard(w):
    return w / "src" / sorted(p.name for p in (w / "src").glob("*.safetensors"))[0]


def _header(w, fn):
    p = _shard(w)
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    head = json.loads(raw[8 : 8 + n])
    fn(head)
    new = json.dumps(head).encode()
    new += b" " * max(0, n - len(new))
    p.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def _neurons(w, fn):
    data = json.loads((w / "n.json").read_text())
    fn(data)
    (w / "n.json").write_text(json.dumps(data))


def _config(w, fn):
    data = json.loads((w / "src" / "config.json").read_text())
    fn(data)
    (w / "src" / "config.json").write_text(json.dumps(data))


def _write(path, content):
    Path(path).write_bytes(content if isinstance(content, bytes) else content.encode())


def _gguf_bytes(w, fn):
    raw = bytearray((w / "m.gguf").read_bytes())
    fn(raw)
    (w / "m.gguf").write_bytes(bytes(raw))


def _crafted(w, tensors=None, **meta):
    craft_gguf(w / "m.gguf", llama_gguf_metadata(**meta), tensors or llama_gguf_tensors())


def _moved(tensors, **offsets):
    """llama_gguf_tensors with the named tensors' offsets changed (see craft_gguf)."""
    return [(n, shape, v, offsets.get(n.replace(".", "_"), off)) for n, shape, v, off in tensors]


def _fake_output(w, name="E", neurons=True):
    """A folder hedit wrote (hedit.json), holding the neurons file the next command reads."""
    (w / name).mkdir()
    (w / name / "hedit.json").write_text(json.dumps({"hedit_version": "0"}))
    if neurons:
        shutil.copyfile(w / "n.json", w / name / "neurons.json")


def _pushable(w):
    """A copy of the source that push accepts (hedit.json, a card)."""
    shutil.copytree(w / "src", w / "ed")
    (w / "ed" / "hedit.json").write_text(json.dumps({"hedit_version": "0"}))
    (w / "ed" / "README.md").write_text("card\n")


def _tokenizer_links_out(w):
    """The source's tokenizer.json is a link to a key file outside the model folder."""
    _write(w / "secret.key", "KEY")
    (w / "src" / "tokenizer.json").unlink()
    (w / "src" / "tokenizer.json").symlink_to(w / "secret.key")


def _neuron_dir(w, links: dict[str, str] | None = None, files: dict[str, bytes | str] | None = None):
    """``nd/neurons.json`` (a copy of n.json) with ``links`` (name -> target relative to the world) and
    ``files`` beside it; ``keys/id_rsa`` and ``keys/sweep.png`` are key files outside that folder."""
    (w / "keys").mkdir(exist_ok=True)
    _write(w / "keys" / "id_rsa", "PRIVATE KEY")
    _write(w / "keys" / "sweep.png", "PRIVATE KEY")
    (w / "nd").mkdir()
    shutil.copyfile(w / "n.json", w / "nd" / "neurons.json")
    for name, target in (links or {}).items():
        (w / "nd" / name).symlink_to(w / target)
    for name, content in (files or {}).items():
        _write(w / "nd" / name, content)


def _hedit_gguf_sidecar(w, tamper: bool):
    """out.gguf beside a sidecar hedit could have written (its version, an output fingerprint) that does
    not fingerprint this out.gguf: the user's own file (``tamper``: one byte of a real output changed)."""
    _write(w / "out.gguf", (w / "m.gguf").read_bytes())
    fp = {"size": 1, "sha256_ends": "0" * 64}
    if tamper:
        from hedit.io.atomic import fingerprint

        fp = fingerprint(w / "out.gguf")
        raw = bytearray((w / "out.gguf").read_bytes())
        raw[-1] ^= 1
        _write(w / "out.gguf", bytes(raw))
    _write(w / "out.gguf.hedit.json", json.dumps({"hedit_version": "0", "output": fp}))


def _quant(w, fmt: str, fn=None, tensors=None):
    """``w/q``: a GPTQ (``fmt`` "gptq") or MLX affine ("mlx") copy of a tiny llama, its config changed by
    ``fn(quantization dict)`` and its tensors by ``tensors(state dict)``; ``w/nq.json`` fits it."""
    from safetensors.numpy import load_file as load_np
    from safetensors.numpy import save_file as save_np

    if fmt == "gptq":
        folder, _ = quantized(w / "qbuild", "gptq")
        shutil.move(folder, w / "q")
        shutil.rmtree(w / "qbuild")
    else:
        mlx_affine(save_tiny_model(w / "qbuild", "llama"), w / "q")
        shutil.rmtree(w / "qbuild")
    cfg = json.loads((w / "q" / "config.json").read_text())
    for key in ("quantization", "quantization_config"):
        if key in cfg and fn is not None:
            fn(cfg[key])
    (w / "q" / "config.json").write_text(json.dumps(cfg))
    if tensors is not None:
        sd = load_np(str(w / "q" / "model.safetensors"))
        tensors(sd)
        save_np(sd, str(w / "q" / "model.safetensors"), metadata={"format": "pt"})
    ns = json.loads((w / "n.json").read_text())
    ns["model"]["num_layers"], ns["model"]["intermediate_size"] = cfg["num_hidden_layers"], cfg["intermediate_size"]
    ns["neurons"] = [{"layer": 0, "index": 1}, {"layer": 1, "index": 3}]
    _write(w / "nq.json", json.dumps(ns))


def _unquantize(module: str):
    """A tensors hook for ``_quant``: ``module`` stored as a float weight (no scales, no biases), as MLX
    leaves a module its quantization skipped."""

    def hook(sd):
        sd.pop(f"{module}.scales")
        sd.pop(f"{module}.biases")
        packed = sd.pop(f"{module}.weight")
        sd[f"{module}.weight"] = np.zeros((packed.shape[0], packed.shape[1] * 8), np.float16)

    return hook


def _moe(w, drop: str | None = None, both: bool = False):
    """``w/moe``: a tiny qwen3_moe, experts one by one, missing the tensor ``drop`` or also holding the
    stacked layout of layer 1 (``both``); ``w/nm.json`` fits it."""
    from safetensors.torch import load_file, save_file

    from hedit.neurons import ModelInfo, Neuron, NeuronSet

    per = add_tokenizer(save_tiny_model(w / "moe", "qwen3_moe"))
    sd = load_file(per / "model.safetensors")
    if drop:
        sd.pop(drop)
    if both:
        stacked = load_file(save_tiny_model(w / "st", "qwen3_moe", stacked=True) / "model.safetensors")
        sd |= {k: v for k, v in stacked.items() if k.startswith("model.layers.1.mlp.experts.") and k.count(".") == 5}
        shutil.rmtree(w / "st")
    save_file({k: v.contiguous() for k, v in sd.items()}, per / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((per / "config.json").read_text())
    experts = cfg.get("num_experts") or cfg["num_local_experts"]
    info = ModelInfo("qwen3_moe", cfg["num_hidden_layers"], cfg["moe_intermediate_size"], num_experts=experts)
    NeuronSet(info, [Neuron(1, 2, expert=3), Neuron(1, 4, expert=0)]).save(w / "nm.json")


def _lm_task(w, extra: str = "", files: str | None = None):
    """``w/tasks``: a local lm-eval task ``bad_task`` over ``w/tasks/d.jsonl`` (``files``: its data_files
    value instead), with ``extra`` YAML lines."""
    (w / "tasks").mkdir()
    _write(w / "tasks" / "d.jsonl", json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0}) + "\n")
    data = files if files is not None else f"\n    test: {w / 'tasks' / 'd.jsonl'}"
    _write(
        w / "tasks" / "t.yaml",
        f"task: bad_task\ndataset_path: json\ndataset_kwargs:\n  data_files: {data}\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\n"
        f"doc_to_target: answer\nmetric_list:\n  - metric: acc\n{extra}",
    )


def _template(w, text):
    (w / "src" / "chat_template.jinja").write_text(text)


def _journal(w, records, config=None):
    header = {"_hedit": "responses", "config": config or {}, "model": "m"}
    _write(w / "r.jsonl", "".join(json.dumps(x) + "\n" for x in [header, *records]))


RECORD = {
    "question_id": "q1",
    "question": "Q?",
    "aliases": ["a"],
    "split": None,
    "prompt_ids": [1, 2],
    "samples": [{"response": "a", "response_ids": [5], "label": "correct"}],
}
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)


EDIT = ["edit", "src", "--neurons", "n.json", "--alpha", "0", "--out", "out", "--quiet"]
ADAPT = ["export-adapter", "src", "--neurons", "n.json", "--alpha", "0", "--out", "out"]
VERIFY = ["verify", "src", "--neurons", "n.json", "--alpha", "0"]
GEDIT = ["edit", "m.gguf", "--neurons", "n.json", "--alpha", "0", "--out", "out.gguf", "--quiet"]
COLLECT = ["collect", "src", "--questions", "q.jsonl", "--out", "out.jsonl", "--quiet"]
PROBE = ["probe", "feats", "--out", "out/n.json", "--quiet"]
SWEEP = ["sweep", "src", "--neurons", "n.json", "--out", "out", "--quiet"]
TUNE = ["tune", "src", "--neurons", "n.json", "--work", "out", "--quiet"]

# name: (setup(world) or None, argv, what the one error line says)
CASES = {
    # ---- edit: the source checkpoint
    "edit-missing-source": (None, ["edit", "nope", *EDIT[2:]], "source not found"),
    "edit-source-is-a-file": (
        lambda w: _write(w / "f.txt", "x"),
        ["edit", "f.txt", *EDIT[2:]],
        "must be a checkpoint folder",
    ),
    "edit-no-config": (lambda w: (w / "src" / "config.json").unlink(), EDIT, "has no config.json"),
    "edit-config-not-json": (lambda w: _write(w / "src" / "config.json", "{nope"), EDIT, "not valid JSON"),
    "edit-config-a-list": (lambda w: _write(w / "src" / "config.json", "[1, 2]"), EDIT, "must hold a JSON object"),
    "edit-config-not-utf8": (lambda w: _write(w / "src" / "config.json", b"\xff\xfe{}"), EDIT, "is not UTF-8"),
    "edit-config-deep": (
        lambda w: _write(w / "src" / "config.json", "[" * 100000 + "]" * 100000),
        EDIT,
        "nested too deeply",
    ),
    "edit-model-type-unknown": (
        lambda w: _config(w, lambda c: c.update(model_type="gpt2")),
        EDIT,
        "model_type 'gpt2' is not supported",
    ),
    "edit-model-type-list": (
        lambda w: _config(w, lambda c: c.update(model_type=["llama"])),
        EDIT,
        "model_type must be a string",
    ),
    "edit-moe": (lambda w: _config(w, lambda c: c.update(model_type="phimoe")), EDIT, "mixture-of-experts"),
    "edit-layers-zero": (
        lambda w: _config(w, lambda c: c.update(num_hidden_layers=0)),
        EDIT,
        "num_hidden_layers must be a positive integer",
    ),
    "edit-layers-bool": (
        lambda w: _config(w, lambda c: c.update(num_hidden_layers=True)),
        EDIT,
        "num_hidden_layers must be a positive integer",
    ),
    "edit-inter-list": (
        lambda w: _config(w, lambda c: c.update(intermediate_size=[96, 96, 96])),
        EDIT,
        "per-layer intermediate sizes",
    ),
    "edit-quant-config-bad": (
        lambda w: _config(w, lambda c: c.update(quantization_config={"x": 1})),
        EDIT,
        "quantization_config has no quant_method",
    ),
    "edit-quantized-down": (
        lambda w: _config(w, lambda c: c.update(quantization_config={"quant_method": "gptq"})),
        [*EDIT, "--target", "down"],
        "shares its scales along the rows of down_proj",
    ),
    "edit-index-dotdot": (
        lambda w: _set_index(
            w, lambda d: d["weight_map"].update({next(iter(d["weight_map"])): "../victim.safetensors"})
        ),
        EDIT,
        "points outside",
    ),
    "edit-index-absolute": (
        lambda w: _set_index(w, lambda d: d["weight_map"].update({next(iter(d["weight_map"])): "/etc/passwd"})),
        EDIT,
        "points outside",
    ),
    "edit-index-not-safetensors": (
        lambda w: _set_index(w, lambda d: d["weight_map"].update({next(iter(d["weight_map"])): "config.json"})),
        EDIT,
        "is not a .safetensors file",
    ),
    "edit-index-map-list": (
        lambda w: _set_index(w, lambda d: d.update(weight_map=[1])),
        EDIT,
        "is not a valid safetensors index",
    ),
    "edit-index-not-json": (lambda w: _write(_index(w), "nope"), EDIT, "not valid JSON"),
    "edit-shard-missing": (lambda w: _shard(w).unlink(), EDIT, "named in model.safetensors.index.json is missing"),
    "edit-header-truncated": (
        lambda w: _write(_shard(w), _shard(w).read_bytes()[:-100]),
        EDIT,
        "lies outside the file",
    ),
    "edit-header-length-huge": (
        lambda w: _write(_shard(w), struct.pack("<Q", 2**40) + b"{}"),
        EDIT,
        "bad header length",
    ),
    "edit-header-not-json": (
        lambda w: _write(_shard(w), struct.pack("<Q", 4) + b"nope"),
        EDIT,
        "header: not valid JSON",
    ),
    "edit-header-list": (
        lambda w: _write(_shard(w), struct.pack("<Q", 2) + b"[]"),
        EDIT,
        "header is not a JSON object",
    ),
    "edit-offsets-disagree": (
        lambda w: _header(w, lambda h: next(v for k, v in h.items() if k != "__metadata__").update(shape=[3, 3])),
        EDIT,
        "disagree with shape",
    ),
    "edit-dtype-unknown": (
        lambda w: _header(w, lambda h: next(v for k, v in h.items() if k != "__metadata__").update(dtype="F13")),
        EDIT,
        "unknown dtype",
    ),
    "edit-bin-only": (
        lambda w: (
            [p.unlink() for p in (w / "src").glob("model*.safetensors*")]
            and _write(w / "src" / "pytorch_model.bin", "x")
        ),
        EDIT,
        "only PyTorch pickle weights",
    ),
    # ---- edit: the neurons file
    "neurons-missing": (lambda w: (w / "n.json").unlink(), EDIT, "not found"),
    "neurons-not-json": (lambda w: _write(w / "n.json", "{"), EDIT, "not valid JSON"),
    "neurons-a-list": (lambda w: _write(w / "n.json", "[]"), EDIT, "top level must be an object"),
    "neurons-deep": (lambda w: _write(w / "n.json", '{"a":' * 50000 + "1" + "}" * 50000), EDIT, "nested too deeply"),
    "neurons-not-utf8": (lambda w: _write(w / "n.json", b"\x80\x81"), EDIT, "is not UTF-8"),
    "neurons-unknown-key": (lambda w: _neurons(w, lambda d: d.update(neuronz=[])), EDIT, "unknown key 'neuronz'"),
    "neurons-unknown-model-key": (
        lambda w: _neurons(w, lambda d: d["model"].update(layers=3)),
        EDIT,
        "unknown key 'model.layers'",
    ),
    "neurons-unknown-neuron-key": (
        lambda w: _neurons(w, lambda d: d["neurons"][0].update(idx=1)),
        EDIT,
        "unknown key 'neurons[0].idx'",
    ),
    "neurons-layer-range": (
        lambda w: _neurons(w, lambda d: d["neurons"][0].update(layer=3)),
        EDIT,
        "layer 3 out of range",
    ),
    "neurons-index-range": (
        lambda w: _neurons(w, lambda d: d["neurons"][0].update(index=96)),
        EDIT,
        "out of range: intermediate size is 96",
    ),
    "neurons-negative-index": (lambda w: _neurons(w, lambda d: d["neurons"][0].update(index=-1)), EDIT, "out of range"),
    "neurons-twice": (
        lambda w: _neurons(w, lambda d: d["neurons"].append(dict(d["neurons"][0]))),
        EDIT,
        "is listed twice",
    ),
    "neurons-other-model": (
        lambda w: _neurons(w, lambda d: d["model"].update(intermediate_size=128)),
        EDIT,
        "made for another model",
    ),
    "neurons-empty": (lambda w: _neurons(w, lambda d: d.update(neurons=[])), EDIT, "lists no neurons"),
    "neurons-alpha-nan": (
        lambda w: _write(w / "n.json", (w / "n.json").read_text().replace('"alpha": null', '"alpha": NaN')),
        ["edit", "src", "--neurons", "n.json", "--out", "out"],
        "'alpha' must be a finite number",
    ),
    "neurons-alpha-string": (
        lambda w: _neurons(w, lambda d: d.update(alpha="0")),
        ["edit", "src", "--neurons", "n.json", "--out", "out"],
        "'alpha' must be a finite",
    ),
    "neurons-layer-float": (
        lambda w: _neurons(w, lambda d: d["neurons"][0].update(layer=1.0)),
        EDIT,
        "integer 'layer' and 'index'",
    ),
    "neurons-version": (lambda w: _neurons(w, lambda d: d.update(version=9)), EDIT, "unsupported version 9"),
    "neurons-no-alpha": (None, ["edit", "src", "--neurons", "n.json", "--out", "out"], "no alpha"),
    # ---- edit: alpha and output
    "alpha-nan": (None, [*EDIT[:5], "nan", *EDIT[6:]], "alpha must be a finite number"),
    "alpha-overflows-float": (None, [*EDIT[:5], "1e999", *EDIT[6:]], "alpha must be a finite number"),
    "alpha-not-a-number": (None, [*EDIT[:5], "abc", *EDIT[6:]], "is not a valid float"),
    "alpha-negative": (None, [*EDIT[:5], "-1", *EDIT[6:]], "pass --allow-negative-alpha"),
    "alpha-out-of-range": (None, [*EDIT[:5], "1e40", *EDIT[6:]], "alpha 1e+40 is out of range"),
    "alpha-typo-huge": (None, [*EDIT[:5], "1e5", *EDIT[6:]], "alpha 100000 is out of range"),
    "out-not-hedit-overwrite": (
        lambda w: (w / "out").mkdir() or _write(w / "out" / "thesis.tex", "x"),
        [*EDIT, "--overwrite"],
        "is not a hedit output",
    ),
    "out-exists": (lambda w: (w / "out").mkdir(), EDIT, "already exists; pass --overwrite"),
    "out-is-source": (None, [*EDIT[:7], "src", "--overwrite"], "is the source"),
    "out-inside-source": (None, [*EDIT[:7], "src/sub", "--overwrite"], "is inside the source"),
    "out-holds-source": (None, [*EDIT[:7], ".", "--overwrite"], "working directory"),
    "out-parent-of-cwd": (None, [*EDIT[:7], "..", "--overwrite"], "working directory or one of its parents"),
    "out-dot-dot-name": (None, [*EDIT[:7], "out/..", "--overwrite"], "working directory or one of its parents"),
    "out-parent-missing": (None, [*EDIT[:7], "a/b/c"], "does not exist"),
    "target-bogus": (None, [*EDIT, "--target", "left"], "Invalid value for '--target'"),
    "unknown-option": (
        None,
        [*EDIT, "--frobnicate"],
        "No such option '--frobnicate'. Did you mean '--force'? (`hedit edit --help`",
    ),
    # ---- export-adapter
    "adapter-format": (None, [*ADAPT, "--format", "dora"], "Invalid value for '--format'"),
    "adapter-out-is-source": (None, [*ADAPT[:7], "src", "--overwrite"], "is the source"),
    "adapter-alpha-out-of-range": (None, [*ADAPT[:5], "1e40", *ADAPT[6:]], "is out of range"),
    "adapter-quantized": (
        lambda w: _config(w, lambda c: c.update(quantization_config={"quant_method": "gptq"})),
        ADAPT,
        "is quantized (gptq)",
    ),
    # ---- verify
    "verify-no-artifact": (None, VERIFY, "exactly one of --edited or --adapter"),
    "verify-two-artifacts": (None, [*VERIFY, "--edited", "src", "--adapter", "src"], "exactly one"),
    "verify-tolerance-nan": (None, [*VERIFY, "--edited", "src", "--tolerance", "nan"], "finite number"),
    "verify-tolerance-negative": (None, [*VERIFY, "--edited", "src", "--tolerance", "-1"], "at least 0"),
    "verify-adapter-is-checkpoint": (None, [*VERIFY, "--adapter", "src"], "pass it with --edited"),
    "verify-edited-missing": (None, [*VERIFY, "--edited", "nope"], "edited checkpoint not found"),
    "verify-edited-other-model": (
        lambda w: save_tiny_model(w / "other", "llama", intermediate_size=128),
        [*VERIFY, "--edited", "other"],
        "is not an edit of",
    ),
    "verify-adapter-config-bad": (
        lambda w: (w / "ad").mkdir() or _write(w / "ad" / "adapter_config.json", "["),
        [*VERIFY, "--adapter", "ad"],
        "not valid JSON",
    ),
    "verify-adapter-type": (
        lambda w: (w / "ad").mkdir() or _write(w / "ad" / "adapter_config.json", '{"peft_type": "PROMPT_TUNING"}'),
        [*VERIFY, "--adapter", "ad"],
        "peft_type 'PROMPT_TUNING' is not one hedit writes",
    ),
    "verify-new-tokens-zero": (None, [*VERIFY, "--edited", "src", "--new-tokens", "0"], "new_tokens must be at least"),
    "verify-no-vllm": (
        None,
        [*VERIFY, "--edited", "src", "--runtime", "vllm", "--vllm-python", "nope"],
        "no vLLM environment found",
    ),
    # ---- GGUF
    "gguf-garbage": (lambda w: _write(w / "m.gguf", b"not a gguf" * 10), GEDIT, "no GGUF magic"),
    "gguf-truncated": (
        lambda w: _write(w / "m.gguf", (w / "m.gguf").read_bytes()[:200]),
        GEDIT,
        "truncated|outside the file",
    ),
    "gguf-version": (
        lambda w: _gguf_bytes(w, lambda b: b.__setitem__(slice(4, 8), struct.pack("<I", 9))),
        GEDIT,
        "GGUF version 9 is not supported",
    ),
    "gguf-huge-count": (
        lambda w: _gguf_bytes(w, lambda b: b.__setitem__(slice(8, 16), struct.pack("<Q", 2**60))),
        GEDIT,
        "implausible counts",
    ),
    "gguf-other-shape": (
        lambda w: _neurons(w, lambda d: d["model"].update(num_layers=4)),
        GEDIT,
        "made for another model",
    ),
    "gguf-out-exists": (lambda w: _write(w / "out.gguf", "x"), [*GEDIT, "--overwrite"], "not a hedit output"),
    "gguf-is-source": (None, [*GEDIT[:7], "m.gguf", "--overwrite"], "is the source"),
    # ---- collect, filter, features
    "collect-questions-missing": (
        None,
        ["collect", "src", "--questions", "nope.jsonl", "--out", "out.jsonl"],
        "question file not found",
    ),
    "collect-questions-not-json": (lambda w: _write(w / "q.jsonl", "{oops\n"), COLLECT, "q.jsonl:1: not valid JSON"),
    "collect-questions-not-utf8": (lambda w: _write(w / "q.jsonl", b"\xff\xfe\x00"), COLLECT, "is not UTF-8"),
    "collect-questions-csv-extra": (
        lambda w: _write(w / "q.csv", "question,answers\nQ?,a,b,c\n"),
        [*COLLECT[:3], "q.csv", *COLLECT[4:]],
        "more cells than the header",
    ),
    "collect-questions-parquet-text": (
        lambda w: _write(w / "q.parquet", "question\nQ?\n"),
        [*COLLECT[:3], "q.parquet", *COLLECT[4:]],
        "not a readable Parquet file",
    ),
    "collect-questions-empty": (lambda w: _write(w / "q.jsonl", "\n"), COLLECT, "no questions"),
    "collect-questions-no-answers": (lambda w: _write(w / "q.jsonl", '{"question": "Q?"}\n'), COLLECT, "no answers"),
    "collect-questions-twice": (
        lambda w: _write(w / "q.jsonl", '{"question": "Q?", "answers": ["a"], "id": 1}\n' * 2),
        COLLECT,
        "appears twice",
    ),
    "collect-questions-type": (
        lambda w: _write(w / "q.txt", "Q?"),
        [*COLLECT[:3], "q.txt", *COLLECT[4:]],
        "unknown question-file type",
    ),
    "collect-samples-zero": (None, [*COLLECT, "--samples", "0"], "samples must be at least 1"),
    "collect-temperature-zero": (None, [*COLLECT, "--temperature", "0"], "temperature must be greater than 0"),
    "collect-top-p": (None, [*COLLECT, "--top-p", "2"], "top_p must be at most 1"),
    "collect-batch-zero": (None, [*COLLECT, "--batch-size", "0"], "batch_size must be at least 1"),
    "collect-limit-negative": (None, [*COLLECT, "--limit", "-3"], "--limit must be at least 1"),
    "collect-out-not-journal": (lambda w: _write(w / "out.jsonl", "hello\n"), COLLECT, "not a hedit responses file"),
    "collect-no-tokenizer": (None, ["collect", "bare", *COLLECT[2:]], "has no tokenizer"),
    "collect-device": (None, [*COLLECT, "--device", "gpu"], "unknown device 'gpu'"),
    "filter-missing": (None, ["filter", "nope.jsonl", "--out", "out.jsonl"], "responses file not found"),
    "filter-not-journal": (
        lambda w: _write(w / "x.jsonl", '{"a": 1}\n'),
        ["filter", "x.jsonl", "--out", "out.jsonl"],
        "is not a hedit responses file",
    ),
    "filter-bad-record": (
        lambda w: _write(w / "r.jsonl", (w / "r.jsonl").read_text() + '{"question_id": 3}\n'),
        ["filter", "r.jsonl", "--out", "out.jsonl"],
        "not a responses record",
    ),
    "filter-out-is-input": (None, ["filter", "r.jsonl", "--out", "r.jsonl"], "is the responses file itself"),
    "features-region": (
        None,
        ["features", "src", "r.jsonl", "--out", "out", "--regions", "answer,bogus"],
        "regions: unknown value 'bogus'",
    ),
    "features-no-tokenizer": (None, ["features", "bare", "r.jsonl", "--out", "out"], "has no tokenizer"),
    "features-out-exists": (
        lambda w: (w / "out").mkdir() or _write(w / "out" / "x", "x"),
        ["features", "src", "r.jsonl", "--out", "out"],
        "not a hedit output",
    ),
    # ---- probe
    "probe-not-features": (None, ["probe", "src", "--out", "out/n.json"], "is not a hedit features folder"),
    "probe-truncated-matrix": (
        lambda w: _write(w / "feats" / "features.f32", b"\0" * 100),
        PROBE,
        "truncated or from another run",
    ),
    "probe-meta-incomplete": (
        lambda w: _write(w / "feats" / "meta.json", '{"model_type": "llama"}'),
        PROBE,
        "is incomplete",
    ),
    "probe-rows-mismatch": (
        lambda w: _write(w / "feats" / "rows.jsonl", '{"question_id": "q", "class": "c", "region": "answer"}\n'),
        PROBE,
        "has 1 rows, meta.json says",
    ),
    "probe-c-grid": (None, [*PROBE, "--c", "0,x"], "--c takes comma-separated numbers"),
    "probe-c-zero": (None, [*PROBE, "--c", "0"], "must be greater than 0"),
    "probe-mode": (None, [*PROBE, "--mode", "2-vs-2"], "mode must be one of"),
    "probe-draws-zero": (None, [*PROBE, "--random-draws", "0"], "random_draws must be at least 1"),
    "probe-other-model": (
        lambda w: save_tiny_model(w / "wide", "llama", intermediate_size=128),
        [*PROBE, "--model", "wide"],
        "come from another model",
    ),
    # ---- sweep, tune
    "sweep-alphas-empty": (None, [*SWEEP, "--alphas", ""], "--alphas takes comma-separated numbers, got an empty"),
    "sweep-alphas-twice": (None, [*SWEEP, "--alphas", "0,0"], "lists a value twice"),
    "sweep-alphas-nan": (None, [*SWEEP, "--alphas", "0,nan"], "must be a finite number"),
    "sweep-limit-zero": (None, [*SWEEP, "--limit", "0"], "limit must be at least 1"),
    "sweep-no-tokenizer": (None, ["sweep", "bare", *SWEEP[2:]], "has no tokenizer"),
    "sweep-suite-unknown": (None, [*SWEEP, "--suites", "jailbreaks"], "suites: unknown value"),
    "sweep-controls-negative": (None, [*SWEEP, "--controls", "-1"], "controls must be at least 0"),
    "sweep-suite-file-form": (None, [*SWEEP, "--suite-file", "false-premise"], "--suite-file takes NAME=PATH"),
    "sweep-suite-file-missing": (None, [*SWEEP, "--suite-file", "false-premise=nope.jsonl"], "suite file not found"),
    "sweep-suite-file-bad": (
        lambda w: _write(w / "s.jsonl", "{oops\n"),
        [*SWEEP, "--suite-file", "false-premise=s.jsonl"],
        "not valid JSON",
    ),
    "sweep-temperature": (None, [*SWEEP, "--sample", "--temperature", "0"], "temperature must be greater than 0"),
    "sweep-negative-alpha": (None, [*SWEEP, "--alphas", "-1,1"], "pass --allow-negative-alpha"),
    "tune-max-kl": (None, [*TUNE, "--max-kl", "-1"], "max_kl must be at least 0"),
    "tune-batch-zero": (None, [*TUNE, "--batch-size", "0"], "batch_size must be at least 1"),
    # ---- run
    "run-missing": (None, ["run", "nope.yaml"], "recipe not found"),
    "run-not-yaml": (lambda w: _write(w / "r.yaml", "identify: [\n"), ["run", "r.yaml"], "not valid YAML"),
    "run-unknown-key": (lambda w: _write(w / "r.yaml", "modle: x\n"), ["run", "r.yaml"], "unknown key 'modle'"),
    "run-work-outside": (
        lambda w: _write(w / "r.yaml", "work: /tmp/elsewhere\n"),
        ["run", "r.yaml"],
        "points outside the current folder",
    ),
    "run-set-batch-zero": (
        lambda w: _write(w / "r.yaml", "work: out\n"),
        ["run", "r.yaml", "--set", "identify.batch_size=0"],
        "identify.batch_size must be at least",
    ),
    "run-set-form": (
        lambda w: _write(w / "r.yaml", "work: out\n"),
        ["run", "r.yaml", "--set", "identify.samples"],
        "--set takes KEY=VALUE",
    ),
    "run-not-utf8": (lambda w: _write(w / "r.yaml", b"\xff\xfe"), ["run", "r.yaml"], "is not UTF-8"),
    # ---- push (the Hub is never reached: every one fails before a network call)
    "push-missing": (None, ["push", "nope", "--repo-id", "me/x"], "not a folder"),
    "push-bad-repo-id": (None, ["push", "src", "--repo-id", "no good"], "--repo-id must look like owner/name"),
    "push-not-hedit": (None, ["push", "src", "--repo-id", "me/x"], "has no hedit.json"),
    "push-pickle": (
        lambda w: _write(w / "src" / "extra.PICKLE", "x"),
        ["push", "src", "--repo-id", "me/x", "--force"],
        "holds pickle files",
    ),
    "push-pickle-magic": (
        lambda w: _write(w / "src" / "notes.dat", b"\x80\x04\x95"),
        ["push", "src", "--repo-id", "me/x", "--force"],
        "holds pickle files",
    ),
    "push-link-out": (
        lambda w: (w / "src" / "secret").symlink_to(w / "n.json"),
        ["push", "src", "--repo-id", "me/x", "--force"],
        "link to outside the folder",
    ),
    # ==== round 2: inputs as sources, every file checked, every claim true
    # ---- GGUF files crafted byte by byte
    "gguf-overlap-embd-up": (
        lambda w: _crafted(w, _moved(llama_gguf_tensors(), token_embd_weight="blk.0.ffn_up.weight")),
        [*GEDIT[:-1], "--target", "up", "--quiet"],
        "share bytes",
    ),
    "gguf-overlap-two-downs": (
        lambda w: _crafted(w, _moved(llama_gguf_tensors(), blk_1_ffn_down_weight="blk.0.ffn_down.weight")),
        GEDIT,
        "share bytes",
    ),
    "gguf-misaligned": (
        lambda w: _crafted(w, _moved(llama_gguf_tensors(), blk_2_ffn_up_weight=("blk.2.ffn_up.weight", 4))),
        GEDIT,
        "is not aligned to 32 bytes",
    ),
    "gguf-out-of-order": (
        lambda w: _crafted(
            w,
            _moved(
                llama_gguf_tensors(),
                blk_0_ffn_down_weight="blk.0.ffn_up.weight",
                blk_0_ffn_up_weight="blk.0.ffn_down.weight",
            ),
        ),
        GEDIT,
        "out of order",
    ),
    "gguf-up-rows-short": (
        lambda w: _crafted(w, llama_gguf_tensors(up_rows=90)),
        [*GEDIT[:-1], "--target", "up", "--quiet"],
        "has shape [64, 90], but the metadata says",
    ),
    "gguf-up-rows-long": (
        lambda w: _crafted(w, llama_gguf_tensors(up_rows=200)),
        [*GEDIT[:-1], "--target", "up", "--quiet"],
        "has shape [64, 200], but the metadata says",
    ),
    "gguf-down-shape-wrong": (
        lambda w: _crafted(w, llama_gguf_tensors(hidden=64) + [], hidden=32),
        GEDIT,
        "has shape [96, 64], but the metadata says [96, 32]",
    ),
    "gguf-block-count-bool": (
        lambda w: _crafted(w, None, **{"llama.block_count": True}),
        GEDIT,
        "lacks llama.block_count or llama.feed_forward_length",
    ),
    "gguf-alignment-bool": (
        lambda w: _crafted(w, None, **{"general.alignment": True}),
        GEDIT,
        "general.alignment True is not a power of two",
    ),
    "gguf-sidecar-is-a-folder": (lambda w: (w / "out.gguf.hedit.json").mkdir(), GEDIT, "exists and is not a file"),
    "gguf-sidecar-is-a-users-file": (
        lambda w: _write(w / "out.gguf.hedit.json", "my notes"),
        GEDIT,
        "already exists and is not the provenance",
    ),
    "gguf-down-values-clip": (
        lambda w: (
            write_gguf(w / "q.gguf", T.Q4_1, down_type=T.Q4_1),
            gguf_neurons([(1, c) for c in range(0, 256, 3)], inter=256).save(w / "q.json"),
        ),
        ["edit", "q.gguf", "--neurons", "q.json", "--alpha", "3", "--target", "down", "--out", "o.gguf", "--quiet"],
        "values clip at alpha 3",
    ),
    "gguf-up-alpha-typo": (None, [*GEDIT[:5], "1e5", *GEDIT[6:]], "is out of range"),
    # ---- no command removes, replaces or writes into what it reads
    "edit-neurons-inside-out": (
        lambda w: _fake_output(w),
        [*EDIT[:3], "E/neurons.json", *EDIT[4:7], "E", "--overwrite", "--quiet"],
        "holds the neurons file",
    ),
    "adapter-neurons-inside-out": (
        lambda w: _fake_output(w),
        [*ADAPT[:3], "E/neurons.json", *ADAPT[4:7], "E", "--overwrite"],
        "holds the neurons file",
    ),
    "gguf-neurons-inside-out": (
        lambda w: _fake_output(w),
        [*GEDIT[:3], "E/neurons.json", *GEDIT[4:7], "E", "--overwrite", "--quiet"],
        "holds the neurons file",
    ),
    "features-over-an-edit": (
        lambda w: _fake_output(w, neurons=False),
        ["features", "src", "r.jsonl", "--out", "E", "--quiet"],
        "is not a hedit output of this kind (features replace only a features folder)",
    ),
    "features-out-is-the-model": (None, ["features", "src", "r.jsonl", "--out", "src", "--quiet"], "is the model"),
    "features-out-in-the-model": (
        None,
        ["features", "src", "r.jsonl", "--out", "src/F", "--quiet"],
        "is inside the model",
    ),
    "collect-out-in-the-model": (None, [*COLLECT[:5], "src/r.jsonl", "--quiet"], "is inside the model"),
    "collect-out-in-an-edit": (
        lambda w: _fake_output(w, neurons=False),
        [*COLLECT[:5], "E/r.jsonl", "--quiet"],
        "is inside the model folder",
    ),
    "sweep-out-is-the-model": (None, [*SWEEP[:5], "src", "--quiet"], "is the model"),
    "identify-work-is-the-model": (
        None,
        ["identify", "src", "--questions", "q.jsonl", "--work", "src", "--quiet"],
        "is the model",
    ),
    "probe-out-in-the-model": (None, [*PROBE[:3], "src/n.json", "--quiet"], "is inside the model folder"),
    "tune-work-in-the-model": (None, [*TUNE[:5], "src/tw", "--quiet"], "is inside the model"),
    "tune-out-in-the-model": (None, [*TUNE, "--out", "src/n.json"], "is inside the model"),
    "run-work-through-a-link": (
        lambda w: (
            (w.parent / "elsewhere").mkdir(exist_ok=True),
            (w / "wl").symlink_to(w.parent / "elsewhere"),
            _write(w / "r.yaml", "work: wl\n"),
        ),
        ["run", "r.yaml"],
        "points outside the current folder (a link?)",
    ),
    # ---- devices, FIFOs, links out of a source
    "neurons-dev-zero": (None, [*EDIT[:3], "/dev/zero", *EDIT[4:]], "is a device, not a regular file"),
    "neurons-link-to-dev-zero": (
        lambda w: ((w / "n.json").unlink(), (w / "n.json").symlink_to("/dev/zero")),
        EDIT,
        "is a device, not a regular file",
    ),
    "neurons-fifo": (
        lambda w: ((w / "n.json").unlink(), os.mkfifo(w / "n.json")),
        EDIT,
        "is a FIFO (named pipe), not a regular file",
    ),
    "collect-questions-fifo": (
        lambda w: ((w / "q.jsonl").unlink(), os.mkfifo(w / "q.jsonl")),
        COLLECT,
        "question file q.jsonl is a FIFO",
    ),
    "collect-questions-urandom": (
        lambda w: ((w / "q.jsonl").unlink(), (w / "q.jsonl").symlink_to("/dev/urandom")),
        COLLECT,
        "is a device, not a regular file",
    ),
    "run-recipe-fifo": (lambda w: os.mkfifo(w / "r.yaml"), ["run", "r.yaml"], "is a FIFO"),
    "filter-responses-fifo": (
        lambda w: ((w / "r.jsonl").unlink(), os.mkfifo(w / "r.jsonl")),
        ["filter", "r.jsonl", "--out", "f.jsonl"],
        "is a FIFO",
    ),
    "edit-config-fifo": (
        lambda w: ((w / "src" / "config.json").unlink(), os.mkfifo(w / "src" / "config.json")),
        EDIT,
        "config.json is a FIFO",
    ),
    "edit-tokenizer-link-out": (
        _tokenizer_links_out,
        EDIT,
        "tokenizer.json is a link to outside the model folder",
    ),
    "collect-tokenizer-link-out": (
        _tokenizer_links_out,
        COLLECT,
        "tokenizer.json is a link to outside the model folder",
    ),
    "push-fifo": (
        lambda w: (_pushable(w), os.mkfifo(w / "ed" / "pipe")),
        ["push", "ed", "--repo-id", "me/x"],
        "pipe is not a regular file",
    ),
    "push-tokenizer-link-out": (
        lambda w: (
            _pushable(w),
            (w / "ed" / "tokenizer.json").unlink(),
            (w / "ed" / "tokenizer.json").symlink_to(w / "n.json"),
        ),
        ["push", "ed", "--repo-id", "me/x"],
        "link to outside the folder",
    ),
    # ---- journals
    "filter-question-twice": (
        lambda w: _journal(w, [RECORD, RECORD]),
        ["filter", "r.jsonl", "--out", "f.jsonl"],
        "question 'q1' is recorded twice",
    ),
    "filter-fewer-samples": (
        lambda w: _journal(w, [RECORD], {"samples": 3}),
        ["filter", "r.jsonl", "--out", "f.jsonl"],
        "has 1 samples, the header's settings say 3",
    ),
    "features-question-twice": (
        lambda w: _journal(w, [RECORD, RECORD]),
        ["features", "src", "r.jsonl", "--out", "F", "--quiet"],
        "is recorded twice",
    ),
    # ---- secrets in URLs
    "push-endpoint-with-password": (
        lambda w: (_pushable(w), {"env": {"HF_ENDPOINT": "http://user:SECRETpass@127.0.0.1:1", "HF_HUB_OFFLINE": "0"}})[
            1
        ],
        ["push", "ed", "--repo-id", "me/x"],
        "http://***@127.0.0.1:1",
    ),
    # ---- links out of a neurons file's folder are never copied into an artifact or pushed
    "edit-evidence-plot-links-out": (
        lambda w: _neuron_dir(w, {"sweep.png": "keys/id_rsa"}),
        [*EDIT[:3], "nd/neurons.json", *EDIT[4:]],
        "is a link to outside",
    ),
    "edit-evidence-folder-links-out": (
        lambda w: _neuron_dir(w, {"sweep": "keys"}),
        [*EDIT[:3], "nd/neurons.json", *EDIT[4:]],
        "is a link to outside",
    ),
    "adapter-evidence-plot-links-out": (
        lambda w: _neuron_dir(w, {"c_sweep.png": "keys/id_rsa"}),
        [*ADAPT[:3], "nd/neurons.json", *ADAPT[4:]],
        "is a link to outside",
    ),
    "gguf-evidence-plot-links-out": (
        lambda w: _neuron_dir(w, {"tune": "keys"}),
        [*GEDIT[:3], "nd/neurons.json", *GEDIT[4:]],
        "is a link to outside",
    ),
    "push-neurons-report-links-out": (
        lambda w: _neuron_dir(w, {"report.json": "keys/id_rsa"}),
        ["push", "nd/neurons.json", "--repo-id", "me/set"],
        "is a link to outside",
    ),
    "push-neurons-plot-links-out": (
        lambda w: _neuron_dir(w, {"c_sweep.png": "keys/id_rsa"}),
        ["push", "nd/neurons.json", "--repo-id", "me/set"],
        "is a link to outside",
    ),
    "push-neurons-pickle-named-png": (
        lambda w: _neuron_dir(w, files={"plot.png": pickle.dumps({"a": 1}, protocol=2)}),
        ["push", "nd/neurons.json", "--repo-id", "me/set"],
        "holds pickle files (plot.png)",
    ),
    "push-neurons-pickle-protocol-0-png": (
        lambda w: _neuron_dir(w, files={"plot.png": pickle.dumps([1], protocol=0)}),
        ["push", "nd/neurons.json", "--repo-id", "me/set"],
        "holds pickle files (plot.png)",
    ),
    "push-neurons-plot-too-large": (
        lambda w: (
            _neuron_dir(w, files={"big.png": b"\x89PNG" + b"x" * 5000}),
            {
                "attr": [
                    (
                        "hedit.io.files",
                        "LIMITS",
                        {"json": 1 << 20, "text": 1 << 20, "journal": 1 << 20, "recipe": 1 << 20, "plot": 4096},
                    )
                ]
            },
        )[1],
        ["push", "nd/neurons.json", "--repo-id", "me/set"],
        "is too large",
    ),
    "push-neurons-report-not-json": (
        lambda w: _neuron_dir(w, files={"report.json": "{nope"}),
        ["push", "nd/neurons.json", "--repo-id", "me/set"],
        "report.json: not valid JSON",
    ),
    "push-neurons-report-utf16": (
        lambda w: _neuron_dir(w, files={"report.json": '{"a": 1}'.encode("utf-16")}),
        ["push", "nd/neurons.json", "--repo-id", "me/set"],
        "report.json is not UTF-8",
    ),
    "push-neurons-report-deep": (
        lambda w: _neuron_dir(w, files={"report.json": "[" * 100000 + "]" * 100000}),
        ["push", "nd/neurons.json", "--repo-id", "me/set"],
        "nested too deeply",
    ),
    "push-neurons-revision-dots": (
        lambda w: _neuron_dir(w),
        ["push", "nd/neurons.json", "--repo-id", "me/set", "--revision", "../../x"],
        "is not a revision the Hub has",
    ),
    # ---- revisions and Hub ids the Hub would not take: refused before any call
    "neurons-revision-escapes": (
        lambda w: _write(w / "victim.txt", "mine"),
        [*EDIT[:3], "me/set@../../../../../victim.txt", *EDIT[4:]],
        "is not a revision the Hub has",
    ),
    "neurons-revision-escapes-online": (
        lambda w: (
            _write(w / "victim.txt", "mine"),
            {"env": {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:1"}},
        )[1],
        [*EDIT[:3], "me/set@../../victim.txt", *EDIT[4:]],
        "is not a revision the Hub has",
    ),
    "model-revision-escapes": (None, ["edit", "me/model@../..", *EDIT[2:]], "is not a revision the Hub has"),
    "model-revision-lock": (None, ["edit", "me/model@main.lock", *EDIT[2:]], "is not a revision the Hub has"),
    "model-revision-hidden": (None, ["sweep", "me/model@refs/.x", *SWEEP[2:]], "is not a revision the Hub has"),
    "model-id-dots": (None, ["edit", "me/x..y", *EDIT[2:]], "is not a name the Hub accepts"),
    "model-id-dashes": (None, ["edit", "me/x--y", *EDIT[2:]], "is not a name the Hub accepts"),
    "model-id-git": (None, ["verify", "me/x.git", *VERIFY[2:], "--edited", "src"], "is not a name the Hub accepts"),
    "model-id-long": (None, ["edit", "me/" + "a" * 200, *EDIT[2:]], "is not a name the Hub accepts"),
    "model-id-dot-dot-online": (
        lambda w: {"env": {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:1"}},
        ["edit", "a/..x", *EDIT[2:]],
        "is not a name the Hub accepts",
    ),
    "neurons-id-dots": (None, [*EDIT[:3], "me/x..y", *EDIT[4:]], "is not a name the Hub accepts"),
    "neurons-id-dashes": (None, [*SWEEP[:3], "me/x--y", *SWEEP[4:]], "is not a name the Hub accepts"),
    "neurons-id-git": (None, [*EDIT[:3], "me/x.git", *EDIT[4:]], "is not a name the Hub accepts"),
    "neurons-id-long": (None, [*EDIT[:3], "me/" + "b" * 200, *EDIT[4:]], "is not a name the Hub accepts"),
    # ---- data by Hub id (hf://datasets/...): its form, before any call; offline and not cached; out of reach
    "questions-dataset-form": (
        None,
        [*COLLECT[:3], "hf://datasets/trivia_qa", *COLLECT[4:]],
        "is not a Hub dataset id",
    ),
    "questions-dataset-revision-escapes": (
        lambda w: _write(w / "victim.txt", "mine"),
        [*COLLECT[:3], "hf://datasets/me/qa@..%2F..%2Fvictim.txt/train", *COLLECT[4:]],
        "is not a revision the Hub has",
    ),
    "questions-dataset-id-dots": (
        None,
        ["identify", "src", "--questions", "hf://datasets/me/x..y", "--work", "out"],
        "is not a name the Hub accepts",
    ),
    "questions-dataset-offline": (
        lambda w: {"env": {"HF_HUB_CACHE": str(w / "out-cache")}},
        [*COLLECT[:3], "hf://datasets/me/qa:rc/train", *COLLECT[4:]],
        "the Hub is offline (HF_HUB_OFFLINE) and me/qa is not in the local cache",
    ),
    "qa-questions-dataset-unreachable": (
        lambda w: {"env": {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:1"}},
        [*PROBE, "--qa-model", "src", "--qa-questions", "hf://datasets/me/qa/validation"],
        "cannot reach the Hub at http://127.0.0.1:1",
    ),
    "suite-file-dataset-unreachable": (
        lambda w: {"env": {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:1"}},
        [*SWEEP, "--suite-file", "misleading-context=hf://datasets/Salesforce/FaithEval-counterfactual-v1.0"],
        "cannot reach the Hub at http://127.0.0.1:1",
    ),
    # ---- secrets in URLs, of any characters
    "model-endpoint-password-with-quote": (
        lambda w: {"env": {"HF_ENDPOINT": "http://user:quo'teSECRET77@127.0.0.1:1", "HF_HUB_OFFLINE": "0"}},
        ["edit", "me/model", *EDIT[2:]],
        "http://***@127.0.0.1:1",
    ),
    "model-endpoint-password-with-at": (
        lambda w: {"env": {"HF_ENDPOINT": "http://us@er:p@SECRET#x@127.0.0.1:1", "HF_HUB_OFFLINE": "0"}},
        ["edit", "me/model", *EDIT[2:]],
        "http://***@127.0.0.1:1",
    ),
    "neurons-endpoint-token-in-query": (
        lambda w: {"env": {"HF_ENDPOINT": "http://127.0.0.1:1/?access_token=SECRET42", "HF_HUB_OFFLINE": "0"}},
        [*EDIT[:3], "me/set", *EDIT[4:]],
        "access_token=***",
    ),
    "judge-url-key-in-query": (
        None,
        [
            *COLLECT,
            "--judge-url",
            "http://127.0.0.1:1/v1?api_key=SECRET9&x=1",
            "--judge-model",
            "x",
            "--samples",
            "1",
            "--max-new-tokens",
            "2",
        ],
        "api_key=***",
    ),
    # ---- a user's GGUF beside a .hedit.json is replaced only when hedit wrote both and they match
    "gguf-sidecar-empty-object": (
        lambda w: (_write(w / "out.gguf", "mine"), _write(w / "out.gguf.hedit.json", "{}")),
        [*GEDIT, "--overwrite"],
        "out.gguf exists and is not a hedit output",
    ),
    "gguf-sidecar-empty-file": (
        lambda w: (_write(w / "out.gguf", "mine"), _write(w / "out.gguf.hedit.json", "")),
        [*GEDIT, "--overwrite"],
        "out.gguf exists and is not a hedit output",
    ),
    "gguf-sidecar-other-file": (
        lambda w: _hedit_gguf_sidecar(w, False),
        [*GEDIT, "--overwrite"],
        "out.gguf exists and is not a hedit output",
    ),
    "gguf-sidecar-file-changed": (
        lambda w: _hedit_gguf_sidecar(w, True),
        [*GEDIT, "--overwrite"],
        "out.gguf exists and is not a hedit output",
    ),
    "gguf-sidecar-is-a-link": (
        lambda w: (_write(w / "out.gguf", "mine"), (w / "out.gguf.hedit.json").symlink_to(w / "n.json")),
        [*GEDIT, "--overwrite"],
        "out.gguf exists and is not a hedit output",
    ),
    # ---- quantization settings and tensors that disagree: bounded and checked before any arithmetic
    "gptq-bits-3000": (
        lambda w: _quant(w, "gptq", lambda q: q.update(bits=3000)),
        ["edit", "q", "--neurons", "nq.json", "--alpha", "0", "--out", "out", "--quiet"],
        "bits must be one of",
    ),
    "gptq-bits-1e10": (
        lambda w: _quant(w, "gptq", lambda q: q.update(bits=1e10)),
        ["edit", "q", "--neurons", "nq.json", "--alpha", "0", "--out", "out", "--quiet"],
        "bits must be one of",
    ),
    "gptq-bits-1e9-int": (
        lambda w: _quant(w, "gptq", lambda q: q.update(bits=10**9)),
        ["verify", "q", "--neurons", "nq.json", "--alpha", "0", "--edited", "q", "--runtime", "structure"],
        "bits must be one of",
    ),
    "gptq-bits-string": (
        lambda w: _quant(w, "gptq", lambda q: q.update(bits="4")),
        ["edit", "q", "--neurons", "nq.json", "--alpha", "0", "--out", "out", "--quiet"],
        "bits must be one of",
    ),
    "gptq-group-disagrees": (
        lambda w: _quant(w, "gptq", lambda q: q.update(group_size=32)),
        ["edit", "q", "--neurons", "nq.json", "--alpha", "0", "--out", "out", "--quiet"],
        "scales has shape",
    ),
    "gptq-group-huge": (
        lambda w: _quant(w, "gptq", lambda q: q.update(group_size=10**12)),
        ["edit", "q", "--neurons", "nq.json", "--alpha", "0", "--out", "out", "--quiet"],
        "group_size must be -1 or an integer",
    ),
    "mlx-bits-1e10": (
        lambda w: _quant(w, "mlx", lambda q: q.update(bits=1e10)),
        ["export-adapter", "q", "--neurons", "nq.json", "--alpha", "0", "--format", "mlx-lora", "--out", "out"],
        "bits must be one of",
    ),
    "mlx-bits-3000": (
        lambda w: _quant(w, "mlx", lambda q: q.update(bits=3000)),
        ["edit", "q", "--neurons", "nq.json", "--alpha", "0", "--out", "out", "--quiet"],
        "bits must be one of",
    ),
    "mlx-bits-string": (
        lambda w: _quant(w, "mlx", lambda q: q.update(bits="4")),
        ["verify", "q", "--neurons", "nq.json", "--alpha", "0", "--edited", "q", "--runtime", "structure"],
        "bits must be one of",
    ),
    "mlx-bits-disagree": (
        lambda w: _quant(w, "mlx", lambda q: q.update(bits=8)),
        ["export-adapter", "q", "--neurons", "nq.json", "--alpha", "0", "--format", "mlx-lora", "--out", "out"],
        "says 8-bit values in groups of 32, but the tensors hold 4-bit values in groups of 32",
    ),
    "mlx-bits-disagree-edit": (
        lambda w: _quant(w, "mlx", lambda q: q.update(bits=8)),
        ["edit", "q", "--neurons", "nq.json", "--alpha", "0", "--out", "out", "--quiet"],
        "says 8-bit values in groups of 32, but the tensors hold 4-bit values",
    ),
    "mlx-group-disagrees": (
        lambda w: _quant(w, "mlx", lambda q: q.update(group_size=64)),
        ["verify", "q", "--neurons", "nq.json", "--alpha", "0", "--edited", "q", "--runtime", "structure"],
        "says 4-bit values in groups of 64, but the tensors hold 4-bit values in groups of 32",
    ),
    "mlx-biases-missing": (
        lambda w: _quant(w, "mlx", tensors=lambda sd: sd.pop("model.layers.0.mlp.up_proj.biases")),
        ["export-adapter", "q", "--neurons", "nq.json", "--alpha", "0", "--format", "mlx-lora", "--out", "out"],
        "without biases",
    ),
    "mlx-biases-wrong-shape": (
        lambda w: _quant(
            w, "mlx", tensors=lambda sd: sd.update({"model.layers.1.mlp.up_proj.biases": np.zeros((3, 2), np.float16)})
        ),
        ["edit", "q", "--neurons", "nq.json", "--alpha", "0", "--out", "out", "--quiet"],
        "biases has shape",
    ),
    "mlx-scales-wrong-shape": (
        lambda w: _quant(
            w, "mlx", tensors=lambda sd: sd.update({"model.layers.1.mlp.down_proj.scales": np.ones((2, 2), np.float16)})
        ),
        ["edit", "q", "--neurons", "nq.json", "--alpha", "0", "--out", "out", "--quiet"],
        "scales has shape",
    ),
    "mlx-module-bits-override": (
        lambda w: _quant(
            w, "mlx", lambda q: q.update({"model.layers.0.mlp.up_proj": {"bits": 1e10, "group_size": 32}})
        ),
        ["edit", "q", "--neurons", "nq.json", "--alpha", "0", "--out", "out", "--quiet"],
        "quantization.model.layers.0.mlp.up_proj: bits must be one of",
    ),
    "mlx-float-module-config-says-quantized": (
        lambda w: _quant(
            w,
            "mlx",
            lambda q: q.update({"model.layers.0.mlp.up_proj": {"bits": 4, "group_size": 32}}),
            tensors=_unquantize("model.layers.0.mlp.up_proj"),
        ),
        ["edit", "q", "--neurons", "nq.json", "--alpha", "0", "--out", "out", "--quiet"],
        "quantization.model.layers.0.mlp.up_proj asks for a quantized module, but its weight is stored in float",
    ),
    "mlx-float-module-config-says-quantized-adapter": (
        lambda w: _quant(
            w,
            "mlx",
            lambda q: q.update({"model.layers.1.mlp.down_proj": True}),
            _unquantize("model.layers.1.mlp.down_proj"),
        ),
        ["export-adapter", "q", "--neurons", "nq.json", "--alpha", "0", "--format", "mlx-lora", "--out", "out"],
        "asks for a quantized module, but its weight is stored in float",
    ),
    "mlx-quantized-module-config-says-not": (
        lambda w: _quant(w, "mlx", lambda q: q.update({"model.layers.0.mlp.up_proj": False})),
        ["edit", "q", "--neurons", "nq.json", "--alpha", "0", "--out", "out", "--quiet"],
        "quantization.model.layers.0.mlp.up_proj is false (the module left unquantized), but its weight is stored",
    ),
    "mlx-quantized-module-config-says-not-verify": (
        lambda w: _quant(w, "mlx", lambda q: q.update({"model.layers.1.mlp.gate_proj": False})),
        ["verify", "q", "--neurons", "nq.json", "--alpha", "0", "--edited", "q", "--runtime", "structure"],
        "is false (the module left unquantized), but its weight is stored quantized",
    ),
    # ---- families hedit names and refuses, with the reason (registry "refuse")
    "gemma4-moe-variant": (
        lambda w: save_tiny_model(
            w / "g4", "gemma4_text", enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=32
        ),
        ["edit", "g4", *EDIT[2:]],
        "gemma4_text with enable_moe_block: Gemma 4's mixture-of-experts variant is not mapped yet",
    ),
    "gemma4-double-wide-mlp": (
        lambda w: save_tiny_model(
            w / "g4",
            "gemma4",
            use_double_wide_mlp=True,
            num_kv_shared_layers=1,  # the last layer reuses layer 1's cache: both full attention
            layer_types=["sliding_attention", "full_attention", "full_attention"],
        ),
        ["export-adapter", "g4", *ADAPT[2:]],
        "gemma4 with use_double_wide_mlp and num_kv_shared_layers: the layers that reuse another layer's KV cache",
    ),
    # ---- numbers too large for a float
    "neuron-alpha-400-digits": (
        lambda w: _neurons(w, lambda d: d["neurons"][0].update(alpha=int("9" * 400))),
        EDIT,
        "neurons[0].alpha must be a finite number",
    ),
    "neurons-alpha-400-digits": (
        lambda w: _neurons(w, lambda d: d.update(alpha=-int("9" * 400))),
        [*EDIT[:4], *EDIT[6:]],
        "'alpha' must be a finite number",
    ),
    "neuron-index-400-digits": (
        lambda w: _neurons(w, lambda d: d["neurons"][0].update(index=int("9" * 400))),
        EDIT,
        "(400 characters) in layer 0 out of range",
    ),
    # ---- mixtures of experts whose files do not hold what the config says
    "moe-missing-an-expert-up": (
        lambda w: _moe(w, "model.layers.1.mlp.experts.3.up_proj.weight"),
        ["edit", "moe", "--neurons", "nm.json", "--alpha", "0", "--out", "out", "--quiet"],
        "layer 1 has no mlp.experts.3.up_proj.weight (expert 3 of 8)",
    ),
    "moe-missing-an-expert-gate": (
        lambda w: _moe(w, "model.layers.2.mlp.experts.7.gate_proj.weight"),
        ["edit", "moe", "--neurons", "nm.json", "--alpha", "0", "--target", "down", "--out", "out", "--quiet"],
        "layer 2 has no mlp.experts.7.gate_proj.weight",
    ),
    "moe-missing-an-expert-down-adapter": (
        lambda w: _moe(w, "model.layers.1.mlp.experts.0.down_proj.weight"),
        ["export-adapter", "moe", "--neurons", "nm.json", "--alpha", "0", "--out", "out"],
        "layer 1 has no mlp.experts.0.down_proj.weight",
    ),
    "moe-both-layouts": (
        lambda w: _moe(w, both=True),
        ["edit", "moe", "--neurons", "nm.json", "--alpha", "0", "--out", "out", "--quiet"],
        "holds its experts both one by one",
    ),
    "moe-both-layouts-sweep": (
        lambda w: _moe(w, both=True),
        ["sweep", "moe", "--neurons", "nm.json", "--out", "out", "--quiet"],
        "holds its experts both one by one",
    ),
    # ---- local lm-eval tasks lm-eval cannot build: refused before any model runs
    "sweep-lm-eval-task-unknown-key": (
        lambda w: _lm_task(w, "no_such_key: 3\n"),
        [*SWEEP, "--lm-eval", "bad_task", "--lm-eval-include", "tasks"],
        "lm-eval task 'bad_task' (tasks/t.yaml) cannot be loaded: TaskConfig",
    ),
    "sweep-lm-eval-task-missing-file": (
        lambda w: _lm_task(w, files="\n    test: tasks/nope.jsonl"),
        [*SWEEP, "--lm-eval", "bad_task", "--lm-eval-include", "tasks"],
        "cannot be loaded: Unable to find",
    ),
    "tune-lm-eval-task-bad-data-files": (
        lambda w: _lm_task(w, files="7"),
        [*TUNE, "--lm-eval", "bad_task", "--lm-eval-include", "tasks"],
        "lm-eval task 'bad_task' (tasks/t.yaml) cannot be loaded",
    ),
    # ---- the cause named right
    "verify-gguf-without-sidecar": (
        lambda w: _write(w / "e.gguf", (w / "m.gguf").read_bytes()),
        ["verify", "m.gguf", "--neurons", "n.json", "--alpha", "0", "--edited", "e.gguf", "--runtime", "structure"],
        "e.gguf has no e.gguf.hedit.json beside it",
    ),
    "verify-gguf-source-as-edited": (
        None,
        ["verify", "m.gguf", "--neurons", "n.json", "--alpha", "0", "--edited", "m.gguf", "--runtime", "structure"],
        "is the source itself",
    ),
    "gguf-source-fifo": (
        lambda w: os.mkfifo(w / "f.gguf"),
        ["edit", "f.gguf", *GEDIT[2:]],
        "f.gguf is a FIFO (named pipe), not a regular file",
    ),
    "alpha-just-over-the-bound": (None, [*EDIT[:5], "100.0000001", *EDIT[6:]], "alpha 100.0000001 is out of range"),
    "sweep-lm-eval-empty": (None, [*SWEEP, "--lm-eval", ""], "--lm-eval takes comma-separated names, got an empty"),
    "tune-max-drop-twice": (
        None,
        [*TUNE, "--lm-eval", "x", "--max-drop", "x=1,x=2"],
        "max_drop gives task 'x' twice",
    ),
    "tune-max-drop-task-not-run": (None, [*TUNE, "--max-drop", "arc_easy=2"], "which this tune does not run"),
    "identify-select-stable-without-stability": (
        None,
        ["identify", "src", "--work", "out", "--select", "stable", "--stability", "0", "--quiet"],
        "select 'stable' needs stability selection",
    ),
    # ---- chat templates, tokenizers
    "collect-template-raises": (
        lambda w: _template(w, "{{ raise_exception('no system turn allowed') }}"),
        COLLECT,
        "chat template of src cannot be applied",
    ),
    "collect-template-unknown-filter": (
        lambda w: _template(w, "{{ messages | no_such_filter }}"),
        COLLECT,
        "chat template of src cannot be applied",
    ),
    "collect-template-bad-syntax": (
        lambda w: _template(w, "{% for m in %}{{ m }}"),
        COLLECT,
        "chat template of src cannot be applied",
    ),
    "collect-template-endless": (
        lambda w: (
            _template(w, "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"),
            {"attr": [("hedit.engine.prompts", "RENDER_SECONDS", 1.0)]},
        )[1],
        COLLECT,
        "ran for more than 1 s on one prompt",
    ),
    "collect-tokenizer-config-not-json": (
        lambda w: _write(w / "src" / "tokenizer_config.json", "{nope"),
        COLLECT,
        "tokenizer_config.json: not valid JSON",
    ),
    "collect-tokenizer-json-missing": (
        lambda w: (w / "src" / "tokenizer.json").unlink(),
        COLLECT,
        "cannot load the tokenizer of src",
    ),
    # ---- huge, odd and empty inputs
    "collect-question-20mb": (
        lambda w: _write(w / "q.jsonl", json.dumps({"question": "why " * 5_000_000, "answers": ["x"]}) + "\n"),
        COLLECT,
        "characters long; hedit takes at most 100000",
    ),
    "collect-samples-huge": (None, [*COLLECT, "--samples", "1000000000"], "samples must be at most 1000"),
    "run-samples-huge": (
        lambda w: _write(w / "r.yaml", "work: out\nidentify:\n  samples: 1000000000\n"),
        ["run", "r.yaml"],
        "identify.samples must be at most 1000",
    ),
    "run-yaml-alias-bomb": (lambda w: _write(w / "r.yaml", ALIAS_BOMB), ["run", "r.yaml"], "expands to more than"),
    "run-yaml-duplicate-key": (
        lambda w: _write(w / "r.yaml", "work: out\nwork: other\n"),
        ["run", "r.yaml"],
        "the key 'work' appears twice",
    ),
    "run-empty-recipe": (lambda w: _write(w / "r.yaml", ""), ["run", "r.yaml"], "sets nothing (empty)"),
    "run-comments-only-recipe": (lambda w: _write(w / "r.yaml", "# todo\n"), ["run", "r.yaml"], "sets nothing"),
    "neurons-key-twice": (
        lambda w: _write(
            w / "n.json", (w / "n.json").read_text().replace('"neurons":', '"neurons": [], "neurons":', 1)
        ),
        EDIT,
        "the key 'neurons' appears twice",
    ),
    "sweep-alphas-empty-item": (None, [*SWEEP, "--alphas", "0,,1"], "--alphas takes comma-separated numbers"),
    "sweep-suites-empty-item": (None, [*SWEEP, "--suites", "false-premise,,sycophancy"], "an empty item"),
    "collect-questions-nul": (lambda w: _write(w / "q.jsonl", b"\x00"), COLLECT, "holds a NUL byte"),
    "collect-questions-csv-nul": (
        lambda w: _write(w / "q.csv", b"question,answers\nx\x00,y\n"),
        [*COLLECT[:3], "q.csv", *COLLECT[4:]],
        "holds a NUL byte",
    ),
    "verify-tolerance-huge": (
        None,
        [*VERIFY, "--edited", "src", "--tolerance", "1e308"],
        "tolerance must be at most 10",
    ),
    # ---- outputs: unclear messages made clear
    "edit-out-parent-is-a-file": (
        lambda w: _write(w / "f.txt", "x"),
        [*EDIT[:7], "f.txt/out", "--quiet"],
        "f.txt is a file, not a folder",
    ),
    "edit-out-name-too-long": (None, [*EDIT[:7], "x" * 250, "--quiet"], "the name is too long"),
    "sweep-out-is-a-file": (
        lambda w: _write(w / "f.txt", "x"),
        [*SWEEP[:5], "f.txt", "--quiet"],
        "is a file, not a folder",
    ),
    "collect-out-is-a-folder": (lambda w: (w / "d").mkdir(), [*COLLECT[:5], "d", "--quiet"], "is a folder"),
    "collect-out-parent-is-a-file": (
        lambda w: _write(w / "f.txt", "x"),
        [*COLLECT[:5], "f.txt/r.jsonl", "--quiet"],
        "f.txt is a file, not a folder",
    ),
    # ---- push
    "push-pickle-protocol-0-named-json": (
        lambda w: (_pushable(w), _write(w / "ed" / "data.json", pickle.dumps({"a": [1]}, protocol=0))),
        ["push", "ed", "--repo-id", "me/x"],
        "holds pickle files (data.json)",
    ),
    "push-pickle-protocol-1": (
        lambda w: (_pushable(w), _write(w / "ed" / "notes.txt", pickle.dumps([1, 2], protocol=1))),
        ["push", "ed", "--repo-id", "me/x"],
        "holds pickle files (notes.txt)",
    ),
    "push-repo-id-dots": (None, ["push", "src", "--repo-id", "me/x..y"], "is not a name the Hub accepts"),
    "push-repo-id-dashes": (None, ["push", "src", "--repo-id", "me/x--y"], "is not a name the Hub accepts"),
    "push-repo-id-leading-dot": (
        None,
        ["push", "src", "--repo-id", "me/.x"],
        "must look like owner/name|not a name the Hub accepts",
    ),
    "push-repo-id-git": (None, ["push", "src", "--repo-id", "me/x.git"], "is not a name the Hub accepts"),
    "push-repo-id-long": (None, ["push", "src", "--repo-id", "me/" + "a" * 200], "is not a name the Hub accepts"),
    # ---- the LLM judge
    "collect-judge-file-url": (
        None,
        [*COLLECT, "--judge-url", "file:///etc/passwd", "--judge-model", "x"],
        "--judge-url must be an http:// or https:// address",
    ),
    "collect-judge-dead": (
        None,
        [
            *COLLECT,
            "--judge-url",
            "http://127.0.0.1:1/v1",
            "--judge-model",
            "x",
            "--samples",
            "1",
            "--max-new-tokens",
            "2",
        ],
        "cannot reach the LLM judge",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(pristine, tmp_path, monkeypatch, name):
    setup, argv, message = CASES[name]
    world = tmp_path / "world"
    shutil.copytree(pristine, world, symlinks=True)
    for p in (world / "src").iterdir():
        p.chmod(0o644)
    monkeypatch.chdir(world)
    extra = setup(world) if setup is not None else None
    extra = extra if isinstance(extra, dict) else {}
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HEDIT_VLLM_PYTHON", raising=False)
    for key, value in extra.get("env", {}).items():
        monkeypatch.setenv(key, value)
    for module, attr, value in extra.get("attr", []):
        monkeypatch.setattr(importlib.import_module(module), attr, value)
    before = digest(world)
    with time_limit(CASE_SECONDS, name):  # a hang is a failure
        r = run_cli(*argv)
    err = r.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert r.exit_code not in (0, None), (name, r.output)
    assert len(lines) == 1 and lines[0].startswith("hedit: error: "), (name, err)
    assert "Traceback" not in r.output + err and TOKEN not in r.output + err
    assert "SECRET" not in r.output + err  # no credential in any URL is ever printed
    assert re.search(message, lines[0]) if "|" in message else message in lines[0], (name, lines[0])
    assert digest(world) == before, name  # nothing changed, nothing left beside --out, nothing written elsewhere


def test_the_suite_covers_every_command_that_reads_input():
    commands = {argv[0] for _, argv, _ in CASES.values()}
    assert len(CASES) >= 200
    assert commands >= {
        "identify",
        "edit",
        "export-adapter",
        "verify",
        "collect",
        "filter",
        "features",
        "probe",
        "sweep",
        "tune",
        "run",
        "push",
    }
