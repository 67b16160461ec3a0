"""Builders of test inputs shared by several test files: GGUF files with valid random blocks of any type,
and quantized safetensors checkpoints packed from known integer weights."""

from __future__ import annotations

import json

import gguf
import numpy as np
import torch
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T
from safetensors.torch import load_file, save_file

from hedit.edit.gguf_blocks import FLOATS, ROW_SCALES
from hedit.edit.neurons import ModelInfo, Neuron, NeuronSet
from hedit.io.quant import AWQ_ORDER
from hedit.model.tiny import save_tiny_model

HIDDEN, INTER, LAYERS = 256, 64, 2  # GGUF files: rows of 256 values, one block of every type per ffn_up row


def random_blocks(qtype: T, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Valid random data of ``qtype`` ([rows, bytes]): random quantized bytes, finite scales."""
    rng = np.random.default_rng(seed)
    if qtype.name in FLOATS:
        x = rng.standard_normal((rows, cols)).astype(np.float32) * 0.05
        return gguf.quants.quantize(x, qtype)
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    if qtype.name in ROW_SCALES:
        for off in ROW_SCALES[qtype.name][2]:
            raw[:, :, off : off + 2] = (
                rng.uniform(0.001, 0.01, (rows, cols // block, 1)).astype(np.float16).view(np.uint8)
            )
    elif qtype.name == "IQ1_M":
        d = rng.uniform(0.001, 0.01, (rows, cols // block)).astype(np.float16).view(np.uint16)
        words = raw[:, :, 48:56].copy().view(np.uint16) & np.uint16(0x0FFF)
        for k in range(4):
            words[:, :, k] |= ((d >> np.uint16(4 * k)) & np.uint16(0xF)) << np.uint16(12)
        raw[:, :, 48:56] = words.view(np.uint8)
    elif qtype.name == "MXFP4":
        raw[:, :, 0] = rng.integers(110, 125, (rows, cols // block))
    return raw.reshape(rows, -1)


def write_gguf(path, up_type: T, down_type: T = T.F32, seed: int = 0, arch: str = "llama", fused: bool = False):
    """Two layers; the intermediate size is INTER, or 256 when ffn_down is block-quantized (one block a row)."""
    rng = np.random.default_rng(seed)
    inter = INTER if down_type.name in FLOATS else 256
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(inter)
    w.add_embedding_length(HIDDEN)
    w.add_string("general.name", "tiny")
    w.add_tensor("token_embd.weight", rng.standard_normal((16, HIDDEN)).astype(np.float32))
    for layer in range(LAYERS):
        up = random_blocks(up_type, 2 * inter if fused else inter, HIDDEN, seed + layer)
        down = random_blocks(down_type, HIDDEN, inter, seed + 10 + layer)
        for name, data, t in (
            (f"blk.{layer}.ffn_up.weight", up, up_type),
            (f"blk.{layer}.ffn_down.weight", down, down_type),
        ):
            if t.name in ("F32", "F16"):
                w.add_tensor(name, data)
            else:
                w.add_tensor(name, data, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def neurons(pairs, alpha=None, model_type="llama", layers=LAYERS, inter=INTER):
    return NeuronSet(ModelInfo(model_type, layers, inter), [Neuron(la, j, alpha) for la, j in pairs])


Q_HIDDEN, Q_INTER, Q_LAYERS, G = 128, 256, 2, 64  # quantized checkpoints


def pack_rows(q: np.ndarray) -> np.ndarray:
    """[n, c] 4-bit ints -> [n/8, c] int32, value k of a word at bits 4k (GPTQ qweight)."""
    n, c = q.shape
    w = q.reshape(n // 8, 8, c).astype(np.uint32)
    return (w << (np.arange(8, dtype=np.uint32)[None, :, None] * 4)).sum(axis=1, dtype=np.uint32).view(np.int32)


def pack_cols(q: np.ndarray, order=tuple(range(8))) -> np.ndarray:
    """[r, c] 4-bit ints -> [r, c/8] int32; slot k of a word holds column 8m + order[k]."""
    r, c = q.shape
    w = q.reshape(r, c // 8, 8)[:, :, list(order)].astype(np.uint32)
    return (w << (np.arange(8, dtype=np.uint32) * 4)).sum(axis=2, dtype=np.uint32).view(np.int32)


def quantized(tmp_path, fmt: str, seed: int = 0):
    """A tiny llama checkpoint whose MLP projections are stored in ``fmt``; returns (folder, {name: W})."""
    rng = np.random.default_rng(seed)
    src = save_tiny_model(
        tmp_path / "float",
        "llama",
        hidden_size=Q_HIDDEN,
        intermediate_size=Q_INTER,
        num_hidden_layers=Q_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
    )
    sd = load_file(src / "model.safetensors")
    out, want = {}, {}
    for name, t in sd.items():
        if ".mlp." not in name:
            out[name] = t
            continue
        base = name[: -len(".weight")]
        o, i = t.shape
        if fmt == "fp8":
            q = torch.from_numpy(rng.standard_normal((o, i)).astype(np.float32) * 100).to(torch.float8_e4m3fn)
            s = torch.from_numpy(rng.uniform(1e-4, 1e-3, (o, 1)).astype(np.float32))
            out[name], out[base + ".weight_scale"] = q, s
            want[base] = q.float().numpy() * s.numpy()
            continue
        q = rng.integers(0, 16, (o, i))
        z = rng.integers(0, 16, (o, i // G))
        s = rng.uniform(1e-3, 1e-2, (o, i // G)).astype(np.float16)
        g = np.arange(i) // G
        if fmt == "gptq":
            out[base + ".qweight"] = torch.from_numpy(pack_rows(q.T.copy()))
            out[base + ".qzeros"] = torch.from_numpy(pack_cols((z.T - 1) % 16))
            out[base + ".scales"] = torch.from_numpy(s.T.copy())
            out[base + ".g_idx"] = torch.from_numpy(g.astype(np.int32))
            want[base] = s.astype(np.float32)[:, g] * (q - ((z - 1) % 16 + 1)[:, g])
        elif fmt == "awq":
            out[base + ".qweight"] = torch.from_numpy(pack_cols(q.T.copy(), AWQ_ORDER))
            out[base + ".qzeros"] = torch.from_numpy(pack_cols(z.T.copy(), AWQ_ORDER))
            out[base + ".scales"] = torch.from_numpy(s.T.copy())
            want[base] = s.astype(np.float32)[:, g] * (q - z[:, g])
        else:  # pack-quantized, symmetric: stored q + 8
            out[base + ".weight_packed"] = torch.from_numpy(pack_cols(q))
            out[base + ".weight_scale"] = torch.from_numpy(s.astype(np.float32))
            out[base + ".weight_shape"] = torch.tensor([o, i])
            want[base] = s.astype(np.float32)[:, g] * (q - 8)
    folder = tmp_path / fmt
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in out.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = {
        "gptq": {"quant_method": "gptq", "bits": 4, "group_size": G},
        "awq": {"quant_method": "awq", "bits": 4, "group_size": G, "version": "gemm"},
        "packed": {"quant_method": "compressed-tensors", "format": "pack-quantized"},
        "fp8": {"quant_method": "compressed-tensors", "format": "float-quantized"},
    }[fmt]
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder, want
