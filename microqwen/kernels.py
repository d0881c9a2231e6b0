"""Matrix-vector kernels: y = W x over bfloat16 weights, the hot loop of the whole model.

One decode step of Qwen2.5-0.5B is about 494 million multiply-adds, nearly all of them in
products of a weight matrix W [out, in] (stored as bfloat16 bits) with an activation x [in]:

    y[r] = sum_j W[r, j] * x[j]            for r = 0 .. out-1

Everything else in the model is small, so the speed of this loop is the speed of microqwen.
Each kernel below is a `Matrix` subclass that stores W in the form its loop wants and
computes the same y; which one is fastest depends on the interpreter (the "kernel ladder"):

| kernel        | W is stored as                         | inner loop                          | best on        |
|---------------|----------------------------------------|-------------------------------------|----------------|
| `naive`       | `array('H')` of bf16 bits              | `s += TABLE[w[i]] * x[j]`           | reading        |
| `rows`        | a list of rows of floats (shared       | `math.sumprod(row, x)` (3.12+), or  | CPython        |
|               | objects from `bf16.TABLE`)             | `sum(map(operator.mul, row, x))`    |                |
| `unrolled`    | `array('H')` of bf16 bits              | the naive loop, 4 rows per pass     | PyPy (the JIT) |

`matmat` multiplies several activations (the tokens of a prompt) by the same W; the
`unrolled` kernel then reads each weight once for 4 tokens (prefill).
All kernels are tested to agree with `naive`.
"""

from __future__ import annotations

import math
import operator
import platform
from array import array
from typing import Callable, Sequence, Type, Union

from .bf16 import TABLE

Vector = Sequence[float]


def _sum_of_products(a: Vector, b: Vector) -> float:
    """sum_i a[i] * b[i]: the fallback for `math.sumprod` (Python < 3.12)."""
    total: float = sum(map(operator.mul, a, b))
    return total


def _plain_dot(a: Vector, b: Vector) -> float:
    """sum_i a[i] * b[i] as a plain loop: what PyPy's JIT compiles best."""
    total = 0.0
    for i in range(len(a)):
        total += a[i] * b[i]
    return total


def _pick_dot() -> Callable[[Vector, Vector], float]:
    if platform.python_implementation() == "PyPy":
        return _plain_dot
    sumprod: Callable[[Vector, Vector], float] | None = getattr(math, "sumprod", None)
    return sumprod or _sum_of_products


dot = _pick_dot()
"""The fastest dot product of two float vectors on this interpreter (RMSNorm uses it)."""


def _dots_by_dot(x: Vector, vectors: Sequence[Vector]) -> list[float]:
    """[x . v for v in vectors], one `dot` call each (`math.sumprod` on CPython 3.12+)."""
    return [dot(x, v) for v in vectors]


def _dots_plain(x: Vector, vectors: Sequence[Vector]) -> list[float]:
    """[x . v for v in vectors] as nested loops in one function: PyPy's JIT does not inline a
    function that has a loop, so calling `dot` once per vector would cost a call each time."""
    out = []
    n = len(x)
    for v in vectors:
        total = 0.0
        for i in range(n):
            total += x[i] * v[i]
        out.append(total)
    return out


dots = _dots_plain if platform.python_implementation() == "PyPy" else _dots_by_dot
"""[x . v for v in vectors]: attention's scores (q . every cached key) and outputs (weights . every value column)."""


class Matrix:
    """A weight matrix W [rows, cols], made from its bfloat16 bits (row-major)."""

    kernel = "abstract"

    def __init__(self, bits: array[int], rows: int, cols: int) -> None:
        if len(bits) != rows * cols:
            raise ValueError(f"{len(bits)} bfloat16 values do not fill a [{rows}, {cols}] matrix")
        self.rows = rows
        self.cols = cols

    def matvec(self, x: Vector) -> list[float]:
        """y = W x: [cols] -> [rows]."""
        raise NotImplementedError

    def matmat(self, xs: Sequence[Vector]) -> list[list[float]]:
        """[W x for x in xs]: several activations (tokens) through the same weights."""
        return [self.matvec(x) for x in xs]


class NaiveMatrix(Matrix):
    """The reference kernel: two nested loops, each weight looked up in the bf16 table."""

    kernel = "naive"

    def __init__(self, bits: array[int], rows: int, cols: int) -> None:
        super().__init__(bits, rows, cols)
        self.bits = bits

    def matvec(self, x: Vector) -> list[float]:
        """y[r] = sum_j TABLE[bits[r * cols + j]] * x[j], one multiply-add at a time."""
        w, cols = self.bits, self.cols
        y = []
        for r in range(self.rows):
            base = r * cols
            total = 0.0
            for j in range(cols):
                total += TABLE[w[base + j]] * x[j]
            y.append(total)
        return y


