"""Every matrix kernel computes the same y = W x as the naive reference loop."""

from __future__ import annotations

import math
import struct
from array import array
from typing import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microqwen import bf16, kernels, quant
from microqwen.kernels import KERNELS, best_kernel, dot, load_matrix

from .test_quant import random_blocks

finite_bits = st.integers(0, 0xFFFF).filter(lambda b: (b & 0x7F80) != 0x7F80)  # no inf or NaN


@st.composite
def matrices(draw: st.DrawFn) -> tuple[bytes, int, int, list[list[float]]]:
    rows, cols = draw(st.integers(0, 11)), draw(st.integers(0, 13))  # 0: a process that owns no rows or columns
    bits = draw(st.lists(finite_bits, min_size=rows * cols, max_size=rows * cols))
    tokens = draw(st.integers(1, 9))
    xs = [draw(st.lists(st.floats(-4, 4), min_size=cols, max_size=cols)) for _ in range(tokens)]
    return array("H", bits).tobytes(), rows, cols, xs


def by_definition(raw: bytes, rows: int, cols: int, x: list[float]) -> list[float]:
    """y[r] = sum_j W[r, j] x[j], with W decoded by struct (independently of bf16.TABLE)."""
    w = [struct.unpack("<f", b"\x00\x00" + raw[2 * i : 2 * i + 2])[0] for i in range(rows * cols)]
    return [math.fsum(w[r * cols + j] * x[j] for j in range(cols)) for r in range(rows)]


def close(a: list[float], b: list[float]) -> bool:
    return all(math.isclose(p, q, rel_tol=1e-9, abs_tol=1e-6) for p, q in zip(a, b)) and len(a) == len(b)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@given(matrices())
@settings(max_examples=60, deadline=None)
def test_kernel_matches_the_definition(kernel: str, case: tuple[bytes, int, int, list[list[float]]]) -> None:
    raw, rows, cols, xs = case
    matrix = load_matrix(array("H", raw), rows, cols, kernel)
    expected = [by_definition(raw, rows, cols, x) for x in xs]
    assert close(matrix.matvec(xs[0]), expected[0])
    ys = matrix.matmat(xs)
    assert len(ys) == len(xs) and all(close(y, e) for y, e in zip(ys, expected))


def test_best_kernel_is_a_kernel() -> None:
    assert best_kernel() in KERNELS


def test_matrix_refuses_the_wrong_byte_count() -> None:
    with pytest.raises(ValueError, match="3 bfloat16 values do not fill a \\[2, 2\\] matrix"):
        load_matrix(array("H", [0, 0, 0]), 2, 2)


@given(st.lists(st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)), max_size=70))
def test_dot(pairs: list[tuple[float, float]]) -> None:
    a, b = [p for p, _ in pairs], [q for _, q in pairs]
    assert math.isclose(dot(a, b), math.fsum(p * q for p, q in pairs), rel_tol=1e-9, abs_tol=1e-6)


def test_a_real_shaped_row_block() -> None:
    """A [12, 896] block, like 12 rows of q_proj: all kernels agree to rounding."""
    raw = bf16.from_floats([math.sin(i * 0.37) * 0.05 for i in range(12 * 896)])
    x = [math.cos(j * 0.11) for j in range(896)]
    results = {k: load_matrix(array("H", raw), 12, 896, k).matvec(x) for k in KERNELS}
    for kernel, y in results.items():
        assert close(y, by_definition(raw, 12, 896, x)), kernel


@given(st.integers(0, 6).flatmap(lambda n: st.tuples(
    st.lists(st.floats(-100, 100), min_size=n, max_size=n),
    st.lists(st.lists(st.floats(-100, 100), min_size=n, max_size=n), max_size=5))))
def test_both_ways_of_taking_many_dot_products_agree(case: tuple[list[float], list[list[float]]]) -> None:
    x, vectors = case
    expected = [math.fsum(a * b for a, b in zip(x, v)) for v in vectors]
    for dots in (kernels._dots_by_dot, kernels._dots_plain):
        assert all(math.isclose(got, e, rel_tol=1e-9, abs_tol=1e-9) for got, e in zip(dots(x, vectors), expected))
        assert len(dots(x, vectors)) == len(vectors)


# --- GGUF's block formats and float types --------------------------------------------------------

BLOCK_FORMATS = sorted(quant.BLOCK_FORMATS)


@st.composite
def quantised(draw: st.DrawFn, type_name: str) -> tuple[str, bytes, int, int, list[list[float]]]:
    """A random matrix of `type_name` (finite float16 scales), 1-11 rows of 1-3 blocks, and 1-5 tokens."""
    rows, blocks_per_row = draw(st.integers(1, 11)), draw(st.integers(1, 3))
    raw = random_blocks(type_name, rows * blocks_per_row, draw(st.data()))
    cols = blocks_per_row * quant.BY_NAME[type_name].block_size
    xs = [draw(st.lists(st.floats(-4, 4), min_size=cols, max_size=cols)) for _ in range(draw(st.integers(1, 5)))]
    return type_name, raw, rows, cols, xs


