"""Dequantisation bit for bit as gguf-py's, and block dot products against dequantise-then-dot.

The reference is tests/fixtures/gguf/blocks.gguf (random blocks of every type, written by gguf-py)
with gguf-py's `gguf.quants.dequantize` of each in blocks.reference.safetensors.
"""

from __future__ import annotations

import math
import pathlib
import random
import struct
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microqwen import quant
from microqwen.gguf import GGUFFile
from microqwen.safetensors import SafetensorsFile

from .fuzzing import fuzz

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "gguf"
BLOCK_FORMATS = sorted(quant.BLOCK_FORMATS)

SCALE_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q2_K": [80, 82],
                "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}  # fmt: skip
"""Where each block format keeps its float16 scales (gguf-py's quants.py)."""


@pytest.fixture(scope="module")
def blocks() -> dict[str, tuple[str, bytes]]:
    """tensor name -> (type, the stored bytes) of blocks.gguf."""
    with GGUFFile(str(FIXTURES / "blocks.gguf")) as f:
        return {name: (info.dtype, f.read_rows(name, 0, info.rows)) for name, info in f.tensors.items()}


@pytest.mark.parametrize("type_name", quant.SUPPORTED)
def test_dequantisation_is_bit_for_bit_gguf_pys(blocks: dict[str, tuple[str, bytes]], type_name: str) -> None:
    stored_type, data = blocks[type_name.lower()]
    assert stored_type == type_name
    with SafetensorsFile(str(FIXTURES / "blocks.reference.safetensors")) as reference:
        expected = bytes(reference.data(type_name.lower()))
    ours = quant.dequantize(type_name, data)
    assert ours.tobytes() == expected  # every float32 bit pattern, NaN payloads of the float types included


def test_every_type_is_in_the_fixture(blocks: dict[str, tuple[str, bytes]]) -> None:
    assert sorted(dtype for dtype, _ in blocks.values()) == sorted(quant.SUPPORTED)


@pytest.mark.parametrize("type_name,block,size", [("Q8_0", 32, 34), ("Q4_0", 32, 18), ("Q4_1", 32, 20), ("Q5_0", 32, 22),
                                                   ("Q5_1", 32, 24), ("Q2_K", 256, 84), ("Q3_K", 256, 110),
                                                   ("Q4_K", 256, 144), ("Q5_K", 256, 176), ("Q6_K", 256, 210)])  # fmt: skip
def test_block_sizes_are_ggmls(type_name: str, block: int, size: int) -> None:
    """ggml's block geometry (docs/gguf.md, gguf-py's GGML_QUANT_SIZES): Q4_K is 4.5 bits per weight."""
    ggml_type = quant.BY_NAME[type_name]
    assert (ggml_type.block_size, ggml_type.type_size) == (block, size)
    assert ggml_type.bits_per_weight == 8 * size / block


def test_ids_are_ggmls_enum() -> None:
    """A few of `enum ggml_type` in ggml's docs/gguf.md."""
    assert [quant.BY_NAME[n].id for n in ("F32", "F16", "Q4_0", "Q8_0", "Q4_K", "Q6_K", "BF16")] == [0, 1, 2, 8, 12, 14, 30]
    assert not {4, 5, 31, 32, 33} & set(quant.TYPES)  # removed from ggml


def test_float16_table() -> None:
    assert quant.F16[0x3C00] == 1.0 and quant.F16[0xC000] == -2.0 and quant.F16[0x0001] == 2.0**-24
    assert quant.F16[0x7BFF] == 65504.0 and math.isinf(quant.F16[0x7C00]) and math.isnan(quant.F16[0x7E00])


def test_a_worked_q4_0_block() -> None:
    """d = 0.5; byte i holds q[i] (low nibble) and q[i + 16] (high): weight = d * (q - 8)."""
    block = struct.pack("<e", 0.5) + bytes([0x0F] + [0x88] * 15)
    values = quant.dequantize("Q4_0", block)
    assert values[0] == 0.5 * (15 - 8) and values[16] == 0.5 * (0 - 8) and set(values[1:16]) == {0.0}


def test_dequantize_refuses_partial_blocks_and_unknown_types() -> None:
    with pytest.raises(ValueError, match="not whole Q8_0 blocks of 34 bytes"):
        quant.dequantize("Q8_0", bytes(35))
    with pytest.raises(ValueError, match="cannot dequantise IQ2_XXS"):
        quant.dequantize("IQ2_XXS", bytes(66))


def naive_dot(weights: list[float], x: list[float]) -> tuple[float, float]:
    """sum w x, and sum |w x| (the scale a rounding error is measured against)."""
    return math.fsum(w * v for w, v in zip(weights, x)), math.fsum(abs(w * v) for w, v in zip(weights, x))


def check_kernel(type_name: str, data: bytes, row_length: int, seed: int) -> None:
    rng = random.Random(seed)
    x = [rng.gauss(0.0, 1.0) for _ in range(row_length)]
    exact = quant.BLOCK_FORMATS[type_name](data)  # the weights before float32 rounding
    y = quant.matvec(type_name, data, x)
    assert len(y) == len(exact) // row_length
    for row, value in enumerate(y):
        expected, scale = naive_dot(exact[row * row_length : (row + 1) * row_length], x)
        assert abs(value - expected) <= 1e-12 * scale + 1e-300, (type_name, row, value, expected)


@pytest.mark.parametrize("type_name", BLOCK_FORMATS)
def test_block_dot_products_equal_dequantise_then_dot(blocks: dict[str, tuple[str, bytes]], type_name: str) -> None:
    _, data = blocks[type_name.lower()]
    block = quant.BY_NAME[type_name].block_size
    check_kernel(type_name, data, 2 * block, seed=1)  # the fixture's rows are 2 blocks long


def finite_half() -> st.SearchStrategy[int]:
    """float16 bits that are not infinity or NaN."""
    return st.integers(0, 0xFFFF).filter(lambda bits: bits & 0x7C00 != 0x7C00)


@fuzz(quick=60, long=2000)
@given(st.sampled_from(BLOCK_FORMATS), st.integers(1, 3), st.integers(1, 2), st.data())
def test_block_dot_products_on_random_blocks(type_name: str, blocks_per_row: int, rows: int, data: st.DataObject) -> None:
    ggml_type = quant.BY_NAME[type_name]
    raw = bytearray(data.draw(st.binary(min_size=ggml_type.type_size * blocks_per_row * rows,
                                        max_size=ggml_type.type_size * blocks_per_row * rows), label="blocks"))  # fmt: skip
    for start in range(0, len(raw), ggml_type.type_size):
        for at in SCALE_FIELDS[type_name]:
            raw[start + at : start + at + 2] = struct.pack("<H", data.draw(finite_half(), label="scale"))
    check_kernel(type_name, bytes(raw), blocks_per_row * ggml_type.block_size, seed=blocks_per_row)


def test_matvec_takes_an_array_of_bytes_and_refuses_partial_rows() -> None:
    block = struct.pack("<e", 0.25) + bytes(range(32))  # Q8_0, q = 0..31
    x = [1.0] * 32
    assert quant.matvec("Q8_0", array("B", block * 3), x) == [0.25 * sum(range(32))] * 3
    with pytest.raises(ValueError, match="not whole Q8_0 rows of 32 weights"):
        quant.matvec("Q8_0", block + b"\0", x)
