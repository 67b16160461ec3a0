"""Builders of test inputs shared by several test files: GGUF files with valid random blocks of any type,
GGUF files crafted byte by byte (overlapping, misaligned, mis-shaped tensors), and quantized safetensors
checkpoints packed from known integer weights."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T
from safetensors.torch import load_file, save_file

from hedit.edit.gguf_blocks import FLOATS, ROW_SCALES
from hedit.io.quant import AWQ_ORDER
from hedit.model.tiny import save_tiny_model
from hedit.neurons import ModelInfo, Neuron, NeuronSet

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
        # offsets as real weights have them: a block's range holds 0 (its values have both signs)
        d = raw[:, :, 0:2].copy().view(np.float16).astype(np.float32)
        if qtype.name in ("Q4_1", "Q5_1"):  # value = d * q + m, m the block's minimum
            top = 15 if qtype.name == "Q4_1" else 31
            m = -d * rng.uniform(0.2 * top, 0.8 * top, d.shape)
            raw[:, :, 2:4] = m.astype(np.float16).view(np.uint8)
        elif qtype.name in ("Q4_K", "Q5_K"):  # value = d * sc * q - dmin * mn: dmin small beside d
            raw[:, :, 2:4] = (d / 6).astype(np.float16).view(np.uint8)  # offset <= 63 d / 6, within 15 steps
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


def quantized(tmp_path, fmt: str, seed: int = 0, model_type: str = "llama", **model):
    """A tiny ``model_type`` checkpoint (llama by default; ``model``: its config overrides) whose MLP
    projections, experts' one by one included (the router is left float, as quantizers leave it), are stored
    in ``fmt``; returns (folder, {name: W})."""
    rng = np.random.default_rng(seed)
    shape = dict(
        hidden_size=Q_HIDDEN,
        intermediate_size=Q_INTER,
        num_hidden_layers=Q_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
    )
    src = save_tiny_model(tmp_path / "float", model_type, **(shape | model))
    sd = load_file(src / "model.safetensors")
    out, want = {}, {}
    for name, t in sd.items():
        if ".mlp." not in name or not name.endswith("_proj.weight"):
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


# ------------------------------------------------------------------------------------------ crafted GGUF


def _gguf_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _gguf_value(v) -> bytes:
    """(type, bytes) of a metadata value: bool, int (u32), float (f32), str, or a list of ints."""
    if isinstance(v, bool):
        return struct.pack("<I", 7) + struct.pack("<?", v)
    if isinstance(v, int):
        return struct.pack("<I", 4) + struct.pack("<I", v)
    if isinstance(v, float):
        return struct.pack("<I", 6) + struct.pack("<f", v)
    if isinstance(v, str):
        return struct.pack("<I", 8) + _gguf_string(v)
    return struct.pack("<I", 9) + struct.pack("<IQ", 4, len(v)) + b"".join(struct.pack("<I", x) for x in v)


def craft_gguf(path, metadata: dict, tensors: list, alignment: int = 32) -> Path:
    """A GGUF file written byte by byte, so that it can be wrong in ways gguf-py's writer never is:
    ``tensors`` is a list of (name, shape in GGUF order, F32 values or None, data offset); an offset of
    None puts the tensor where it would lie after the ones before it (aligned), a tensor's name puts it
    where that one would lie, (name, delta) a few bytes off; so an offset may overlap another tensor, be
    misaligned or out of order. Values default to ones."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for k, v in metadata.items():
        head += _gguf_string(k) + _gguf_value(v)
    auto, pos = {}, 0  # where each tensor would lie, one after another
    for name, shape, _, _ in tensors:
        auto[name] = -(-pos // alignment) * alignment
        pos = auto[name] + 4 * int(np.prod(shape))
    infos, blobs, pos = b"", [], 0
    for name, shape, values, offset in tensors:
        n = int(np.prod(shape))
        data = (np.ones(n, np.float32) if values is None else np.asarray(values, np.float32).reshape(-1)).tobytes()
        if offset is None:
            offset = auto[name]
        elif isinstance(offset, str):  # where that tensor would lie
            offset = auto[offset]
        elif isinstance(offset, tuple):  # (name, delta)
            offset = auto[offset[0]] + offset[1]
        infos += _gguf_string(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        infos += struct.pack("<IQ", 0, offset)  # type 0: F32
        blobs.append((offset, data))
        pos = max(pos, offset + len(data))
    header = head + infos
    start = -(-len(header) // alignment) * alignment
    body = bytearray(pos)
    for offset, data in blobs:
        body[offset : offset + len(data)] = data
    Path(path).write_bytes(header + bytes(start - len(header)) + bytes(body))
    return Path(path)


def llama_gguf_tensors(layers: int = 3, inter: int = 96, hidden: int = 64, up_rows: int | None = None) -> list:
    """The tensors of a tiny F32 llama GGUF for ``craft_gguf``, each after the one before."""
    out = [("token_embd.weight", (hidden, 16), None, None)]
    for layer in range(layers):
        out.append((f"blk.{layer}.ffn_down.weight", (inter, hidden), None, None))
        out.append((f"blk.{layer}.ffn_up.weight", (hidden, up_rows or inter), None, None))
    return out


def llama_gguf_metadata(layers: int = 3, inter: int = 96, hidden: int = 64, **extra) -> dict:
    return {
        "general.architecture": "llama",
        "llama.block_count": layers,
        "llama.feed_forward_length": inter,
        "llama.embedding_length": hidden,
    } | extra


def write_moe_gguf(path, up_type: T = T.Q8_0, seed: int = 0, arch: str = "qwen2moe", dense_first: int = 0) -> Path:
    """A mixture of experts as llama.cpp writes it: per MoE layer stacked ``ffn_{gate,up,down}_exps``
    ([experts, I, hidden] in numpy order) and a shared expert (``*_shexp``, qwen2moe), ``dense_first``
    leading dense layers (``ffn_up``/``ffn_down``, deepseek2's ``leading_dense_block_count``)."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(LAYERS + dense_first)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTER * 2)
    w.add_expert_count(MOE_EXPERTS)
    w.add_expert_used_count(2)
    w.add_expert_feed_forward_length(INTER)
    if arch == "qwen2moe":
        w.add_expert_shared_feed_forward_length(INTER)
    if dense_first:
        w.add_leading_dense_block_count(dense_first)
    w.add_string("general.name", "tiny-moe")
    w.add_tensor("token_embd.weight", rng.standard_normal((16, HIDDEN)).astype(np.float32))

    def add(name, data, t):
        w.add_tensor(name, data) if t.name in ("F32", "F16") else w.add_tensor(name, data, raw_dtype=t)

    for layer in range(LAYERS + dense_first):
        if layer < dense_first:
            add(f"blk.{layer}.ffn_up.weight", random_blocks(up_type, 2 * INTER, HIDDEN, seed + layer), up_type)
            add(f"blk.{layer}.ffn_down.weight", random_blocks(T.F32, HIDDEN, 2 * INTER, seed + layer), T.F32)
            continue
        for kind in ("gate", "up"):
            rows = random_blocks(up_type, MOE_EXPERTS * INTER, HIDDEN, seed + 7 * layer + (kind == "up"))
            add(f"blk.{layer}.ffn_{kind}_exps.weight", rows.reshape(MOE_EXPERTS, INTER, -1), up_type)
        down = random_blocks(T.F32, MOE_EXPERTS * HIDDEN, INTER, seed + 20 + layer).reshape(MOE_EXPERTS, HIDDEN, INTER)
        add(f"blk.{layer}.ffn_down_exps.weight", down, T.F32)
        if arch == "qwen2moe":
            add(f"blk.{layer}.ffn_up_shexp.weight", random_blocks(up_type, INTER, HIDDEN, seed + 40 + layer), up_type)
            add(f"blk.{layer}.ffn_down_shexp.weight", random_blocks(T.F32, HIDDEN, INTER, seed + 50 + layer), T.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


MOE_EXPERTS = 4


def mlx_affine(src: Path, dst: Path, bits: int = 4, group: int = 32, float_modules: tuple[str, ...] = ()) -> Path:
    """A copy of a float checkpoint in mlx-lm's affine layout (what `mlx_lm convert -q` writes): every MLP
    projection as uint32 words of ``bits``-bit values packed little-endian along the input, with a float16
    scale and bias per group of ``group`` inputs; config.json gains ``quantization``. ``float_modules``
    stay float (no scales, no config entry), as a quantization predicate that skips them leaves them."""
    import shutil

    from safetensors.numpy import load_file as load_np
    from safetensors.numpy import save_file as save_np

    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file() and p.suffix != ".safetensors":
            shutil.copy(p, dst / p.name)
    out, per = {}, 32 // bits
    for name, w in load_np(str(src / "model.safetensors")).items():
        if ".mlp." not in name or not name.endswith(".weight") or name[: -len(".weight")] in float_modules:
            out[name] = w
            continue
        g = w.reshape(w.shape[0], -1, group)
        lo, hi = g.min(-1), g.max(-1)
        scale = ((hi - lo) / (2**bits - 1)).astype(np.float16)
        bias = lo.astype(np.float16)
        s32, b32 = scale.astype(np.float32), bias.astype(np.float32)
        q = np.clip(np.round((g - b32[..., None]) / s32[..., None]), 0, 2**bits - 1).astype(np.uint32)
        q = q.reshape(w.shape[0], -1, per)
        words = np.zeros(q.shape[:2], dtype=np.uint32)
        for k in range(per):
            words |= q[..., k] << np.uint32(bits * k)
        base = name[: -len(".weight")]
        out[name], out[f"{base}.scales"], out[f"{base}.biases"] = words, scale, bias
    save_np(out, str(dst / "model.safetensors"), metadata={"format": "mlx"})
    config = json.loads((src / "config.json").read_text())
    q = {"group_size": group, "bits": bits, "mode": "affine"}
    (dst / "config.json").write_text(json.dumps(config | {"quantization": q, "quantization_config": q}))
    return dst


def mxfp4_gpt_oss(src: Path, dst: Path) -> Path:
    """A copy of a float gpt_oss checkpoint (stacked experts) in the layout of the released gpt-oss
    checkpoints: each layer's ``experts.gate_up_proj`` and ``experts.down_proj`` as ``_blocks`` (E2M1 codes,
    two a byte, the even input low) and ``_scales`` (E8M0) of 32 inputs each, over the transposed [E, out,
    in] matrices; config.json gains ``quantization_config`` (``mxfp4``)."""
    import shutil

    from safetensors.numpy import load_file as load_np
    from safetensors.numpy import save_file as save_np

    from hedit.io.quant import fp4_values

    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file() and p.suffix != ".safetensors":
            shutil.copy(p, dst / p.name)
    vals, out = fp4_values()[:8], {}
    for name, w in load_np(str(src / "model.safetensors")).items():
        if not name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            out[name] = w
            continue
        g = np.swapaxes(w, 1, 2).reshape(w.shape[0], w.shape[2], -1, 32)  # [E, out, in / 32, 32]
        e = np.clip(np.ceil(np.log2(np.maximum(np.abs(g).max(-1), 1e-30) / 6.0)), -127, 127).astype(np.int32)
        v = g / np.ldexp(1.0, e)[..., None]
        code = (np.abs(np.abs(v)[..., None] - vals).argmin(-1) + 8 * (v < 0)).astype(np.uint8)
        code = code.reshape(*code.shape[:-1], 16, 2)
        out[f"{name}_blocks"] = np.ascontiguousarray(code[..., 0] | (code[..., 1] << 4))
        out[f"{name}_scales"] = np.ascontiguousarray((e + 127).astype(np.uint8))
    save_np(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((src / "config.json").read_text())
    skip = ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": skip}
    (dst / "config.json").write_text(json.dumps(config))
    return dst
