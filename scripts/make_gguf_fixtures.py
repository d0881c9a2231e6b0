"""Make the GGUF fixtures: small .gguf files written by the `gguf` package, and what the references read from them.

    $REFPYTHON scripts/make_gguf_fixtures.py        # gguf 0.19, torch 2.13 CPU, transformers 5.24

(transformers loads a GGUF file only with the `accelerate` package installed in that venv.)

Writes tests/fixtures/gguf/ (see its README.md):

    blocks.gguf, blocks.reference.safetensors
        one tensor of random blocks per type microqwen decodes (F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1
        Q2_K Q3_K Q4_K Q5_K Q6_K), and gguf-py's `gguf.quants.dequantize` of each (F32).
    metadata.gguf, metadata.json
        a value of every metadata type (nested arrays too), alignment 64, and the values written.
    tokenizer.gguf, tokenizer.json
        a small byte-level BPE vocabulary with Qwen2.5's added tokens and chat template, as llama.cpp's
        converter writes one; the JSON has what transformers' GGUF tokenizer makes of it.
    <model>.gguf, <model>.reference.safetensors
        tiny Qwen2 models: tests/fixtures/models/mha-hd16-theta1e4-tied converted (BF16, Q8_0, and a
        mix of F32, F16, BF16 and the 32-weight block formats), and a model whose MLP is 256 wide so
        that each layer's down_proj can be a k-quant. The reference is transformers loading the .gguf
        (`Qwen2ForCausalLM.from_pretrained(dir, gguf_file=..., dtype=torch.float32)`): logits at every
        prompt position, the residual stream after each layer, 16 greedy tokens and their logits, and
        in the metadata the SHA-256 of gguf-py's dequantisation of every tensor.

gguf-py quantises the float and 32-weight formats itself; it has no k-quant quantiser, so the ones
here (`quantize_q2_k` ...) are written for this script: simple, not llama.cpp's, and checked by
dequantising with gguf-py (a packing mistake would not come back near the weights).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from typing import Any, Callable

import gguf
import numpy as np
import safetensors.torch
import torch
import transformers
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from make_model_fixtures import Scales, init_weights, record_trace  # noqa: E402
from tests import qwen_vocab  # noqa: E402

OUT = os.path.join(ROOT, "tests", "fixtures", "gguf")
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
GREEDY_TOKENS = 16
QK_K = 256

# ---------------------------------------------------------------------------------------------------
# k-quant quantisers (numpy): the inverse of gguf-py's dequantize_blocks, one super-block of 256 per row


def _f16(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16)


def _safe_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b == 0, 0.0, a / np.where(b == 0, 1.0, b))


def _scale_min(blocks: np.ndarray, group: int, levels: int, scale_bits: int) -> tuple[np.ndarray, ...]:
    """Per group: scale = (max - min') / levels, minimum m = -min' (min' = min(x, 0)), both quantised
    against the super-block's float16 d and dmin to `scale_bits` unsigned bits; then q."""
    n = blocks.shape[0]
    groups = blocks.reshape(n, -1, group)
    low = np.minimum(groups.min(axis=-1), 0.0)
    scale = (groups.max(axis=-1) - low) / levels
    top = (1 << scale_bits) - 1
    d = _f16(scale.max(axis=-1, keepdims=True) / top)
    dmin = _f16(-low.min(axis=-1, keepdims=True) / top)
    sc = np.clip(np.rint(_safe_divide(scale, d.astype(np.float32))), 0, top).astype(np.uint8)
    m = np.clip(np.rint(_safe_divide(-low, dmin.astype(np.float32))), 0, top).astype(np.uint8)
    step = d.astype(np.float32) * sc
    q = np.rint(_safe_divide(groups + (dmin.astype(np.float32) * m)[..., None], step[..., None]))
    return d, dmin, sc, m, np.clip(q, 0, levels).astype(np.uint8).reshape(n, QK_K)


def _pack_k_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins into the 12 bytes of Q4_K/Q5_K (gguf-py's Q4_K.get_scale_min, inverted)."""
    out = np.zeros((sc.shape[0], 12), np.uint8)
    out[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    return out


def _nibbles(q: np.ndarray) -> np.ndarray:
    """Q4_K's 128 bytes: byte 32c + l = q[64c + l] | q[64c + 32 + l] << 4."""
    q = q.reshape(q.shape[0], 4, 2, 32)
    return (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(q.shape[0], 128)


def _two_bit_planes(q: np.ndarray) -> np.ndarray:
    """Q2_K/Q3_K's 64 bytes: byte 32h + l holds q[128h + 32k + l] in bits 2k..2k+1."""
    q = q.reshape(q.shape[0], 2, 4, 32)
    return (q[:, :, 0] | q[:, :, 1] << 2 | q[:, :, 2] << 4 | q[:, :, 3] << 6).reshape(q.shape[0], 64)


def quantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    d, dmin, sc, m, q = _scale_min(blocks, 32, 15, 6)
    return np.concatenate([d.view(np.uint8), dmin.view(np.uint8), _pack_k_scales(sc, m), _nibbles(q)], axis=1)


def quantize_q5_k(blocks: np.ndarray) -> np.ndarray:
    d, dmin, sc, m, q = _scale_min(blocks, 32, 31, 6)
    high = (q >> 4).reshape(q.shape[0], 8, 32)  # bit j of byte l: bit 4 of q[32j + l]
    qh = np.zeros((q.shape[0], 32), np.uint8)
    for j in range(8):
        qh |= high[:, j, :] << j
    return np.concatenate([d.view(np.uint8), dmin.view(np.uint8), _pack_k_scales(sc, m), qh, _nibbles(q & 15)], axis=1)


def quantize_q2_k(blocks: np.ndarray) -> np.ndarray:
    d, dmin, sc, m, q = _scale_min(blocks, 16, 3, 4)
    return np.concatenate([sc | (m << 4), _two_bit_planes(q), d.view(np.uint8), dmin.view(np.uint8)], axis=1)


def _signed_scales(blocks: np.ndarray, levels: int, scale_top: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups of 16, weight = d * s * q with q in -levels..levels-1 and s in 0..scale_top."""
    n = blocks.shape[0]
    groups = blocks.reshape(n, 16, 16)
    scale = np.abs(groups).max(axis=-1) / levels
    d = _f16(scale.max(axis=-1, keepdims=True) / scale_top)
    s = np.clip(np.rint(_safe_divide(scale, d.astype(np.float32))), 0, scale_top).astype(np.int32)
    q = np.rint(_safe_divide(groups, (d.astype(np.float32) * s)[..., None]))
    return d, s, np.clip(q, -levels, levels - 1).astype(np.int32).reshape(n, QK_K)


def quantize_q3_k(blocks: np.ndarray) -> np.ndarray:
    d, s, q = _signed_scales(blocks, 4, 31)
    u = (q + 4).astype(np.uint8)  # 0..7: bit 2 goes to hmask (set = no -4 offset)
    hmask = np.zeros((u.shape[0], 32), np.uint8)
    for bit in range(8):
        hmask |= ((u[:, 32 * bit : 32 * bit + 32] >> 2) & 1) << bit
    stored = (s + 32).astype(np.uint8)  # 6 bits
    scales = np.zeros((u.shape[0], 12), np.uint8)
    scales[:, 0:8] = (stored[:, 0:8] & 15) | ((stored[:, 8:16] & 15) << 4)
    for k in range(4):
        scales[:, 8:12] |= (stored[:, 4 * k : 4 * k + 4] >> 4) << (2 * k)
    return np.concatenate([hmask, _two_bit_planes(u & 3), scales, d.view(np.uint8)], axis=1)


def quantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    d, s, q = _signed_scales(blocks, 32, 127)
    u = (q + 32).astype(np.uint8).reshape(-1, 2, 128)  # 0..63, per half h
    low = (u[:, :, 0:64] & 15) | ((u[:, :, 64:128] & 15) << 4)  # byte 64h + l
    high = u.reshape(-1, 2, 4, 32) >> 4
    qh = high[:, :, 0] | high[:, :, 1] << 2 | high[:, :, 2] << 4 | high[:, :, 3] << 6  # byte 32h + l
    return np.concatenate([low.reshape(-1, 128), qh.reshape(-1, 64), s.astype(np.int8).view(np.uint8),
                           d.view(np.uint8)], axis=1)  # fmt: skip


K_QUANTIZERS: dict[Q, Callable[[np.ndarray], np.ndarray]] = {
    Q.Q2_K: quantize_q2_k, Q.Q3_K: quantize_q3_k, Q.Q4_K: quantize_q4_k, Q.Q5_K: quantize_q5_k, Q.Q6_K: quantize_q6_k,
}
K_ERROR_LIMITS = {Q.Q2_K: 0.45, Q.Q3_K: 0.3, Q.Q4_K: 0.12, Q.Q5_K: 0.06, Q.Q6_K: 0.03}
"""Relative RMS error each quantiser must stay under on Gaussian weights (a mispacked one gives about 1.4)."""


def quantize(weights: np.ndarray, qtype: Q) -> np.ndarray:
    """float32 [rows, cols] -> what GGUFWriter.add_tensor takes for `qtype` (values or uint8 blocks)."""
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    if qtype == Q.F32:
        return weights
    if qtype in K_QUANTIZERS:
        blocks = K_QUANTIZERS[qtype](weights.reshape(-1, QK_K))
        packed = blocks.reshape(weights.shape[0], -1)
        back = gguf.quants.dequantize(packed, qtype).reshape(weights.shape)
        error = np.sqrt(np.mean((back - weights) ** 2) / np.mean(weights**2))
        if not error < K_ERROR_LIMITS[qtype]:
            raise SystemExit(f"{qtype.name}: relative RMS error {error:.3f} after a round trip; the packing is wrong")
        return packed
    return gguf.quants.quantize(weights, qtype)


# ---------------------------------------------------------------------------------------------------
# Random blocks of every type

F16_FIELDS = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0], Q.Q2_K: [80, 82],
              Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}  # fmt: skip
"""Where each block format keeps its float16 scales: these get finite values, every other byte is random."""

FLOAT_SPECIALS = {
    Q.F32: [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0x00000001, 0x807FFFFF],
    Q.F16: [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0x0001, 0x83FF, 0x3C00, 0x7BFF],
    Q.BF16: [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0x0001, 0x807F, 0x3F80],
}
"""Zeros, infinities, NaNs (quiet and signalling, with payloads), subnormals: widening must keep their bits."""


def random_scales(rng: np.random.Generator, count: int) -> np.ndarray:
    """float16 scales: mostly normal with random sign and exponent, some subnormal, some zero."""
    exponent = rng.integers(-14, 4, size=count).astype(np.float64)
    values = rng.choice([-1.0, 1.0], size=count) * rng.uniform(1, 2, size=count) * 2.0**exponent
    kind = rng.integers(0, 10, size=count)
    values = np.where(kind == 0, 0.0, np.where(kind == 1, values * 2.0**-12, values))  # 2^-26..2^-8: subnormal f16
    return values.astype(np.float16)


def random_tensor(rng: np.random.Generator, qtype: Q, rows: int, cols: int) -> np.ndarray:
    """[rows, cols] of `qtype` as GGUFWriter takes it: random bytes, finite float16 scales."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block
    if qtype in FLOAT_SPECIALS:
        dtype = {Q.F32: np.uint32, Q.F16: np.uint16, Q.BF16: np.uint16}[qtype]
        bits = rng.integers(0, np.iinfo(dtype).max, size=rows * cols, dtype=dtype, endpoint=True)
        bits[: len(FLOAT_SPECIALS[qtype])] = FLOAT_SPECIALS[qtype]
        return bits.view(np.uint8).reshape(rows, -1)
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for at in F16_FIELDS[qtype]:
        raw[:, at : at + 2] = random_scales(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(rows, -1)


BLOCK_TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]


def make_blocks(out: str) -> None:
    """blocks.gguf: a tensor per type, named `q4_k` etc.: 2 rows of 2 blocks for the k-quants, 4 rows of 2
    blocks for the 32-weight formats, 4 rows of 48 for the float types; and gguf-py's dequantisation of each."""
    rng = np.random.default_rng(17)
    writer = gguf.GGUFWriter(os.path.join(out, "blocks.gguf"), "blocks")
    reference = {}
    for qtype in BLOCK_TYPES:
        block = gguf.GGML_QUANT_SIZES[qtype][0]
        rows, cols = (2, 2 * block) if block == QK_K else (4, 2 * block) if block > 1 else (4, 48)
        data = random_tensor(rng, qtype, rows, cols)
        writer.add_tensor(qtype.name.lower(), data, raw_dtype=qtype)
        reference[qtype.name.lower()] = torch.from_numpy(
            np.asarray(gguf.quants.dequantize(data, qtype), dtype=np.float32).reshape(rows, cols).copy())
    _write(writer)
    save_reference(os.path.join(out, "blocks.reference.safetensors"), reference,
                   {"generator": "scripts/make_gguf_fixtures.py", "reference": "gguf.quants.dequantize",
                    "gguf_version": _gguf_version()})  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Metadata of every type

METADATA: list[tuple[str, Any, V, V | None]] = [
    ("general.name", "metadata fixture: every GGUF value type", V.STRING, None),
    ("test.uint8", 200, V.UINT8, None),
    ("test.int8", -100, V.INT8, None),
    ("test.uint16", 60000, V.UINT16, None),
    ("test.int16", -30000, V.INT16, None),
    ("test.uint32", 4_000_000_000, V.UINT32, None),
    ("test.int32", -2_000_000_000, V.INT32, None),
    ("test.uint64", 2**64 - 1, V.UINT64, None),
    ("test.int64", -(2**63), V.INT64, None),
    ("test.float32", 0.1, V.FLOAT32, None),  # stored as the float32 nearest 0.1
    ("test.float64", 0.1, V.FLOAT64, None),
    ("test.bool.true", True, V.BOOL, None),
    ("test.bool.false", False, V.BOOL, None),
    ("test.string.unicode", "héllo, 世界 😀 <|im_end|>\n\ttab", V.STRING, None),
    ("test.array.uint8", [0, 1, 255], V.ARRAY, V.UINT8),
    ("test.array.int16", [-32768, 0, 32767], V.ARRAY, V.INT16),
    ("test.array.uint64", [0, 2**63, 2**64 - 1], V.ARRAY, V.UINT64),
    ("test.array.float32", [1.5, -0.25, 3.0e38], V.ARRAY, V.FLOAT32),
    ("test.array.float64", [1e-300, -2.5], V.ARRAY, V.FLOAT64),
    ("test.array.bool", [True, False, True], V.ARRAY, V.BOOL),
    ("test.array.string", ["a", "", "Ġworld", "中"], V.ARRAY, V.STRING),
    ("test.array.nested", [[1, 2, 3], [4], [5, 6]], V.ARRAY, None),  # arrays of int32 arrays
    ("test.array.nested2", [[["x"], ["y", "z"]], [["w"]]], V.ARRAY, None),  # three levels, strings inside
]


def make_metadata(out: str) -> None:
    """metadata.gguf (alignment 64, two small tensors) and metadata.json: what was written, and its types."""
    path = os.path.join(out, "metadata.gguf")
    writer = gguf.GGUFWriter(path, "test")
    writer.add_custom_alignment(64)
    for key, value, vtype, sub_type in METADATA:
        writer.add_key_value(key, value, vtype, sub_type=sub_type)
    writer.add_tensor("a.weight", np.arange(6, dtype=np.float32).reshape(2, 3))  # 24 bytes, then 40 of padding
    writer.add_tensor("b.weight", np.arange(5, dtype=np.float16))
    _write(writer)
    reader = gguf.GGUFReader(path)
    written = {key: (vtype, sub_type, value) for key, value, vtype, sub_type in METADATA}
    written["general.architecture"] = (V.STRING, None, "test")
    written["general.alignment"] = (V.UINT32, None, 64)
    expected: dict[str, Any] = {}  # in file order
    for key in reader.fields:
        if key.startswith("GGUF."):
            continue
        vtype, sub_type, value = written[key]
        if "nested" not in key:  # gguf-py's reader does not give nested arrays' contents back
            rounded = np.asarray(value, dtype=np.float32).tolist() if V.FLOAT32 in (vtype, sub_type) else value
            assert reader.fields[key].contents() == rounded, key
            value = rounded
        expected[key] = {"type": _type_name(vtype, sub_type, value), "value": value}
    tensors = {t.name: {"type": t.tensor_type.name, "dims": [int(d) for d in t.shape], "offset": int(t.data_offset),
                        "bytes": int(t.n_bytes)} for t in reader.tensors}  # fmt: skip
    document = {"generator": "scripts/make_gguf_fixtures.py", "gguf_version": _gguf_version(),
                "data_offset": int(reader.data_offset), "fields": expected, "tensors": tensors}  # fmt: skip
    with open(os.path.join(out, "metadata.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(document, indent=1, ensure_ascii=False) + "\n")


def _type_name(vtype: V, sub_type: V | None, value: Any) -> str:
    names = {V.UINT8: "uint8", V.INT8: "int8", V.UINT16: "uint16", V.INT16: "int16", V.UINT32: "uint32",
             V.INT32: "int32", V.FLOAT32: "float32", V.BOOL: "bool", V.STRING: "string", V.UINT64: "uint64",
             V.INT64: "int64", V.FLOAT64: "float64"}  # fmt: skip
    if vtype != V.ARRAY:
        return names[vtype]
    if sub_type is not None:
        return f"array[{names[sub_type]}]"
    inner = value[0]
    if isinstance(inner, list):
        return f"array[{_type_name(V.ARRAY, None, inner)}]"
    return f"array[{names[V.get_type(inner)]}]"


# ---------------------------------------------------------------------------------------------------
# A tokenizer, as llama.cpp's converter writes one

SMALL_ADDED = [("<|endoftext|>", 3), ("<|im_start|>", 3), ("<|im_end|>", 3), ("<tool_call>", 4),
               ("</tool_call>", 4), ("<|fim_prefix|>", 3), ("[PAD271]", 5)]  # fmt: skip
"""Added tokens after the small vocabulary: llama.cpp marks `<|...|>` control (3) even where Hugging Face
has special=False (<|fim_prefix|>), `<tool_call>` user-defined (4), and the padding up to the embedding
size unused (5)."""

TOKENIZER_STRINGS = qwen_vocab.SMALL_STRINGS + [
    "hello<|im_end|>world", "<|im_start|>user\nhello<|im_end|>\n", "<tool_call>abc</tool_call>",
    "a<|fim_prefix|>b", "<|endoftext|><|endoftext|>", "hello <|im_end", "[PAD271]", "é中😀 2024\r\n",
]  # fmt: skip

DECODE_IDS = [[271], [266, 97, 267], [97, 270, 98], [268, 97, 269], [265, 104, 105], [195], [195, 169, 271]]
"""Id lists to decode: the unused [PAD271], control and user-defined tokens, a UTF-8 sequence cut short."""


def write_tokenizer_metadata(writer: gguf.GGUFWriter, tokens: list[str], types: list[int], merges: list[str],
                             eos: int, pad: int, template: str | None) -> None:  # fmt: skip
    """The tokenizer keys, in the order llama.cpp's convert_hf_to_gguf.py writes them for Qwen2."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(eos)
    writer.add_pad_token_id(pad)
    writer.add_bos_token_id(pad)
    writer.add_add_bos_token(False)
    if template is not None:
        writer.add_chat_template(template)


def make_tokenizer(out: str) -> None:
    name = "tricky"
    vocab = qwen_vocab.small_vocab(name)
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    types = [1] * len(tokens)
    for content, kind in SMALL_ADDED:
        tokens.append(content)
        types.append(kind)
    assert tokens.index("[PAD271]") == 271
    path = os.path.join(out, "tokenizer.gguf")
    writer = gguf.GGUFWriter(path, "qwen2")
    write_tokenizer_metadata(writer, tokens, types, qwen_vocab.SMALL_TOKENIZERS[name][1], tokens.index("<|im_end|>"),
                             tokens.index("<|endoftext|>"), qwen_vocab.INSTRUCT_CHAT_TEMPLATE)  # fmt: skip
    _write(writer)
    directory = tempfile.mkdtemp(prefix="gguf-tokenizer-")
    try:
        shutil.copy(path, directory)
        hf = AutoTokenizer.from_pretrained(directory, gguf_file="tokenizer.gguf")
    finally:
        shutil.rmtree(directory)
    cases = []
    for text in TOKENIZER_STRINGS:
        ids = hf.encode(text, add_special_tokens=False)
        cases.append({"text": text, "ids": ids, "decoded": hf.decode(ids),
                      "decoded_skip_special": hf.decode(ids, skip_special_tokens=True)})  # fmt: skip
    decodes = [{"ids": ids, "decoded": hf.decode(ids), "decoded_skip_special": hf.decode(ids, skip_special_tokens=True)}
               for ids in DECODE_IDS]  # fmt: skip
    special = sorted(hf.all_special_tokens)
    document = {"generator": "scripts/make_gguf_fixtures.py", "reference": "AutoTokenizer.from_pretrained(dir, gguf_file=)",
                "transformers_version": transformers.__version__, "vocab_size": len(hf), "special_tokens": special,
                "eos_token": hf.eos_token, "cases": cases, "decodes": decodes}  # fmt: skip
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(document, indent=1, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------------
# Models

HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight", "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}  # fmt: skip
"""Hugging Face -> llama.cpp names (gguf-py's tensor_mapping.py, written out here on its own)."""


def gguf_tensor_name(hf: str) -> str:
    if hf in HF_TO_GGUF:
        return HF_TO_GGUF[hf]
    _, _, layer, rest = hf.split(".", 3)
    return f"blk.{layer}.{HF_TO_GGUF[rest]}"


TypeChoice = Callable[[str, int], Q]
"""(Hugging Face tensor name, layer or -1) -> the type to store a matrix in (1-D tensors are always F32)."""


def all_of(qtype: Q) -> TypeChoice:
    return lambda name, layer: qtype


MIXED_LAYERS = {
    0: {"q_proj": Q.F16, "k_proj": Q.F16, "v_proj": Q.F16, "o_proj": Q.F16, "gate_proj": Q.F16, "up_proj": Q.F16, "down_proj": Q.F16},
    1: {"q_proj": Q.F32, "k_proj": Q.F32, "v_proj": Q.F32, "o_proj": Q.F32, "gate_proj": Q.BF16, "up_proj": Q.BF16, "down_proj": Q.BF16},
    2: {"q_proj": Q.Q4_0, "k_proj": Q.Q4_1, "v_proj": Q.Q5_0, "o_proj": Q.Q5_1, "gate_proj": Q.Q4_0, "up_proj": Q.Q4_1, "down_proj": Q.Q5_0},
    3: {"q_proj": Q.Q5_1, "k_proj": Q.Q5_0, "v_proj": Q.Q4_1, "o_proj": Q.Q4_0, "gate_proj": Q.Q5_1, "up_proj": Q.Q5_0, "down_proj": Q.Q4_1},
}  # fmt: skip


def mixed(name: str, layer: int) -> Q:
    """Embedding BF16; layer 0 F16, layer 1 F32 attention and BF16 MLP, layers 2-3 the 32-weight block formats."""
    return Q.BF16 if layer < 0 else MIXED_LAYERS[layer][name.split(".")[-2]]


K_DOWN = [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]


def k_mix(name: str, layer: int) -> Q:
    """Like Qwen2.5's Q4_K_M file: Q5_0 where rows are 32-multiples, Q8_0 for v and the head; down_proj (rows
    of 256) in a k-quant, a different one in each layer."""
    if name == "lm_head.weight" or name.endswith("v_proj.weight"):
        return Q.Q8_0
    if name.endswith("down_proj.weight"):
        return K_DOWN[layer]
    return Q.Q5_0


def write_model_gguf(path: str, config: Qwen2Config, state: dict[str, torch.Tensor], choose: TypeChoice,
                     file_type: int | None) -> dict[str, str]:  # fmt: skip
    """A Qwen2 model as llama.cpp lays it out; returns the SHA-256 of gguf-py's dequantisation of each tensor."""
    writer = gguf.GGUFWriter(path, "qwen2")
    writer.add_name(os.path.basename(path))
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens = [qwen_vocab.bytes_to_unicode()[byte] for byte in range(256)]  # id = byte, as the model's vocab of 256
    write_tokenizer_metadata(writer, tokens, [1] * 256, [], config.eos_token_id, config.bos_token_id, None)
    digests = {}
    for hf in _tensor_order(config):
        values = state[hf].detach().to(torch.float32).numpy()
        layer = int(hf.split(".")[2]) if hf.startswith("model.layers.") else -1
        qtype = choose(hf, layer) if values.ndim == 2 else Q.F32
        data = quantize(values, qtype)
        name = gguf_tensor_name(hf)
        writer.add_tensor(name, data, raw_dtype=None if qtype in (Q.F32, Q.F16) else qtype)
        back = np.asarray(gguf.quants.dequantize(data, qtype), dtype=np.float32)
        digests[name] = hashlib.sha256(back.tobytes()).hexdigest()
    _write(writer)
    return digests


def _tensor_order(config: Qwen2Config) -> list[str]:
    """llama.cpp's order for Qwen2: output, token_embd, then each block, then output_norm."""
    names = [] if config.tie_word_embeddings else ["lm_head.weight"]
    names.append("model.embed_tokens.weight")
    for i in range(config.num_hidden_layers):
        names += [f"model.layers.{i}.{leaf}" for leaf in (
            "input_layernorm.weight", "mlp.down_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
            "post_attention_layernorm.weight", "self_attn.k_proj.bias", "self_attn.k_proj.weight",
            "self_attn.o_proj.weight", "self_attn.q_proj.bias", "self_attn.q_proj.weight", "self_attn.v_proj.bias",
            "self_attn.v_proj.weight")]  # fmt: skip
    return names + ["model.norm.weight"]


def reference_from_gguf(path: str, input_ids: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """transformers loading the .gguf: logits, residual stream, greedy tokens; and the top-1 minus top-2
    margins of the logits (at the prompt positions and at each greedy step)."""
    model = Qwen2ForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=path, dtype=torch.float32,
                                             attn_implementation="eager")  # fmt: skip
    model.eval()
    logits, trace = record_trace(model, input_ids)
    keep = ["embed_tokens", *(f"layers.{i}" for i in range(model.config.num_hidden_layers)), "norm"]
    greedy_ids, greedy_logits = greedy(model, input_ids, GREEDY_TOKENS)
    tensors = {"input_ids": input_ids, "logits": logits, "greedy_ids": greedy_ids, "greedy_logits": greedy_logits,
               **{name: trace[name] for name in keep}}  # fmt: skip
    margins = {}
    for key in ("logits", "greedy_logits"):
        top2 = tensors[key].topk(2, dim=-1).values
        margins[f"{key}_margin_min"] = float((top2[:, 0] - top2[:, 1]).min())
    return tensors, margins


def greedy(model: Qwen2ForCausalLM, input_ids: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` argmax tokens, each from a full causal pass over the sequence so far (no cache, no eos)."""
    ids, chosen = input_ids.clone(), []
    with torch.no_grad():
        for _ in range(count):
            logits = model(ids[None], use_cache=False).logits[0, -1]
            chosen.append(logits)
            ids = torch.cat([ids, logits.argmax().reshape(1)])
    return ids[input_ids.numel() :], torch.stack(chosen)


def save_reference(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    safetensors.torch.save_file({name: t.contiguous() for name, t in tensors.items()}, path, metadata)
    with open(path, "r+b") as f:  # metadata keys sorted, for byte-identical reruns (as make_model_fixtures.py)
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":")).encode("utf-8").ljust(size)
        assert len(text) == size
        f.seek(8)
        f.write(text)


def make_model(out: str, stem: str, config: Qwen2Config, state: dict[str, torch.Tensor], choose: TypeChoice,
               file_type: int | None, input_ids: torch.Tensor, recipe: str) -> dict[str, torch.Tensor]:  # fmt: skip
    path = os.path.join(out, f"{stem}.gguf")
    digests = write_model_gguf(path, config, state, choose, file_type)
    tensors, margins = reference_from_gguf(path, input_ids)
    if not margins["greedy_logits_margin_min"] > 1e-3:
        raise SystemExit(f"{stem}: a greedy top-1/top-2 margin under 1e-3 ({margins}); a 1e-4 test could flip a token")
    metadata = {
        "generator": "scripts/make_gguf_fixtures.py", "model": stem, "recipe": recipe,
        "reference": "Qwen2ForCausalLM.from_pretrained(dir, gguf_file=..., dtype=torch.float32, attn_implementation='eager')",
        "greedy": f"{GREEDY_TOKENS} argmax tokens, each from a full causal pass (no cache, no eos)",
        "dequantized_sha256": json.dumps(digests, sort_keys=True), "torch_version": torch.__version__,
        "transformers_version": transformers.__version__, "gguf_version": _gguf_version(),
        "python_version": platform.python_version(), **{key: f"{value:.4g}" for key, value in margins.items()},
    }  # fmt: skip
    save_reference(os.path.join(out, f"{stem}.reference.safetensors"), tensors, metadata)
    print(f"{stem}: {os.path.getsize(path):,} bytes, margins {margins}", file=sys.stderr)
    return tensors


def make_converted(out: str) -> None:
    """tests/fixtures/models/mha-hd16-theta1e4-tied in three type mixes; the BF16 file must give the
    safetensors reference's logits (the same weights)."""
    name = "mha-hd16-theta1e4-tied"
    directory = os.path.join(MODELS, name)
    model = Qwen2ForCausalLM.from_pretrained(directory, dtype=torch.float32)
    state = model.state_dict()
    original = safetensors.torch.load_file(os.path.join(directory, "reference.safetensors"))
    input_ids = original["input_ids"]
    recipes = [("BF16", all_of(Q.BF16), gguf.LlamaFileType.MOSTLY_BF16, "every matrix BF16, 1-D tensors F32"),
               ("Q8_0", all_of(Q.Q8_0), gguf.LlamaFileType.MOSTLY_Q8_0, "every matrix Q8_0, 1-D tensors F32"),
               ("mixed", mixed, None, "see MIXED_LAYERS: embedding BF16, layers F16 / F32+BF16 / 32-weight blocks")]
    for suffix, choose, file_type, recipe in recipes:
        tensors = make_model(out, f"{name}.{suffix}", model.config, state, choose, file_type, input_ids, recipe)
        if suffix == "BF16":
            difference = float((tensors["logits"] - original["logits"]).abs().max())
            if not difference < 1e-5:
                raise SystemExit(f"{name}.BF16.gguf: logits differ from the safetensors reference by {difference}")


KQUANT_CONFIG = dict(vocab_size=256, max_position_embeddings=128, rms_norm_eps=1e-6, hidden_act="silu",
                     use_sliding_window=False, bos_token_id=254, eos_token_id=255, hidden_size=32,
                     intermediate_size=256, num_hidden_layers=5, num_attention_heads=2, num_key_value_heads=1,
                     rope_theta=1e6, tie_word_embeddings=False)  # fmt: skip


def make_kquants(out: str) -> None:
    """A new tiny model (seeded like the model fixtures) whose down_proj rows are 256 weights: one k-quant a layer."""
    config = Qwen2Config(**KQUANT_CONFIG)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    init_weights(model, Scales(final_norm_mean=1.0), seed=5)
    input_ids = torch.randint(0, 254, (20,), generator=torch.Generator().manual_seed(105))
    make_model(out, "kquants-gqa2-untied", model.config, model.state_dict(), k_mix, None, input_ids,
               "seeded random weights (make_model_fixtures.init_weights, seed 5); see k_mix")


def _write(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=OUT, help=f"output directory (default {OUT})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.makedirs(args.out, exist_ok=True)
    make_blocks(args.out)
    make_metadata(args.out)
    make_tokenizer(args.out)
    make_converted(args.out)
    make_kquants(args.out)
    total = sum(os.path.getsize(os.path.join(args.out, name)) for name in os.listdir(args.out))
    print(f"{args.out}: {total:,} bytes in all", file=sys.stderr)


if __name__ == "__main__":
    main()
