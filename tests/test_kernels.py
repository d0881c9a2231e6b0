"""Every matrix kernel computes the same y = W x as the naive reference loop."""

from __future__ import annotations

import math
import struct
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microqwen import bf16
from microqwen import kernels
from microqwen.kernels import KERNELS, best_kernel, dot, load_matrix

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