class RowsMatrix(Matrix):
    """CPython's kernel: each row a list of floats, multiplied by C code (`math.sumprod`).

    The floats are the 65,536 shared objects of `bf16.TABLE`, so a row costs 8 bytes a
    weight (one pointer) instead of 32 for fresh float objects.
    """

    kernel = "rows"

    def __init__(self, bits: array[int], rows: int, cols: int) -> None:
        super().__init__(bits, rows, cols)
        lookup = TABLE.__getitem__
        self.row_values = [list(map(lookup, bits[r * cols : (r + 1) * cols])) for r in range(rows)]
        self.dot: Callable[[Vector, Vector], float] = getattr(math, "sumprod", _sum_of_products)

    def matvec(self, x: Vector) -> list[float]:
        """y[r] = row_r . x, one C call (`math.sumprod`) per row."""
        dot_row = self.dot
        return [dot_row(row, x) for row in self.row_values]

    def matmat(self, xs: Sequence[Vector]) -> list[list[float]]:
        """Row by row, every token: a row is fetched from memory once for all of them (the same calls)."""
        if len(xs) == 1 or not self.row_values:  # (a process with no rows still answers every token)
            return [self.matvec(x) for x in xs]
        dot_row = self.dot
        by_row = [[dot_row(row, x) for x in xs] for row in self.row_values]  # [rows, T]
        return [list(column) for column in zip(*by_row)]  # [T, rows]


class UnrolledMatrix(NaiveMatrix):
    """PyPy's kernel: the naive loop, 4 rows per pass, so each x[j] feeds 4 independent sums.

    The JIT compiles the loop to machine code; four accumulators keep the CPU's
    floating-point units busy instead of waiting on one running sum. `matmat` reads
    each weight once for up to 4 tokens (2 rows x 4 tokens per pass).
    """

    kernel = "unrolled"

    def matvec(self, x: Vector) -> list[float]:
        """The naive loop over 4 rows at once: x[j] is read once for 4 running sums."""
        w, cols, rows = self.bits, self.cols, self.rows
        y = [0.0] * rows
        whole = rows - rows % 4
        for r in range(0, whole, 4):
            b0 = r * cols
            b1, b2, b3 = b0 + cols, b0 + 2 * cols, b0 + 3 * cols
            s0 = s1 = s2 = s3 = 0.0
            for j in range(cols):
                xj = x[j]
                s0 += TABLE[w[b0 + j]] * xj
                s1 += TABLE[w[b1 + j]] * xj
                s2 += TABLE[w[b2 + j]] * xj
                s3 += TABLE[w[b3 + j]] * xj
            y[r], y[r + 1], y[r + 2], y[r + 3] = s0, s1, s2, s3
        for r in range(whole, rows):
            base = r * cols
            total = 0.0
            for j in range(cols):
                total += TABLE[w[base + j]] * x[j]
            y[r] = total
        return y

    def matmat(self, xs: Sequence[Vector]) -> list[list[float]]:
        """Tokens in groups of 4 through `_matmat4`; a last group of fewer, one by one."""
        ys = []
        for start in range(0, len(xs), 4):
            group = list(xs[start : start + 4])
            if len(group) == 4:
                ys += self._matmat4(group[0], group[1], group[2], group[3])
            else:
                ys += [self.matvec(x) for x in group]
        return ys

    def _matmat4(self, x0: Vector, x1: Vector, x2: Vector, x3: Vector) -> list[list[float]]:
        """W [x0 x1 x2 x3]: 2 rows x 4 tokens per pass, each weight read once for 4 tokens."""
        w, cols, rows = self.bits, self.cols, self.rows
        y0, y1, y2, y3 = [0.0] * rows, [0.0] * rows, [0.0] * rows, [0.0] * rows
        for r in range(0, rows, 2):
            b0 = r * cols
            b1 = b0 + cols if r + 1 < rows else b0  # an odd last row is computed twice
            a0 = a1 = a2 = a3 = c0 = c1 = c2 = c3 = 0.0
            for j in range(cols):
                u, v = TABLE[w[b0 + j]], TABLE[w[b1 + j]]
                v0, v1, v2, v3 = x0[j], x1[j], x2[j], x3[j]
                a0 += u * v0
                a1 += u * v1
                a2 += u * v2
                a3 += u * v3
                c0 += v * v0
                c1 += v * v1
                c2 += v * v2
                c3 += v * v3
            y0[r], y1[r], y2[r], y3[r] = a0, a1, a2, a3
            if r + 1 < rows:
                y0[r + 1], y1[r + 1], y2[r + 1], y3[r + 1] = c0, c1, c2, c3
        return [y0, y1, y2, y3]


