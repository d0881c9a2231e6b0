"""bfloat16 conversion: exact widening, round-to-nearest-even narrowing, bulk conversion."""

from __future__ import annotations

import math
import struct
from array import array
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microqwen import bf16


def struct_widen(bits: int) -> float:
    """The reference widening: the 16 bits become the top half of a float32, read by struct."""
    value: float = struct.unpack("<f", struct.pack("<I", bits << 16))[0]
    return value


def nearest_bf16_by_exact_arithmetic(f32_bits: int) -> int:
    """An independent oracle: compare exact distances to the two neighbouring bf16 values."""
    if f32_bits & 0x7FFFFFFF == 0x7F800000:  # infinity stays infinity
        return f32_bits >> 16
    value = Fraction(struct.unpack("<f", struct.pack("<I", f32_bits))[0])
    down = f32_bits >> 16  # truncation: same sign, magnitude rounded toward zero
    up = down + 1  # next bf16 away from zero (may be infinity)
    if up & 0x7FFF == 0x7F80:  # the next value up is infinity: compare with 2^128 (where it "is")
        up_value = Fraction(2**128) * (-1 if down & 0x8000 else 1)
    else:
        up_value = Fraction(struct_widen(up))
    d_down, d_up = abs(value - Fraction(struct_widen(down))), abs(up_value - value)
    if d_down != d_up:
        return down if d_down < d_up else up
    return down if down % 2 == 0 else up


def test_every_bit_pattern_widens_like_struct_and_round_trips() -> None:
    for bits in range(65536):
        expected = struct_widen(bits)
        got = bf16.bits_to_float(bits)
        assert bf16.TABLE[bits] == got or (math.isnan(got) and math.isnan(bf16.TABLE[bits]))
        if math.isnan(expected):
            assert math.isnan(got)
            assert bf16.float_to_bits(got) == bf16.CANONICAL_NAN
        else:
            assert got == expected and math.copysign(1, got) == math.copysign(1, expected)
            assert bf16.float_to_bits(got) == bits


def test_table_has_every_value() -> None:
    assert len(bf16.TABLE) == 65536
    assert bf16.TABLE[0x3FC0] == 1.5 and bf16.TABLE[0xBF80] == -1.0
    assert bf16.TABLE[0x7F80] == math.inf and bf16.TABLE[0xFF80] == -math.inf
    assert math.copysign(1, bf16.TABLE[0x8000]) == -1.0


@pytest.mark.parametrize("kept", [0x3F80, 0x3F81, 0x0001, 0x7F7E, 0x7F7F, 0xBF80, 0xBF81, 0x0000])
def test_exact_halfway_ties_round_to_even(kept: int) -> None:
    halfway = struct.unpack("<f", struct.pack("<I", (kept << 16) | 0x8000))[0]
    rounded = bf16.float_to_bits(halfway)
    assert rounded % 2 == 0 and rounded in (kept, kept + 1)


def test_just_above_and_below_halfway() -> None:
    above = struct.unpack("<f", struct.pack("<I", 0x3F808001))[0]
    below = struct.unpack("<f", struct.pack("<I", 0x3F807FFF))[0]
    assert bf16.float_to_bits(above) == 0x3F81
    assert bf16.float_to_bits(below) == 0x3F80


def test_special_values() -> None:
    assert bf16.float_to_bits(-0.0) == 0x8000
    assert bf16.float_to_bits(0.0) == 0x0000
    assert bf16.float_to_bits(math.inf) == bf16.POSITIVE_INF
    assert bf16.float_to_bits(-math.inf) == bf16.NEGATIVE_INF
    assert bf16.float_to_bits(math.nan) == bf16.CANONICAL_NAN
    assert bf16.float_to_bits(3.4e38) == bf16.POSITIVE_INF  # past the largest bf16, 3.3895e38
    assert bf16.float_to_bits(-1e39) == bf16.NEGATIVE_INF  # past float32 itself
    assert bf16.float_to_bits(1e-40) == nearest_bf16_by_exact_arithmetic(struct.unpack("<I", struct.pack("<f", 1e-40))[0])


@given(st.integers(0, 0xFFFFFFFF).filter(lambda b: (b & 0x7FFFFFFF) <= 0x7F800000))
def test_narrowing_matches_exact_arithmetic(f32_bits: int) -> None:
    value = struct.unpack("<f", struct.pack("<I", f32_bits))[0]
    assert bf16.float_to_bits(value) == nearest_bf16_by_exact_arithmetic(f32_bits)


@given(st.floats(width=32, allow_nan=False))
def test_narrowing_never_truncates_toward_zero_when_above_halfway(value: float) -> None:
    bits = bf16.float_to_bits(value)
    f32_bits = struct.unpack("<I", struct.pack("<f", value))[0]
    assert bits == nearest_bf16_by_exact_arithmetic(f32_bits)


@given(st.binary(max_size=512).filter(lambda b: len(b) % 2 == 0))
def test_bulk_conversion_matches_one_by_one(data: bytes) -> None:
    bits = array("H")
    bits.frombytes(data)
    floats = bf16.to_floats(memoryview(data))
    assert len(floats) == len(bits)
    for b, f in zip(bits, floats):
        expected = struct_widen(b)
        assert f == expected or (math.isnan(f) and math.isnan(expected))


@given(st.lists(st.floats(width=32, allow_nan=False), max_size=64))
def test_from_floats_rounds_each_value(values: list[float]) -> None:
    encoded = array("H")
    encoded.frombytes(bf16.from_floats(values))
    assert list(encoded) == [bf16.float_to_bits(v) for v in values]


def test_odd_length_buffer_is_refused() -> None:
    with pytest.raises(ValueError, match="even length, got 3 bytes"):
        bf16.to_floats(b"\x00\x01\x02")


def test_bits_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="0x10000"):
        bf16.bits_to_float(0x10000)