def dequantise_then_multiply(weights: Sequence[float], rows: int, cols: int, x: list[float]) -> list[tuple[float, float]]:
    """(y[r], sum_j |W[r, j] x[j]|) with W the dequantised weights: the reference's product, and the scale of its rounding."""
    return [(math.fsum(weights[r * cols + j] * x[j] for j in range(cols)),
             math.fsum(abs(weights[r * cols + j] * x[j]) for j in range(cols))) for r in range(rows)]  # fmt: skip


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("type_name", BLOCK_FORMATS)
@given(data=st.data())
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
def test_block_format_kernels_match_dequantise_then_multiply(kernel: str, type_name: str, data: st.DataObject) -> None:
    """Against the weights as the reference dequantises them (float32): each weight is off by at most half a
    float32 step (2^-24 relative), the minimum's rounding, which the kernels skip; against the exact weights
    (float64, `Unpacked.weights`) only the order of the additions differs."""
    _, raw, rows, cols, xs = data.draw(quantised(type_name))
    matrix = load_matrix(array("B", raw), rows, cols, kernel, type_name)
    rounded = quant.dequantize(type_name, raw)
    exact = list(quant.unpack(type_name, raw).weights())
    for x, y in zip(xs, matrix.matmat(xs)):
        assert len(y) == rows
        for value, (expected, scale) in zip(y, dequantise_then_multiply(rounded, rows, cols, x)):
            assert abs(value - expected) <= 2**-23 * scale + 1e-300
        for value, (expected, scale) in zip(y, dequantise_then_multiply(exact, rows, cols, x)):
            assert abs(value - expected) <= 1e-12 * scale + 1e-300
    assert matrix.matvec(xs[0]) == matrix.matmat(xs[:1])[0]


def test_each_kernel_keeps_its_form_of_the_blocks() -> None:
    """naive keeps the file's bytes; CPython's kernel shares one float per distinct weight; PyPy's an integer a weight."""
    raw = struct.pack("<e", 0.5) + bytes([0x21] * 16)  # Q4_0: d = 0.5, every q 1 (low nibbles) and 2 (high)
    naive, rows, interleaved = (load_matrix(array("B", raw * 3), 3, 32, k, "Q4_0") for k in ("naive", "rows", "interleaved"))
    assert isinstance(naive, kernels.QuantMatrix) and bytes(naive.blocks) == raw * 3
    assert isinstance(rows, kernels.QuantRowsMatrix) and rows.row_values[0] == [0.5 * -7] * 16 + [0.5 * -6] * 16
    assert len({id(w) for row in rows.row_values for w in row}) == 2  # 96 weights, 2 float objects: 8 bytes a weight
    assert isinstance(interleaved, kernels.QuantInterleavedMatrix) and interleaved.codes.itemsize == 2
    assert len(interleaved.codes) == 8 * 32  # 3 rows padded to one block of 8
    for matrix in (naive, rows, interleaved):
        assert matrix.matvec([1.0] * 32) == [0.5 * (16 * -7 + 16 * -6)] * 3


def test_a_k_quant_on_cpython_is_a_sum_per_block_of_256() -> None:
    """Q6_K: d = 1, every group scale 2, every q 0x1 | 0b10 << 4 = 33 (code 1): each block of 256 is one tuple of the integers 2."""
    block = bytes([0x11] * 128) + bytes([0xAA] * 64) + bytes([2] * 16) + struct.pack("<e", 1.0)
    matrix = load_matrix(array("B", block * 2), 1, 512, "rows", "Q6_K")
    assert isinstance(matrix, kernels.QuantSuperBlocksMatrix) and matrix.row_blocks[0][0] == (2.0,) * 256
    assert matrix.row_blocks[0][0][0] is kernels.CODE_VALUES[4096 + 2] and matrix.matvec([1.0] * 512) == [1024.0]


@pytest.mark.parametrize("dtype", ["F32", "F16"])
def test_float_types_keep_their_values(dtype: str) -> None:
    values = [1.0, -2.5, 0.333251953125, 65504.0, 2.0**-24, 0.0]  # all exact in float16
    raw = struct.pack(f"<{len(values)}{'f' if dtype == 'F32' else 'e'}", *values)
    matrix = load_matrix(array("B", raw), 2, 3, dtype=dtype)
    assert matrix.matvec([1.0, 0.0, 0.0]) == [1.0, 65504.0] and matrix.matvec([0.0, 0.0, 1.0]) == [0.333251953125, 0.0]


def test_a_stack_of_types_is_each_part_in_turn() -> None:
    q8 = struct.pack("<e", 0.25) + bytes(range(32))  # Q8_0: 0.25 * (0..31)
    bits = array("H", bf16.from_floats([float(j) for j in range(32)]))
    stack = kernels.StackedMatrix([load_matrix(array("B", q8), 1, 32, "rows", "Q8_0"), load_matrix(bits, 1, 32, "rows")])
    x = [1.0] * 32
    assert (stack.rows, stack.cols) == (2, 32) and stack.matvec(x) == [0.25 * sum(range(32)), float(sum(range(32)))]
    assert stack.matmat([x, [0.0] * 32]) == [stack.matvec(x), [0.0, 0.0]]



@pytest.mark.parametrize("type_name", ["Q4_1", "Q2_K"])
@given(data=st.data())
@settings(max_examples=3, deadline=None)
def test_pypys_kernel_unpacks_a_large_matrix_a_chunk_of_rows_at_a_time(type_name: str, data: st.DataObject) -> None:
    """19 rows unpacked 8 at a time are stored as when unpacked at once (codes, scales, minimums): the same products."""
    rows, cols = 19, quant.BY_NAME[type_name].block_size
    raw = random_blocks(type_name, rows, data)
    whole = kernels.QuantInterleavedMatrix(type_name, raw, rows, cols)
    chunked = type("Chunked", (kernels.QuantInterleavedMatrix,), {"CHUNK": 8})(type_name, raw, rows, cols)
    assert (chunked.codes, chunked.scales, chunked.mins) == (whole.codes, whole.scales, whole.mins) and whole.mins is not None
    x = [math.sin(j) for j in range(cols)]
    assert chunked.matvec(x) == whole.matvec(x)
