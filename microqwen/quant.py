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

`unpack` gives the blocks as integers and scales (`Unpacked`) without making a weight: what the
block kernels of `microqwen.kernels` compute with (llama.cpp's way: per block, the scale times the
dot product of the block's integers with x, minus the minimums times sums of x).

The table of every type a GGUF file may name (`TYPES`) follows ggml's `enum ggml_type`
(ggml docs/gguf.md) and gguf-py's `GGML_QUANT_SIZES` (gguf-py/gguf/constants.py); the layouts
follow gguf-py's `gguf/quants.py`.
"""

from __future__ import annotations

import itertools
import operator
import struct
import sys
from array import array
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar, Union

from . import bf16

Blocks = Union[bytes, bytearray, "array[int]"]
"""Raw block bytes: `bytes` or an `array('B')` (indexing either gives ints 0..255)."""

_T = TypeVar("_T")


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
# ---------------------------------------------------------------- block formats: integers and scales


@dataclass(frozen=True)
class Unpacked:
    """Whole blocks of one format as an integer per weight, a scale per block, and per group of 16 or 32
    a small integer scale and a minimum (for the formats that have them):

        weight[i] = scales[i // block] * steps[i // group] * codes[i] - mins[i // group]

    `scales` is each block's float16 d (a block is 32 weights, or 256 for the k-quants), `codes` the
    integers q (`array('b')`: Q4_0's is q - 8), `steps` a k-quant's 4-, 6- or 8-bit group scales (None:
    1), `mins` its dmin * m[g], or the _1 formats' -m (None: 0). `folded()` gives steps * codes, the
    integers that one d scales over a whole block, as llama.cpp's dot products sum them.
    """

    codes: array[int]
    scales: list[float]
    steps: list[int] | None
    mins: list[float] | None
    block: int
    group: int

    def weights(self) -> Iterator[float]:
        """Each weight in order, computed exactly (float64 holds every product) and as the reference
        multiplies: (d * s[g]) * q, so that a zero has the reference's sign."""
        scales: Iterator[float] = _each(self.scales, self.block)
        if self.steps is not None:
            scales = map(operator.mul, scales, _each(self.steps, self.group))
        scaled = map(operator.mul, scales, self.codes)
        return scaled if self.mins is None else map(operator.sub, scaled, _each(self.mins, self.group))

    def folded(self) -> array[int]:
        """steps[i // group] * codes[i] for every weight (`array('h')`: a k-quant's reach -4096..4096)."""
        if self.steps is None:
            return array("h", self.codes)
        return array("h", map(operator.mul, self.codes, _each(self.steps, self.group)))


def _each(values: Sequence[_T], times: int) -> Iterator[_T]:
    """Every value repeated `times` times: a block's scale for each of its weights."""
    return itertools.chain.from_iterable(map(itertools.repeat, values, itertools.repeat(times)))


class _Columns:
    """Whole blocks read column by column: byte k of every block at once, as one Python integer.

    Byte b of the integer `byte(k)` is byte k of block b, so a shift and a mask act on every block
    together in C: `low(k)` is the low nibble of byte k in each block. `codes` puts such columns,
    one per weight of a block, in weight order.
    """

    def __init__(self, data: Blocks, type_size: int) -> None:
        self.data = bytes(data)
        self.size = type_size
        self.count = len(self.data) // type_size
        self._every: dict[int, int] = {}
        self._bytes: dict[int, int] = {}

    def every(self, value: int) -> int:
        """`value` in every block's byte: 0x0F0F...0F for 15."""
        if value not in self._every:
            self._every[value] = int.from_bytes(bytes([value]) * self.count, "little")
        return self._every[value]

    def byte(self, k: int) -> int:
        if k not in self._bytes:
            self._bytes[k] = int.from_bytes(self.data[k :: self.size], "little")
        return self._bytes[k]

    def bits(self, k: int, shift: int, width: int) -> int:
        """Bits shift..shift+width-1 of byte k of every block (shift + width <= 8)."""
        return self.byte(k) >> shift & self.every((1 << width) - 1)

    def low(self, k: int) -> int:
        return self.bits(k, 0, 4)

    def high(self, k: int) -> int:
        return self.bits(k, 4, 4)

    def ints(self, column: int) -> list[int]:
        """The per-block values of a column, block by block."""
        return list(column.to_bytes(self.count, "little"))

    def half(self, k: int) -> list[float]:
        """The float16 at bytes k, k+1 of every block."""
        pairs = bytearray(2 * self.count)
        pairs[0::2], pairs[1::2] = self.data[k :: self.size], self.data[k + 1 :: self.size]
        halves = array("H")
        halves.frombytes(bytes(pairs))
        if sys.byteorder == "big":
            halves.byteswap()
        return list(map(F16.__getitem__, halves))

    def codes(self, columns: Sequence[int], offset: int) -> array[int]:
        """Each weight's q + offset (-128..127) in weight order, where columns[i] holds q of weight i of every block."""
        width, count = len(columns), self.count
        biased = bytearray(width * count)  # q + offset + 128, one byte each
        for i, column in enumerate(columns):
            biased[i::width] = (column + self.every(128 + offset)).to_bytes(count, "little")
        codes = array("b")
        codes.frombytes(bytes(biased).translate(_TWOS_COMPLEMENT))
        return codes

    def per_group(self, values: Sequence[Sequence[_T]]) -> list[_T]:
        """values[g][b] (group g of block b) in weight order: block 0's groups, then block 1's, ..."""
        out: list[_T] = [values[0][0]] * (len(values) * self.count) if self.count else []
        for g, column in enumerate(values):
            out[g :: len(values)] = column
        return out


_TWOS_COMPLEMENT = bytes(byte ^ 0x80 for byte in range(256))
"""A byte v = code + 128 -> the code as a signed byte (two's complement)."""


def unpack_q8_0(data: Blocks) -> Unpacked:
    """Q8_0: 32 weights in 34 bytes, weight = d * q.

        bytes 0-1     d, float16
        bytes 2-33    q[0..31], one int8 each
    """
    b = _Columns(data, 34)
    return Unpacked(b.codes([b.byte(2 + i) ^ b.every(0x80) for i in range(32)], -128), b.half(0), None, None, 32, 32)


def unpack_q4_0(data: Blocks) -> Unpacked:
    """Q4_0: 32 weights in 18 bytes, weight = d * (q - 8) with q in 0..15.

        bytes 0-1     d, float16
        bytes 2-17    16 bytes: byte 2+i holds q[i] in its low nibble, q[i+16] in its high nibble
    """
    b = _Columns(data, 18)
    codes = b.codes([b.low(2 + i) for i in range(16)] + [b.high(2 + i) for i in range(16)], -8)
    return Unpacked(codes, b.half(0), None, None, 32, 32)


def unpack_q4_1(data: Blocks) -> Unpacked:
    """Q4_1: 32 weights in 20 bytes, weight = d * q + m with q in 0..15.

        bytes 0-1     d, float16
        bytes 2-3     m, float16 (the block's minimum)
        bytes 4-19    q as in Q4_0: low nibbles are q[0..15], high nibbles q[16..31]
    """
    b = _Columns(data, 20)
    codes = b.codes([b.low(4 + i) for i in range(16)] + [b.high(4 + i) for i in range(16)], 0)
    return Unpacked(codes, b.half(0), None, [-m for m in b.half(2)], 32, 32)


def _five_bits(b: _Columns, qh: int, qs: int) -> list[int]:
    """q[0..31] of Q5_0 / Q5_1: the low 4 bits as in Q4_0 from bytes qs.., bit 4 of q[i] is bit i of the
    32-bit little-endian word at qh (bit i % 8 of byte qh + i // 8)."""
    low = [b.low(qs + i) for i in range(16)] + [b.high(qs + i) for i in range(16)]
    return [low[i] | b.bits(qh + i // 8, i % 8, 1) << 4 for i in range(32)]


def unpack_q5_0(data: Blocks) -> Unpacked:
    """Q5_0: 32 weights in 22 bytes, weight = d * (q - 16) with q in 0..31.

        bytes 0-1     d, float16
        bytes 2-5     qh, a little-endian uint32: bit i is bit 4 of q[i]
        bytes 6-21    the low 4 bits of q as in Q4_0: low nibbles q[0..15], high nibbles q[16..31]
    """
    b = _Columns(data, 22)
    return Unpacked(b.codes(_five_bits(b, 2, 6), -16), b.half(0), None, None, 32, 32)


def unpack_q5_1(data: Blocks) -> Unpacked:
    """Q5_1: 32 weights in 24 bytes, weight = d * q + m with q in 0..31.

        bytes 0-1     d, float16
        bytes 2-3     m, float16
        bytes 4-7     qh: bit i is bit 4 of q[i]
        bytes 8-23    the low 4 bits of q, as in Q5_0
    """
    b = _Columns(data, 24)
    return Unpacked(b.codes(_five_bits(b, 4, 8), 0), b.half(0), None, [-m for m in b.half(2)], 32, 32)


def unpack_q2_k(data: Blocks) -> Unpacked:
    """Q2_K: 256 weights in 84 bytes, weight = d * s[g] * q - dmin * m[g] with q in 0..3.

        bytes 0-15    one byte per group g of 16 weights: s[g] in the low nibble, m[g] in the high
        bytes 16-79   q, 2 bits each: for half h (bytes 16+32h .. 47+32h) and shift k in 0..3,
                      bits 2k..2k+1 of byte 16+32h+l are q[128h + 32k + l]
        bytes 80-81   d, float16
        bytes 82-83   dmin, float16
    """
    b = _Columns(data, 84)
    q = b.codes([b.bits(16 + 32 * (i // 128) + i % 32, 2 * (i // 32 % 4), 2) for i in range(256)], 0)
    steps = b.per_group([b.ints(b.low(g)) for g in range(16)])
    mins = b.per_group([[x * m for x, m in zip(b.half(82), b.ints(b.high(g)))] for g in range(16)])
    return Unpacked(q, b.half(80), steps, mins, 256, 16)


def unpack_q3_k(data: Blocks) -> Unpacked:
    """Q3_K: 256 weights in 110 bytes, weight = d * s[g] * q with q in -4..3 and s[g] in -32..31.

        bytes 0-31    hmask: bit k of byte l is the high bit of weight 32k + l; q = low - 4 where it is 0
        bytes 32-95   the low 2 bits of q, packed as Q2_K's q: weight 128h + 32k + l in bits 2k..2k+1
                      of byte 32+32h+l
        bytes 96-107  s, 16 six-bit scales, one per group of 16 weights, minus 32: bytes 96-103 hold the
                      low 4 bits (scale j < 8 in the low nibble of byte 96+j, j >= 8 in the high nibble
                      of byte 88+j), bytes 104-107 the high 2 bits (scale j in bits 2(j // 4) ..
                      2(j // 4) + 1 of byte 104 + j % 4)
        bytes 108-109 d, float16
    """
    b = _Columns(data, 110)
    q = b.codes([b.bits(32 + 32 * (i // 128) + i % 32, 2 * (i // 32 % 4), 2) | b.bits(i % 32, i // 32, 1) << 2
                 for i in range(256)], -4)  # fmt: skip
    six_bits = [b.bits(96 + j % 8, 4 * (j // 8), 4) | b.bits(104 + j % 4, 2 * (j // 4), 2) << 4 for j in range(16)]
    steps = b.per_group([[s - 32 for s in b.ints(c)] for c in six_bits])
    return Unpacked(q, b.half(108), steps, None, 256, 16)


def _k_scales(b: _Columns) -> tuple[list[int], list[int]]:
    """The columns of the 8 six-bit scales and 8 six-bit minimums of Q4_K / Q5_K, bytes 4-15:

        bytes 4-7     scale j (j < 4) in bits 0-5; bits 6-7 are the top bits of scale j + 4
        bytes 8-11    min j (j < 4) in bits 0-5; bits 6-7 are the top bits of min j + 4
        bytes 12-15   scale j + 4 low 4 bits in the low nibble, min j + 4 low 4 bits in the high
    """
    scales = [b.bits(4 + j, 0, 6) for j in range(4)] + [b.low(12 + j) | b.bits(4 + j, 6, 2) << 4 for j in range(4)]
    mins = [b.bits(8 + j, 0, 6) for j in range(4)] + [b.high(12 + j) | b.bits(8 + j, 6, 2) << 4 for j in range(4)]
    return scales, mins


def _k_groups(b: _Columns, q: array[int]) -> Unpacked:
    """Q4_K / Q5_K from their q: 8 groups of 32 with scales s[j] and minimums dmin * m[j]."""
    scales, mins = _k_scales(b)
    dmin = b.half(2)
    return Unpacked(q, b.half(0), b.per_group([b.ints(c) for c in scales]),
                    b.per_group([[x * m for x, m in zip(dmin, b.ints(c))] for c in mins]), 256, 32)  # fmt: skip


def unpack_q4_k(data: Blocks) -> Unpacked:
    """Q4_K: 256 weights in 144 bytes, weight = d * s[j] * q - dmin * m[j] with q in 0..15.

        bytes 0-1     d, float16
        bytes 2-3     dmin, float16
        bytes 4-15    s[j] and m[j], six bits each, for the 8 groups j of 32 weights (`_k_scales`)
        bytes 16-143  q, 4 bits each: byte 16+32c+l holds weight 64c + l in its low nibble (group 2c)
                      and weight 64c + 32 + l in its high nibble (group 2c + 1)
    """
    b = _Columns(data, 144)
    nibble = [b.low, b.high]
    return _k_groups(b, b.codes([nibble[i // 32 % 2](16 + 32 * (i // 64) + i % 32) for i in range(256)], 0))


def unpack_q5_k(data: Blocks) -> Unpacked:
    """Q5_K: 256 weights in 176 bytes, weight = d * s[j] * q - dmin * m[j] with q in 0..31.

        bytes 0-1     d, float16
        bytes 2-3     dmin, float16
        bytes 4-15    s[j], m[j] as in Q4_K
        bytes 16-47   qh: bit j of byte 16+l is bit 4 of weight 32j + l
        bytes 48-175  the low 4 bits of q, packed as Q4_K's q
    """
    b = _Columns(data, 176)
    nibble = [b.low, b.high]
    return _k_groups(b, b.codes([nibble[i // 32 % 2](48 + 32 * (i // 64) + i % 32) | b.bits(16 + i % 32, i // 32, 1) << 4
                                 for i in range(256)], 0))  # fmt: skip


def unpack_q6_k(data: Blocks) -> Unpacked:
    """Q6_K: 256 weights in 210 bytes, weight = d * s[g] * (q - 32) with q in 0..63.

        bytes 0-127   the low 4 bits of q: for half h, byte 64h+l holds weight 128h + l in its low
                      nibble and weight 128h + 64 + l in its high nibble (l in 0..63)
        bytes 128-191 the high 2 bits of q: bits 2k..2k+1 of byte 128+32h+l belong to weight
                      128h + 32k + l
        bytes 192-207 s[g], one int8 scale per group g of 16 weights
        bytes 208-209 d, float16
    """
    b = _Columns(data, 210)
    q = b.codes([b.bits(64 * (i // 128) + i % 64, 4 * (i % 128 // 64), 4)
                 | b.bits(128 + 32 * (i // 128) + i % 32, 2 * (i % 128 // 32), 2) << 4 for i in range(256)], -32)  # fmt: skip
    steps = b.per_group([[SIGNED[s] for s in b.ints(b.byte(192 + g))] for g in range(16)])
    return Unpacked(q, b.half(208), steps, None, 256, 16)


FLOATS: dict[str, Callable[[Blocks], array[float]]] = {
    "F32": dequantize_f32, "F16": dequantize_f16, "BF16": dequantize_bf16,
}
"""The float types, widened to float32 bit for bit."""

BLOCK_FORMATS: dict[str, Callable[[Blocks], Unpacked]] = {
    "Q8_0": unpack_q8_0, "Q4_0": unpack_q4_0, "Q4_1": unpack_q4_1, "Q5_0": unpack_q5_0,
    "Q5_1": unpack_q5_1, "Q2_K": unpack_q2_k, "Q3_K": unpack_q3_k, "Q4_K": unpack_q4_k,
    "Q5_K": unpack_q5_k, "Q6_K": unpack_q6_k,
}  # fmt: skip
"""The block formats, each unpacked into integers and scales."""

SUPPORTED = (*FLOATS, *BLOCK_FORMATS)
"""The types microqwen can decode: the float types and the formats of the Qwen2.5 GGUF files."""


def _check(type_name: str, data: Blocks) -> None:
    if type_name not in SUPPORTED:
        raise ValueError(f"cannot dequantise {type_name}; microqwen reads {', '.join(SUPPORTED)}")
    type_size = BY_NAME[type_name].type_size
    if len(data) % type_size:
        raise ValueError(f"{len(data)} bytes are not whole {type_name} blocks of {type_size} bytes")


def unpack(type_name: str, data: Blocks) -> Unpacked:
    """Whole blocks of a block format as codes, scales and minimums (`Unpacked`).

    ```python
    >>> u = unpack("Q4_0", bytes([0x00, 0x38]) + bytes([0x3A] + [0x88] * 15))   # d = 0.5; byte 0x3A: q[0] = 10, q[16] = 3
    >>> u.codes[0], u.codes[16], u.scales, u.block                               # codes q - 8
    (2, -5, [0.5], 32)

    ```
    """
    _check(type_name, data)
    if type_name not in BLOCK_FORMATS:
        raise ValueError(f"{type_name} is a float type, not a block format")
    return BLOCK_FORMATS[type_name](data)


def dequantize(type_name: str, data: Blocks) -> array[float]:
    """Whole blocks of type `type_name` -> their weights as float32, rounded as the reference rounds.

    ```python
    >>> block = bytes([0x00, 0x3C]) + bytes(range(32))    # Q8_0: d = 1.0 (float16 0x3C00), q = 0..31
    >>> dequantize("Q8_0", block)[:4]
    array('f', [0.0, 1.0, 2.0, 3.0])

    ```
    """
    _check(type_name, data)
    if type_name in FLOATS:
        return FLOATS[type_name](data)
    return array("f", BLOCK_FORMATS[type_name](data).weights())
