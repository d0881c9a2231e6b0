"""Dequantisation bit for bit as gguf-py's, and the blocks unpacked into integers and scales.

The reference is tests/fixtures/gguf/blocks.gguf (random blocks of every type, written by gguf-py)
with gguf-py's `gguf.quants.dequantize` of each in blocks.reference.safetensors.
"""

from __future__ import annotations

import math
import pathlib
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


CODE_RANGES = {"Q8_0": (-128, 127), "Q4_0": (-8, 7), "Q4_1": (0, 15), "Q5_0": (-16, 15), "Q5_1": (0, 31),
               "Q2_K": (0, 3), "Q3_K": (-4, 3), "Q4_K": (0, 15), "Q5_K": (0, 31), "Q6_K": (-32, 31)}  # fmt: skip
"""The integer each format stores per weight, as its weight formula uses it (q - 8 for Q4_0, ...)."""


STEP_RANGES = {"Q2_K": (0, 15), "Q3_K": (-32, 31), "Q4_K": (0, 63), "Q5_K": (0, 63), "Q6_K": (-128, 127)}
"""The k-quants' group scales: 4 bits, 6 bits minus 32, 6 bits, 6 bits, int8."""


@pytest.mark.parametrize("type_name", BLOCK_FORMATS)
def test_unpacking_gives_a_code_per_weight_in_the_formats_range(blocks: dict[str, tuple[str, bytes]], type_name: str) -> None:
    _, data = blocks[type_name.lower()]
    ggml_type = quant.BY_NAME[type_name]
    u = quant.unpack(type_name, data)
    weights = len(data) // ggml_type.type_size * ggml_type.block_size
    low, high = CODE_RANGES[type_name]
    assert len(u.codes) == weights and low <= min(u.codes) <= max(u.codes) <= high
    assert u.block == ggml_type.block_size and len(u.scales) * u.block == weights
    assert (u.mins is None) == (type_name in ("Q8_0", "Q4_0", "Q5_0", "Q3_K", "Q6_K"))
    assert u.mins is None or len(u.mins) * u.group == weights
    if type_name in STEP_RANGES:
        assert u.steps is not None and len(u.steps) * u.group == weights and u.group in (16, 32)
        assert STEP_RANGES[type_name][0] <= min(u.steps) <= max(u.steps) <= STEP_RANGES[type_name][1]
        assert list(u.folded()) == [u.steps[i // u.group] * q for i, q in enumerate(u.codes)]
    else:
        assert u.steps is None and list(u.folded()) == list(u.codes)


def test_unpack_refuses_a_float_type() -> None:
    with pytest.raises(ValueError, match="F16 is a float type, not a block format"):
        quant.unpack("F16", bytes(4))


def finite_half() -> st.SearchStrategy[int]:
    """float16 bits that are not infinity or NaN."""
    return st.integers(0, 0xFFFF).filter(lambda bits: bits & 0x7C00 != 0x7C00)


def random_blocks(type_name: str, count: int, data: st.DataObject) -> bytes:
    """`count` blocks of random bytes with finite float16 scales (as a real file has)."""
    ggml_type = quant.BY_NAME[type_name]
    raw = bytearray(data.draw(st.binary(min_size=ggml_type.type_size * count, max_size=ggml_type.type_size * count),
                              label="blocks"))  # fmt: skip
    for start in range(0, len(raw), ggml_type.type_size):
        for at in SCALE_FIELDS[type_name]:
            raw[start + at : start + at + 2] = struct.pack("<H", data.draw(finite_half(), label="scale"))
    return bytes(raw)


@fuzz(quick=60, long=2000)
@given(st.sampled_from(BLOCK_FORMATS), st.integers(1, 4), st.data())
def test_blocks_dequantise_block_by_block(type_name: str, count: int, data: st.DataObject) -> None:
    """Whole blocks decode independently: the weights of n blocks are the weights of each block in turn."""
    raw = random_blocks(type_name, count, data)
    size = quant.BY_NAME[type_name].type_size
    together = quant.dequantize(type_name, raw)
    alone = array("f")
    for start in range(0, len(raw), size):
        alone += quant.dequantize(type_name, raw[start : start + size])
    assert together.tobytes() == alone.tobytes()
