"""bfloat16: the number format of Qwen2.5's weights, by bit manipulation.

A bfloat16 ("brain float") is the top half of an IEEE float32:

    float32:  s eeeeeeee mmmmmmmmmmmmmmmmmmmmmmm     1 + 8 + 23 bits
    bfloat16: s eeeeeeee mmmmmmm                    1 + 8 + 7 bits

It keeps float32's sign and 8-bit exponent (so the same range, up to about 3.4e38)
and drops 16 mantissa bits (so about 3 significant decimal digits).

Worked example, the bits 0x3FC0:

    0x3FC0 = 0 01111111 1000000
             s = 0 (positive), e = 127 (2^(127-127) = 1), m = 1.1 in binary = 1.5
    value  = +1.5 * 2^0 = 1.5

Widening is exact: shift the 16 bits up and read them as a float32
(`0x3FC0 << 16 = 0x3FC00000`, which is 1.5 as a float32). Narrowing must round:
dropping the low 16 bits (truncation) is a classic bug that biases every weight
toward zero. We round to nearest, ties to even, like the reference (PyTorch).

There are only 65,536 bfloat16 values, so `TABLE[bits]` is every one of them as a
Python float: the kernels use it to turn weight bits into numbers.

This module assumes a little-endian machine (x86-64, ARM64), as the safetensors
files do.
"""

from __future__ import annotations

import struct
from array import array
from typing import Iterable

POSITIVE_INF = 0x7F80
NEGATIVE_INF = 0xFF80
CANONICAL_NAN = 0x7FC0  # what PyTorch writes for every NaN it narrows to bfloat16


def bits_to_float(bits: int) -> float:
    """The value of one bfloat16 bit pattern (0..0xFFFF), exactly.

    ```python
    >>> bits_to_float(0x3FC0)
    1.5

    ```
    """
    if not 0 <= bits <= 0xFFFF:
        raise ValueError(f"bfloat16 bits must be in 0..0xFFFF, got {bits:#x}")
    value: float = struct.unpack("<f", struct.pack("<I", bits << 16))[0]
    return value


def float_to_bits(value: float) -> int:
    """Round a float to the nearest bfloat16, ties to even; return its 16 bits.

    The value is first narrowed to float32 (as the reference stores it), then
    the low 16 bits are rounded away: adding 0x7FFF plus the lowest kept bit
    rounds up exactly when the dropped half is over 0x8000, or is 0x8000 and
    the kept part is odd. A carry out of the mantissa raises the exponent, so
    values past the largest bfloat16 (about 3.39e38) become infinity.

    ```python
    >>> hex(float_to_bits(1.5))
    '0x3fc0'
    >>> hex(float_to_bits(1.0 + 2**-8))    # exactly halfway: ties to even (down)
    '0x3f80'

    ```
    """
    try:
        f32 = struct.unpack("<I", struct.pack("<f", value))[0]
    except OverflowError:  # beyond float32's range: infinite in bfloat16 too
        return NEGATIVE_INF if value < 0 else POSITIVE_INF
    if f32 & 0x7FFFFFFF > 0x7F800000:  # NaN: rounding could turn it into infinity
        return CANONICAL_NAN
    rounded: int = (f32 + 0x7FFF + ((f32 >> 16) & 1)) >> 16
    return rounded


def widen(data: bytes | bytearray | memoryview) -> bytearray:
    """bfloat16 bytes -> float32 bytes, with no per-element Python loop.

    On a little-endian machine a bfloat16 `lo hi` becomes the float32 `0 0 lo hi`:
    its two bytes land at bytes 2 and 3 of each 4-byte group, and bytes 0 and 1
    stay zero. Two strided slice assignments do that for the whole buffer.
    """
    if len(data) % 2:
        raise ValueError(f"bfloat16 data must have an even length, got {len(data)} bytes")
    wide = bytearray(2 * len(data))
    wide[2::4] = data[0::2]
    wide[3::4] = data[1::2]
    return wide


def to_floats(data: bytes | bytearray | memoryview) -> array[float]:
    """Bulk conversion: little-endian bfloat16 bytes -> `array('f')` of the same values."""
    out = array("f")
    out.frombytes(widen(data))
    return out


def from_floats(values: Iterable[float]) -> bytes:
    """Bulk conversion the other way: floats -> little-endian bfloat16 bytes, each rounded."""
    return array("H", [float_to_bits(v) for v in values]).tobytes()


def narrow(values: Iterable[float], truncate: bool = False) -> list[float]:
    """Each value rounded to the nearest bfloat16 (as `float_to_bits`), and widened back to a float.

    The same steps as `float_to_bits`, for many values at once: narrow them to float32 (an
    `array('f')`), read their bits as an `array('I')`, and round the low 16 bits away. With
    `truncate=True` they are dropped instead, the classic bug that pulls every value toward zero
    (`microqwen.lab.mutations` plants it).

    ```python
    >>> narrow([1.0 + 2**-8 + 2**-20, -3.14159]), narrow([1.0 + 2**-8 + 2**-20, -3.14159], truncate=True)
    ([1.0078125, -3.140625], [1.0, -3.140625])

    ```
    """
    wide = array("I")
    wide.frombytes(array("f", values).tobytes())
    if truncate:
        kept = array("I", [u & 0xFFFF0000 for u in wide])
    else:
        kept = array("I", [(0x7FC00000 if u & 0x7FFFFFFF > 0x7F800000 else (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000)
                           for u in wide])  # fmt: skip
    out = array("f")
    out.frombytes(kept.tobytes())
    return out.tolist()


TABLE: list[float] = to_floats(array("H", range(65536)).tobytes()).tolist()
"""Every bfloat16 value, indexed by its bits: `TABLE[0x3FC0] == 1.5`."""