class InterleavedMatrix(Matrix):
    """PyPy's kernel: 8 rows per pass, their weights stored interleaved so the pass reads memory in order.

    Rows 8b .. 8b+7 form block b, stored column by column: `W[8b, 0], W[8b+1, 0], ..., W[8b+7, 0],
    W[8b, 1], ...` So the inner loop reads one run of memory (instead of 8 rows far apart), and each
    x[j] feeds 8 independent sums. A last block of fewer than 8 rows is padded with zero rows, whose
    outputs are dropped. `matmat` takes 2 tokens per pass, so each weight is read once for both.
    """

    kernel = "interleaved"
    BLOCK = 8

    def __init__(self, bits: array[int], rows: int, cols: int) -> None:
        super().__init__(bits, rows, cols)
        padded_rows = -(-rows // self.BLOCK) * self.BLOCK
        self.bits = array("H", bytes(2 * padded_rows * cols))  # zero bits are +0.0
        for r in range(rows):
            block, k = divmod(r, self.BLOCK)
            start = block * self.BLOCK * cols + k
            self.bits[start : start + self.BLOCK * cols : self.BLOCK] = bits[r * cols : (r + 1) * cols]
        self.padded_rows = padded_rows

    def matvec(self, x: Vector) -> list[float]:
        """y = W x, 8 rows per pass over their interleaved weights."""
        w = self.bits
        y = [0.0] * self.padded_rows
        i = 0
        for r in range(0, self.padded_rows, 8):
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
            for xj in x:
                s0 += TABLE[w[i]] * xj
                s1 += TABLE[w[i + 1]] * xj
                s2 += TABLE[w[i + 2]] * xj
                s3 += TABLE[w[i + 3]] * xj
                s4 += TABLE[w[i + 4]] * xj
                s5 += TABLE[w[i + 5]] * xj
                s6 += TABLE[w[i + 6]] * xj
                s7 += TABLE[w[i + 7]] * xj
                i += 8
            y[r], y[r + 1], y[r + 2], y[r + 3], y[r + 4], y[r + 5], y[r + 6], y[r + 7] = s0, s1, s2, s3, s4, s5, s6, s7
        return y if self.padded_rows == self.rows else y[: self.rows]

    def matmat(self, xs: Sequence[Vector]) -> list[list[float]]:
        """Tokens in pairs through `_matmat2`; an odd last one alone."""
        ys = []
        for t in range(0, len(xs) - 1, 2):
            ys += self._matmat2(xs[t], xs[t + 1])
        if len(xs) % 2:
            ys.append(self.matvec(xs[-1]))
        return ys

    def _matmat2(self, xa: Vector, xb: Vector) -> list[list[float]]:
        """W [xa xb]: each weight read once for two tokens (8 rows x 2 tokens = 16 running sums)."""
        w = self.bits
        ya, yb = [0.0] * self.padded_rows, [0.0] * self.padded_rows
        i = 0
        for r in range(0, self.padded_rows, 8):
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
            b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = 0.0
            for j in range(self.cols):
                u, v = xa[j], xb[j]
                w0, w1, w2, w3 = TABLE[w[i]], TABLE[w[i + 1]], TABLE[w[i + 2]], TABLE[w[i + 3]]
                w4, w5, w6, w7 = TABLE[w[i + 4]], TABLE[w[i + 5]], TABLE[w[i + 6]], TABLE[w[i + 7]]
                a0 += w0 * u
                b0 += w0 * v
                a1 += w1 * u
                b1 += w1 * v
                a2 += w2 * u
                b2 += w2 * v
                a3 += w3 * u
                b3 += w3 * v
                a4 += w4 * u
                b4 += w4 * v
                a5 += w5 * u
                b5 += w5 * v
                a6 += w6 * u
                b6 += w6 * v
                a7 += w7 * u
                b7 += w7 * v
                i += 8
            ya[r], ya[r + 1], ya[r + 2], ya[r + 3], ya[r + 4], ya[r + 5], ya[r + 6], ya[r + 7] = a0, a1, a2, a3, a4, a5, a6, a7
            yb[r], yb[r + 1], yb[r + 2], yb[r + 3], yb[r + 4], yb[r + 5], yb[r + 6], yb[r + 7] = b0, b1, b2, b3, b4, b5, b6, b7
        if self.padded_rows != self.rows:
            return [ya[: self.rows], yb[: self.rows]]
        return [ya, yb]


KERNELS: dict[str, type[Matrix]] = {k.kernel: k for k in (NaiveMatrix, RowsMatrix, UnrolledMatrix, InterleavedMatrix)}


def best_kernel() -> str:
    """The fastest kernel for this interpreter: `interleaved` on PyPy, `rows` on CPython."""
    return "interleaved" if platform.python_implementation() == "PyPy" else "rows"


Kernel = Union[str, Type[Matrix], None]
"""A kernel by name (None: the best here), or a `Matrix` class (a planted bug's, `microqwen.lab.mutations`)."""


def kernel_name(kernel: Kernel) -> str:
    """A kernel's name: the one given, a `Matrix` class's own, or the best here for None."""
    if isinstance(kernel, type):
        return kernel.kernel
    return kernel or best_kernel()


def load_matrix(bits: array[int], rows: int, cols: int, kernel: Kernel = None) -> Matrix:
    """W [rows, cols] from its bfloat16 bits (`array('H')`, row-major), in the form `kernel` wants.

    The default kernel is the best for this interpreter; `naive` and `unrolled` keep `bits` as it is.
    """
    if isinstance(kernel, type):
        return kernel(bits, rows, cols)
    return KERNELS[kernel or best_kernel()](bits, rows, cols)
