"""Quantised weights: GGML's block formats (the tensor types of a GGUF file), decoded bit by bit.

A quantised tensor is cut into blocks of 32 or 256 consecutive weights of one row. Each block
stores small integers q (2 to 8 bits each) and one or two float16 numbers that turn them back
into weights:

    weight = d * q            the "_0" formats and Q3_K, Q6_K (q signed)
    weight = d * q + m        the "_1" formats (m: the block's minimum)
    weight = d * q - m        Q2_K, Q4_K, Q5_K (q and m unsigned; m a per-group minimum)

The K formats ("k-quants") nest: a super-block of 256 weights has a float16 `d` (and `dmin`),
and each group of 16 or 32 weights in it has its own small integer scale (and minimum) that
multiplies `d`. Bits per weight, scales included:

| type | block | bytes | bits/weight | weight |
|---|---|---|---|---|
| Q8_0 | 32 | 34 | 8.5 | d * q, q int8 |
| Q4_0 | 32 | 18 | 4.5 | d * (q - 8), q 0..15 |
| Q4_1 | 32 | 20 | 5.0 | d * q + m, q 0..15 |
| Q5_0 | 32 | 22 | 5.5 | d * (q - 16), q 0..31 |
| Q5_1 | 32 | 24 | 6.0 | d * q + m, q 0..31 |
| Q2_K | 256 | 84 | 2.625 | d * s * q - dmin * m, q 0..3, 4-bit s, m per 16 |
| Q3_K | 256 | 110 | 3.4375 | d * (s - 32) * (q - 4), q 0..7, 6-bit s per 16 |
| Q4_K | 256 | 144 | 4.5 | d * s * q - dmin * m, q 0..15, 6-bit s, m per 32 |
| Q5_K | 256 | 176 | 5.5 | d * s * q - dmin * m, q 0..31, 6-bit s, m per 32 |
| Q6_K | 256 | 210 | 6.5625 | d * s * (q - 32), q 0..63, int8 s per 16 |

Each `dequantize_*` function below decodes one format and gives its byte layout; `dequantize`
picks the right one and returns the weights as float32. Every product in these formulas is exact
in float32 (a float16 has 11 significant bits, the integers and scales at most 12 more), so the
only rounding is the one addition or subtraction of a minimum: the block formats compute each
weight in Python's float64, where that sum is exact too (`BLOCK_FORMATS` returns those exact
values), and storing into `array('f')` rounds it once to the nearest float32. That is bit for bit
what the reference computes (the `gguf` package's float32 numpy arithmetic, which transformers
uses to load a GGUF file). The float types F32, F16 and BF16 are widened by their bits.

The `dot_*` kernels compute a row of W times x straight from the blocks, llama.cpp's way:
per block, the scale times the dot product of the block's integers with x, minus the minimum
times the sum of x, so a weight is never materialised. `matvec` runs one over every row.

The table of every type a GGUF file may name (`TYPES`) follows ggml's `enum ggml_type`
(ggml docs/gguf.md) and gguf-py's `GGML_QUANT_SIZES` (gguf-py/gguf/constants.py); the layouts
follow gguf-py's `gguf/quants.py`.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass
from typing import Callable, Sequence, Union

from . import bf16

Blocks = Union[bytes, bytearray, "array[int]"]
"""Raw block bytes: `bytes` or an `array('B')` (indexing either gives ints 0..255)."""


@dataclass(frozen=True)
class GGMLType:
    """One tensor type of a GGUF file: its id in the file, its name, and its block geometry."""

    id: int
    name: str
    block_size: int  # weights per block
    type_size: int  # bytes per block

    @property
    def bits_per_weight(self) -> float:
        """8 x bytes / weights: 8.5 for Q8_0 (34 bytes hold 32 weights)."""
        return 8 * self.type_size / self.block_size

    def row_bytes(self, row_length: int) -> int:
        """Bytes of one row of `row_length` weights (a multiple of `block_size`)."""
        return row_length // self.block_size * self.type_size


TYPES: dict[int, GGMLType] = {t.id: t for t in (
    GGMLType(0, "F32", 1, 4), GGMLType(1, "F16", 1, 2), GGMLType(2, "Q4_0", 32, 18), GGMLType(3, "Q4_1", 32, 20),
    GGMLType(6, "Q5_0", 32, 22), GGMLType(7, "Q5_1", 32, 24), GGMLType(8, "Q8_0", 32, 34),
    GGMLType(9, "Q8_1", 32, 36), GGMLType(10, "Q2_K", 256, 84), GGMLType(11, "Q3_K", 256, 110),
    GGMLType(12, "Q4_K", 256, 144), GGMLType(13, "Q5_K", 256, 176), GGMLType(14, "Q6_K", 256, 210),
    GGMLType(15, "Q8_K", 256, 292), GGMLType(16, "IQ2_XXS", 256, 66), GGMLType(17, "IQ2_XS", 256, 74),
    GGMLType(18, "IQ3_XXS", 256, 98), GGMLType(19, "IQ1_S", 256, 50), GGMLType(20, "IQ4_NL", 32, 18),
    GGMLType(21, "IQ3_S", 256, 110), GGMLType(22, "IQ2_S", 256, 82), GGMLType(23, "IQ4_XS", 256, 136),
    GGMLType(24, "I8", 1, 1), GGMLType(25, "I16", 1, 2), GGMLType(26, "I32", 1, 4), GGMLType(27, "I64", 1, 8),
    GGMLType(28, "F64", 1, 8), GGMLType(29, "IQ1_M", 256, 56), GGMLType(30, "BF16", 1, 2),
    GGMLType(34, "TQ1_0", 256, 54), GGMLType(35, "TQ2_0", 256, 66), GGMLType(39, "MXFP4", 32, 17),
    GGMLType(40, "NVFP4", 64, 36), GGMLType(41, "Q1_0", 128, 18),
)}  # fmt: skip
"""Every tensor type a GGUF file can name, by id (ids 4, 5 and 31-33, 36-38 were removed from ggml)."""

BY_NAME: dict[str, GGMLType] = {t.name: t for t in TYPES.values()}

F16: list[float] = list(struct.unpack("<65536e", struct.pack("<65536H", *range(65536))))
"""Every float16 value, indexed by its 16 bits: `F16[0x3C00] == 1.0` (the scales of every block format)."""

SIGNED = [byte - 256 if byte > 127 else byte for byte in range(256)]
"""A byte read as an int8: `SIGNED[0xFF] == -1`."""


def _half(data: Blocks, at: int) -> float:
    """The float16 stored little-endian at bytes at, at+1."""
    return F16[data[at] | data[at + 1] << 8]


# ---------------------------------------------------------------- plain floats (exact: bits, not arithmetic)


def dequantize_f32(data: Blocks) -> array[float]:
    """F32: 4 bytes per weight, an IEEE float32, little-endian."""
    values = array("f")
    values.frombytes(bytes(data))
    if sys.byteorder == "big":
        values.byteswap()
    return values


def _f16_to_f32_bits(bits: int) -> int:
    """The float32 bit pattern of a float16's value: the same sign, exponent and mantissa, widened.

    Infinities and NaN (exponent 31) keep their mantissa as the top mantissa bits, as a hardware
    conversion does; every other float16 is exactly a float32 (struct does the subnormals).
    """
    if bits & 0x7C00 != 0x7C00:
        wide: int = struct.unpack("<I", struct.pack("<f", F16[bits]))[0]
        return wide
    return (bits >> 15) << 31 | 0x7F800000 | (bits & 0x3FF) << 13


_F16_AS_F32 = [_f16_to_f32_bits(bits) for bits in range(65536)]


def dequantize_f16(data: Blocks) -> array[float]:
    """F16: 2 bytes per weight, an IEEE float16 (1 sign, 5 exponent, 10 mantissa bits), little-endian."""
    halves = array("H")
    halves.frombytes(bytes(data))
    if sys.byteorder == "big":
        halves.byteswap()
    values = array("f")
    values.frombytes(array("I", [_F16_AS_F32[h] for h in halves]).tobytes())
    return values


def dequantize_bf16(data: Blocks) -> array[float]:
    """BF16: 2 bytes per weight, the top half of a float32 (`microqwen.bf16`), little-endian."""
    return bf16.to_floats(bytes(data))


# ---------------------------------------------------------------- blocks of 32


def dequantize_q8_0(data: Blocks) -> list[float]:
    """Q8_0: 32 weights in 34 bytes, weight = d * q.

        bytes 0-1     d, float16
        bytes 2-33    q[0..31], one int8 each
    """
    values: list[float] = []
    for b in range(0, len(data), 34):
        d = _half(data, b)
        values += [d * SIGNED[q] for q in data[b + 2 : b + 34]]
    return values


def dequantize_q4_0(data: Blocks) -> list[float]:
    """Q4_0: 32 weights in 18 bytes, weight = d * (q - 8) with q in 0..15.

        bytes 0-1     d, float16
        bytes 2-17    16 bytes: byte 2+i holds q[i] in its low nibble, q[i+16] in its high nibble
    """
    values: list[float] = []
    for b in range(0, len(data), 18):
        d, qs = _half(data, b), data[b + 2 : b + 18]
        values += [d * ((q & 15) - 8) for q in qs]
        values += [d * ((q >> 4) - 8) for q in qs]
    return values


def dequantize_q4_1(data: Blocks) -> list[float]:
    """Q4_1: 32 weights in 20 bytes, weight = d * q + m with q in 0..15.

        bytes 0-1     d, float16
        bytes 2-3     m, float16 (the block's minimum)
        bytes 4-19    q as in Q4_0: low nibbles are q[0..15], high nibbles q[16..31]
    """
    values: list[float] = []
    for b in range(0, len(data), 20):
        d, m, qs = _half(data, b), _half(data, b + 2), data[b + 4 : b + 20]
        values += [d * (q & 15) + m for q in qs]
        values += [d * (q >> 4) + m for q in qs]
    return values


def _fifth_bits(data: Blocks, at: int) -> int:
    """The 32-bit little-endian word at `at`: bit i is the fifth (high) bit of q[i] in Q5_0/Q5_1."""
    return data[at] | data[at + 1] << 8 | data[at + 2] << 16 | data[at + 3] << 24


def dequantize_q5_0(data: Blocks) -> list[float]:
    """Q5_0: 32 weights in 22 bytes, weight = d * (q - 16) with q in 0..31.

        bytes 0-1     d, float16
        bytes 2-5     qh, a little-endian uint32: bit i is bit 4 of q[i]
        bytes 6-21    the low 4 bits of q as in Q4_0: low nibbles q[0..15], high nibbles q[16..31]
    """
    values: list[float] = []
    for b in range(0, len(data), 22):
        d, qh, qs = _half(data, b), _fifth_bits(data, b + 2), data[b + 6 : b + 22]
        values += [d * ((q & 15 | (qh >> i & 1) << 4) - 16) for i, q in enumerate(qs)]
        values += [d * ((q >> 4 | (qh >> (i + 16) & 1) << 4) - 16) for i, q in enumerate(qs)]
    return values


def dequantize_q5_1(data: Blocks) -> list[float]:
    """Q5_1: 32 weights in 24 bytes, weight = d * q + m with q in 0..31.

        bytes 0-1     d, float16
        bytes 2-3     m, float16
        bytes 4-7     qh: bit i is bit 4 of q[i]
        bytes 8-23    the low 4 bits of q, as in Q5_0
    """
    values: list[float] = []
    for b in range(0, len(data), 24):
        d, m, qh, qs = _half(data, b), _half(data, b + 2), _fifth_bits(data, b + 4), data[b + 8 : b + 24]
        values += [d * (q & 15 | (qh >> i & 1) << 4) + m for i, q in enumerate(qs)]
        values += [d * (q >> 4 | (qh >> (i + 16) & 1) << 4) + m for i, q in enumerate(qs)]
    return values


# ---------------------------------------------------------------- super-blocks of 256 (k-quants)


def dequantize_q2_k(data: Blocks) -> list[float]:
    """Q2_K: 256 weights in 84 bytes, weight = d * s[g] * q - dmin * m[g] with q in 0..3.

        bytes 0-15    one byte per group g of 16 weights: s[g] in the low nibble, m[g] in the high
        bytes 16-79   q, 2 bits each: for half h (bytes 16+32h .. 47+32h) and shift k in 0..3,
                      bits 2k..2k+1 of byte 16+32h+l are q[128h + 32k + l]
        bytes 80-81   d, float16
        bytes 82-83   dmin, float16
    """
    values: list[float] = []
    for b in range(0, len(data), 84):
        d, dmin = _half(data, b + 80), _half(data, b + 82)
        for h in range(2):
            qs = b + 16 + 32 * h
            for k in range(4):
                for half in range(2):  # the two groups of 16 that these 32 weights form
                    scale = data[b + 8 * h + 2 * k + half]
                    dl, ml = d * (scale & 15), dmin * (scale >> 4)
                    start = qs + 16 * half
                    values += [dl * (q >> 2 * k & 3) - ml for q in data[start : start + 16]]
    return values


def _q3_k_scales(data: Blocks, at: int) -> list[int]:
    """The 16 six-bit scales of a Q3_K block, minus 32, from the 12 bytes at `at`.

    Bytes 0-7 hold the low 4 bits (scale j < 8 in the low nibble of byte j, scale j >= 8 in the
    high nibble of byte j - 8); bytes 8-11 hold the high 2 bits (scale j in bits 2(j // 4) ..
    2(j // 4) + 1 of byte 8 + j % 4).
    """
    return [(data[at + j % 8] >> 4 * (j // 8) & 15 | (data[at + 8 + j % 4] >> 2 * (j // 4) & 3) << 4) - 32
            for j in range(16)]  # fmt: skip


def dequantize_q3_k(data: Blocks) -> list[float]:
    """Q3_K: 256 weights in 110 bytes, weight = d * s[g] * q with q in -4..3 and s[g] in -32..31.

        bytes 0-31    hmask: bit k of byte l is the high bit of weight 32k + l; q = low - 4 where it is 0
        bytes 32-95   the low 2 bits of q, packed as Q2_K's q: weight 128h + 32k + l in bits 2k..2k+1
                      of byte 32+32h+l
        bytes 96-107  s, 16 six-bit scales, one per group of 16 weights (see `_q3_k_scales`)
        bytes 108-109 d, float16
    """
    values: list[float] = []
    for b in range(0, len(data), 110):
        d, scales = _half(data, b + 108), _q3_k_scales(data, b + 96)
        for h in range(2):
            for k in range(4):
                bit = 4 * h + k  # weights 128h + 32k + l have their high bit in bit 4h + k of hmask[l]
                for half in range(2):
                    dl = d * scales[8 * h + 2 * k + half]
                    first = 16 * half
                    values += [dl * ((data[b + 32 + 32 * h + l] >> 2 * k & 3) - (0 if data[b + l] >> bit & 1 else 4))
                               for l in range(first, first + 16)]  # fmt: skip
    return values


def _k_scales(data: Blocks, at: int) -> tuple[list[int], list[int]]:
    """The 8 six-bit scales and 8 six-bit minimums of a Q4_K / Q5_K block, from the 12 bytes at `at`.

        bytes 0-3     scale j (j < 4) in bits 0-5; bits 6-7 are the top bits of scale j + 4
        bytes 4-7     min j (j < 4) in bits 0-5; bits 6-7 are the top bits of min j + 4
        bytes 8-11    scale j + 4 low 4 bits in the low nibble, min j + 4 low 4 bits in the high
    """
    s = data[at : at + 12]
    scales = [s[j] & 63 for j in range(4)] + [s[j + 8] & 15 | (s[j] >> 6) << 4 for j in range(4)]
    mins = [s[j + 4] & 63 for j in range(4)] + [s[j + 8] >> 4 | (s[j + 4] >> 6) << 4 for j in range(4)]
    return scales, mins


def dequantize_q4_k(data: Blocks) -> list[float]:
    """Q4_K: 256 weights in 144 bytes, weight = d * s[j] * q - dmin * m[j] with q in 0..15.

        bytes 0-1     d, float16
        bytes 2-3     dmin, float16
        bytes 4-15    s[j] and m[j], six bits each, for the 8 groups j of 32 weights (`_k_scales`)
        bytes 16-143  q, 4 bits each: byte 16+32c+l holds weight 64c + l in its low nibble (group 2c)
                      and weight 64c + 32 + l in its high nibble (group 2c + 1)
    """
    values: list[float] = []
    for b in range(0, len(data), 144):
        d, dmin = _half(data, b), _half(data, b + 2)
        scales, mins = _k_scales(data, b + 4)
        for c in range(4):
            qs = data[b + 16 + 32 * c : b + 48 + 32 * c]
            low_d, low_m = d * scales[2 * c], dmin * mins[2 * c]
            high_d, high_m = d * scales[2 * c + 1], dmin * mins[2 * c + 1]
            values += [low_d * (q & 15) - low_m for q in qs]
            values += [high_d * (q >> 4) - high_m for q in qs]
    return values


def dequantize_q5_k(data: Blocks) -> list[float]:
    """Q5_K: 256 weights in 176 bytes, weight = d * s[j] * q - dmin * m[j] with q in 0..31.

        bytes 0-1     d, float16
        bytes 2-3     dmin, float16
        bytes 4-15    s[j], m[j] as in Q4_K
        bytes 16-47   qh: bit j of byte 16+l is bit 4 of weight 32j + l
        bytes 48-175  the low 4 bits of q, packed as Q4_K's q
    """
    values: list[float] = []
    for b in range(0, len(data), 176):
        d, dmin = _half(data, b), _half(data, b + 2)
        scales, mins = _k_scales(data, b + 4)
        qh = data[b + 16 : b + 48]
        for c in range(4):
            qs = data[b + 48 + 32 * c : b + 80 + 32 * c]
            low_d, low_m = d * scales[2 * c], dmin * mins[2 * c]
            high_d, high_m = d * scales[2 * c + 1], dmin * mins[2 * c + 1]
            values += [low_d * (q & 15 | (h >> 2 * c & 1) << 4) - low_m for q, h in zip(qs, qh)]
            values += [high_d * (q >> 4 | (h >> 2 * c + 1 & 1) << 4) - high_m for q, h in zip(qs, qh)]
    return values


def dequantize_q6_k(data: Blocks) -> list[float]:
    """Q6_K: 256 weights in 210 bytes, weight = d * s[g] * (q - 32) with q in 0..63.

        bytes 0-127   the low 4 bits of q: for half h, byte 64h+l holds weight 128h + l in its low
                      nibble and weight 128h + 64 + l in its high nibble (l in 0..63)
        bytes 128-191 the high 2 bits of q: bits 2k..2k+1 of byte 128+32h+l belong to weight
                      128h + 32k + l
        bytes 192-207 s[g], one int8 scale per group g of 16 weights
        bytes 208-209 d, float16
    """
    values: list[float] = []
    for b in range(0, len(data), 210):
        d = _half(data, b + 208)
        for h in range(2):
            for k in range(4):  # weights 128h + 32k + l, l in 0..31
                low_byte, shift = b + 64 * h + 32 * (k % 2), 4 * (k // 2)
                high_byte = b + 128 + 32 * h
                for half in range(2):
                    dl = d * SIGNED[data[b + 192 + 8 * h + 2 * k + half]]
                    first = 16 * half
                    values += [dl * ((data[low_byte + l] >> shift & 15 | (data[high_byte + l] >> 2 * k & 3) << 4) - 32)
                               for l in range(first, first + 16)]  # fmt: skip
    return values


FLOATS: dict[str, Callable[[Blocks], array[float]]] = {
    "F32": dequantize_f32, "F16": dequantize_f16, "BF16": dequantize_bf16,
}
"""The float types, widened to float32 bit for bit."""

BLOCK_FORMATS: dict[str, Callable[[Blocks], list[float]]] = {
    "Q8_0": dequantize_q8_0, "Q4_0": dequantize_q4_0, "Q4_1": dequantize_q4_1, "Q5_0": dequantize_q5_0,
    "Q5_1": dequantize_q5_1, "Q2_K": dequantize_q2_k, "Q3_K": dequantize_q3_k, "Q4_K": dequantize_q4_k,
    "Q5_K": dequantize_q5_k, "Q6_K": dequantize_q6_k,
}  # fmt: skip
"""The block formats, each decoded to its exact weights (float64, before the rounding to float32)."""

SUPPORTED = (*FLOATS, *BLOCK_FORMATS)
"""The types microqwen can decode: the float types and the formats of the Qwen2.5 GGUF files."""


def dequantize(type_name: str, data: Blocks) -> array[float]:
    """Whole blocks of type `type_name` -> their weights as float32, rounded as the reference rounds.

    ```python
    >>> block = bytes([0x00, 0x3C]) + bytes(range(32))    # Q8_0: d = 1.0 (float16 0x3C00), q = 0..31
    >>> dequantize("Q8_0", block)[:4]
    array('f', [0.0, 1.0, 2.0, 3.0])

    ```
    """
    if type_name not in SUPPORTED:
        raise ValueError(f"cannot dequantise {type_name}; microqwen reads {', '.join(SUPPORTED)}")
    type_size = BY_NAME[type_name].type_size
    if len(data) % type_size:
        raise ValueError(f"{len(data)} bytes are not whole {type_name} blocks of {type_size} bytes")
    if type_name in FLOATS:
        return FLOATS[type_name](data)
    return array("f", BLOCK_FORMATS[type_name](data))


# ---------------------------------------------------------------- block dot products

DotKernel = Callable[[Blocks, int, Sequence[float], Sequence[float]], float]
"""(blocks, byte offset of the row, x, sums of x per 16) -> the row's dot product with x."""


def group_sums(x: Sequence[float]) -> list[float]:
    """The sum of each group of 16 entries of x: what the minimum terms multiply (len(x) % 16 == 0)."""
    return [sum(x[i : i + 16]) for i in range(0, len(x), 16)]


def dot_q8_0(data: Blocks, offset: int, x: Sequence[float], sums: Sequence[float]) -> float:
    """sum over blocks of d * sum_i q[i] x[i]."""
    total = 0.0
    for block in range(len(x) // 32):
        b, j = offset + 34 * block, 32 * block
        s = 0.0
        for i in range(32):
            s += SIGNED[data[b + 2 + i]] * x[j + i]
        total += F16[data[b] | data[b + 1] << 8] * s
    return total


def dot_q4_0(data: Blocks, offset: int, x: Sequence[float], sums: Sequence[float]) -> float:
    """sum over blocks of d * (sum_i q[i] x[i] - 8 * sum_i x[i])."""
    total = 0.0
    for block in range(len(x) // 32):
        b, j = offset + 18 * block, 32 * block
        s = 0.0
        for i in range(16):
            q = data[b + 2 + i]
            s += (q & 15) * x[j + i] + (q >> 4) * x[j + 16 + i]
        total += F16[data[b] | data[b + 1] << 8] * (s - 8.0 * (sums[2 * block] + sums[2 * block + 1]))
    return total


def dot_q4_1(data: Blocks, offset: int, x: Sequence[float], sums: Sequence[float]) -> float:
    """sum over blocks of d * sum_i q[i] x[i] + m * sum_i x[i]."""
    total = 0.0
    for block in range(len(x) // 32):
        b, j = offset + 20 * block, 32 * block
        s = 0.0
        for i in range(16):
            q = data[b + 4 + i]
            s += (q & 15) * x[j + i] + (q >> 4) * x[j + 16 + i]
        m = F16[data[b + 2] | data[b + 3] << 8]
        total += F16[data[b] | data[b + 1] << 8] * s + m * (sums[2 * block] + sums[2 * block + 1])
    return total


def dot_q5_0(data: Blocks, offset: int, x: Sequence[float], sums: Sequence[float]) -> float:
    """sum over blocks of d * (sum_i q[i] x[i] - 16 * sum_i x[i])."""
    total = 0.0
    for block in range(len(x) // 32):
        b, j = offset + 22 * block, 32 * block
        qh = data[b + 2] | data[b + 3] << 8 | data[b + 4] << 16 | data[b + 5] << 24
        s = 0.0
        for i in range(16):
            q = data[b + 6 + i]
            s += ((q & 15) | (qh >> i & 1) << 4) * x[j + i] + ((q >> 4) | (qh >> (i + 16) & 1) << 4) * x[j + 16 + i]
        total += F16[data[b] | data[b + 1] << 8] * (s - 16.0 * (sums[2 * block] + sums[2 * block + 1]))
    return total


def dot_q5_1(data: Blocks, offset: int, x: Sequence[float], sums: Sequence[float]) -> float:
    """sum over blocks of d * sum_i q[i] x[i] + m * sum_i x[i]."""
    total = 0.0
    for block in range(len(x) // 32):
        b, j = offset + 24 * block, 32 * block
        qh = data[b + 4] | data[b + 5] << 8 | data[b + 6] << 16 | data[b + 7] << 24
        s = 0.0
        for i in range(16):
            q = data[b + 8 + i]
            s += ((q & 15) | (qh >> i & 1) << 4) * x[j + i] + ((q >> 4) | (qh >> (i + 16) & 1) << 4) * x[j + 16 + i]
        m = F16[data[b + 2] | data[b + 3] << 8]
        total += F16[data[b] | data[b + 1] << 8] * s + m * (sums[2 * block] + sums[2 * block + 1])
    return total


def dot_q2_k(data: Blocks, offset: int, x: Sequence[float], sums: Sequence[float]) -> float:
    """sum over groups g of 16: d * s[g] * sum_i q[i] x[i] - dmin * m[g] * sum_i x[i]."""
    total = 0.0
    for block in range(len(x) // 256):
        b, j = offset + 84 * block, 256 * block
        scaled = minimum = 0.0
        for g in range(16):  # g = 8h + 2k + half: weights 128h + 32k + 16 half + l
            h, k, half = g >> 3, (g >> 1) & 3, g & 1
            qs, xs, shift = b + 16 + 32 * h + 16 * half, j + 128 * h + 32 * k + 16 * half, 2 * k
            s = 0.0
            for l in range(16):
                s += (data[qs + l] >> shift & 3) * x[xs + l]
            scale = data[b + g]
            scaled += (scale & 15) * s
            minimum += (scale >> 4) * sums[(xs >> 4)]
        total += F16[data[b + 80] | data[b + 81] << 8] * scaled - F16[data[b + 82] | data[b + 83] << 8] * minimum
    return total


def dot_q3_k(data: Blocks, offset: int, x: Sequence[float], sums: Sequence[float]) -> float:
    """sum over groups g of 16: d * s[g] * sum_i q[i] x[i], q = low 2 bits - (4 unless the hmask bit is set)."""
    total = 0.0
    for block in range(len(x) // 256):
        b, j = offset + 110 * block, 256 * block
        scales = _q3_k_scales(data, b + 96)
        scaled = 0.0
        for g in range(16):
            h, k, half = g >> 3, (g >> 1) & 3, g & 1
            qs, xs, shift, bit = b + 32 + 32 * h + 16 * half, j + 128 * h + 32 * k + 16 * half, 2 * k, 4 * h + k
            hm = b + 16 * half
            s = 0.0
            for l in range(16):
                q = (data[qs + l] >> shift & 3) - 4 + (data[hm + l] >> bit & 1) * 4
                s += q * x[xs + l]
            scaled += scales[g] * s
        total += F16[data[b + 108] | data[b + 109] << 8] * scaled
    return total


def dot_q4_k(data: Blocks, offset: int, x: Sequence[float], sums: Sequence[float]) -> float:
    """sum over groups j of 32: d * s[j] * sum_i q[i] x[i] - dmin * m[j] * sum_i x[i]."""
    total = 0.0
    for block in range(len(x) // 256):
        b, j = offset + 144 * block, 256 * block
        scales, mins = _k_scales(data, b + 4)
        scaled = minimum = 0.0
        for c in range(4):
            qs, xs = b + 16 + 32 * c, j + 64 * c
            low = high = 0.0
            for l in range(32):
                q = data[qs + l]
                low += (q & 15) * x[xs + l]
                high += (q >> 4) * x[xs + 32 + l]
            g = xs >> 4  # the first group of 16 of these 64 weights
            scaled += scales[2 * c] * low + scales[2 * c + 1] * high
            minimum += mins[2 * c] * (sums[g] + sums[g + 1]) + mins[2 * c + 1] * (sums[g + 2] + sums[g + 3])
        total += F16[data[b] | data[b + 1] << 8] * scaled - F16[data[b + 2] | data[b + 3] << 8] * minimum
    return total


def dot_q5_k(data: Blocks, offset: int, x: Sequence[float], sums: Sequence[float]) -> float:
    """As `dot_q4_k`, with the fifth bit of each q from qh."""
    total = 0.0
    for block in range(len(x) // 256):
        b, j = offset + 176 * block, 256 * block
        scales, mins = _k_scales(data, b + 4)
        scaled = minimum = 0.0
        for c in range(4):
            qs, xs, low_bit, high_bit = b + 48 + 32 * c, j + 64 * c, 2 * c, 2 * c + 1
            low = high = 0.0
            for l in range(32):
                q, h = data[qs + l], data[b + 16 + l]
                low += ((q & 15) | (h >> low_bit & 1) << 4) * x[xs + l]
                high += ((q >> 4) | (h >> high_bit & 1) << 4) * x[xs + 32 + l]
            g = xs >> 4
            scaled += scales[2 * c] * low + scales[2 * c + 1] * high
            minimum += mins[2 * c] * (sums[g] + sums[g + 1]) + mins[2 * c + 1] * (sums[g + 2] + sums[g + 3])
        total += F16[data[b] | data[b + 1] << 8] * scaled - F16[data[b + 2] | data[b + 3] << 8] * minimum
    return total


def dot_q6_k(data: Blocks, offset: int, x: Sequence[float], sums: Sequence[float]) -> float:
    """sum over groups g of 16: d * s[g] * (sum_i q[i] x[i] - 32 * sum_i x[i])."""
    total = 0.0
    for block in range(len(x) // 256):
        b, j = offset + 210 * block, 256 * block
        scaled = 0.0
        for g in range(16):
            h, k, half = g >> 3, (g >> 1) & 3, g & 1
            low_byte = b + 64 * h + 32 * (k & 1) + 16 * half
            high_byte, shift = b + 128 + 32 * h + 16 * half, 4 * (k >> 1)
            xs = j + 128 * h + 32 * k + 16 * half
            s = 0.0
            for l in range(16):
                s += ((data[low_byte + l] >> shift & 15) | (data[high_byte + l] >> 2 * k & 3) << 4) * x[xs + l]
            scaled += SIGNED[data[b + 192 + g]] * (s - 32.0 * sums[xs >> 4])
        total += F16[data[b + 208] | data[b + 209] << 8] * scaled
    return total


DOT_KERNELS: dict[str, DotKernel] = {
    "Q8_0": dot_q8_0, "Q4_0": dot_q4_0, "Q4_1": dot_q4_1, "Q5_0": dot_q5_0, "Q5_1": dot_q5_1,
    "Q2_K": dot_q2_k, "Q3_K": dot_q3_k, "Q4_K": dot_q4_k, "Q5_K": dot_q5_k, "Q6_K": dot_q6_k,
}  # fmt: skip
"""The block dot product of each quantised type (the float types use the bf16-style kernels)."""


def matvec(type_name: str, data: Blocks, x: Sequence[float]) -> list[float]:
    """y = W x for the rows of W held in `data` (whole rows of blocks of `type_name`), x a list of floats.

    ```python
    >>> block = bytes([0x00, 0x38]) + bytes([1] * 32)     # Q8_0: d = 0.5 (float16 0x3800), every q = 1
    >>> matvec("Q8_0", block * 2, [1.0] * 32)             # two rows of one block
    [16.0, 16.0]

    ```
    """
    ggml_type, kernel = BY_NAME[type_name], DOT_KERNELS[type_name]
    row_bytes = ggml_type.row_bytes(len(x))
    if len(x) % ggml_type.block_size or len(data) % row_bytes:
        raise ValueError(f"{len(data)} bytes are not whole {type_name} rows of {len(x)} weights ({row_bytes} bytes)")
    sums = group_sums(x)
    return [kernel(data, offset, x, sums) for offset in range(0, len(data), row_bytes)]
