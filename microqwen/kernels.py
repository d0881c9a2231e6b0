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

import collections
import itertools
import math
import operator
import platform
from array import array
from typing import Callable, Iterable, Sequence, Type, Union

from . import quant
from .bf16 import TABLE

Vector = Sequence[float]


def _sum_of_products(a: Iterable[float], b: Iterable[float]) -> float:
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
    """A weight matrix W [rows, cols], stored in the form its kernel computes with."""

    kernel = "abstract"

    def __init__(self, rows: int, cols: int) -> None:
        self.rows = rows
        self.cols = cols

    def matvec(self, x: Vector) -> list[float]:
        """y = W x: [cols] -> [rows]."""
        raise NotImplementedError

    def matmat(self, xs: Sequence[Vector]) -> list[list[float]]:
        """[W x for x in xs]: several activations (tokens) through the same weights."""
        return [self.matvec(x) for x in xs]


class Bf16Matrix(Matrix):
    """A matrix made from its bfloat16 bits (`array('H')`, row-major): the kernels of the ladder."""

    def __init__(self, bits: array[int], rows: int, cols: int) -> None:
        if len(bits) != rows * cols:
            raise ValueError(f"{len(bits)} bfloat16 values do not fill a [{rows}, {cols}] matrix")
        super().__init__(rows, cols)


class NaiveMatrix(Bf16Matrix):
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


class RowsMatrix(Bf16Matrix):
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


class InterleavedMatrix(Bf16Matrix):
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


KERNELS: dict[str, type[Bf16Matrix]] = {k.kernel: k for k in (NaiveMatrix, RowsMatrix, UnrolledMatrix, InterleavedMatrix)}


def best_kernel() -> str:
    """The fastest kernel for this interpreter: `interleaved` on PyPy, `rows` on CPython."""
    return "interleaved" if platform.python_implementation() == "PyPy" else "rows"


# ------------------------------------------------------------------ quantised and float weights (GGUF)


CODE_VALUES = [float(code) for code in range(-4096, 4097)]
"""Every integer a block format's code can be (a k-quant's s[g] * q reaches -4096..4096), as a float, at
index code + 4096: the fast kernels' weights are these shared objects, looked up rather than converted."""


class QuantMatrix(Matrix):
    """The reference kernel for a block format: W kept as the file's blocks, each row unpacked as it is used.

    A row of blocks is integers and scales (`microqwen.quant.Unpacked`): weight = scale * code - min, a
    scale per block (32 or 256 weights; a k-quant's code is s[g] * q), a minimum per group (16 or 32).
    So a row times x needs no weight,

        y[r] = sum over blocks b: scale[b] * sum_{j in b} code[j] x[j]  -  sum over groups g: min[g] * sum_{j in g} x[j]

    an integer-weighted sum per block and one multiplication (llama.cpp's way, without its 8-bit x), and
    the minimums' part, a sum of x per group. Memory is the file's: Q5_0 keeps 22 bytes for 32 weights.
    """

    kernel = "naive"

    def __init__(self, type_name: str, blocks: quant.Blocks, rows: int, cols: int) -> None:
        super().__init__(rows, cols)
        self.type_name, self.blocks = type_name, blocks
        self.row_bytes = quant.BY_NAME[type_name].row_bytes(cols)
        if len(blocks) != rows * self.row_bytes:
            raise ValueError(f"{len(blocks)} bytes are not {rows} rows of {cols} {type_name} weights")

    def matvec(self, x: Vector) -> list[float]:
        """Per row: unpack its blocks, then per block scale * (codes . x), minus per group min * sum(x)."""
        y = []
        for r in range(self.rows):
            row = quant.unpack(self.type_name, self.blocks[r * self.row_bytes : (r + 1) * self.row_bytes])
            codes = row.folded()
            total = 0.0
            for b, scale in enumerate(row.scales):
                s = 0.0
                for j in range(b * row.block, (b + 1) * row.block):
                    s += codes[j] * x[j]
                total += scale * s
            for g, minimum in enumerate(row.mins or []):
                total -= minimum * sum(x[g * row.group : (g + 1) * row.group])
            y.append(total)
        return y


class QuantRowsMatrix(Matrix):
    """CPython's kernel for a 32-weight block format: each row's weights as floats the matrix shares, one `sumprod` a row.

    On CPython a weight in a list costs a pointer (8 bytes) whatever its type, so keeping the blocks saves
    nothing there, and a C call per block of 32 (`scale_b * sumprod(codes_b, x_b)`, llama.cpp's form)
    costs more than its 32 multiply-adds (1.7 times the bf16 kernel's time, measured). What the quantised
    form does give is few distinct weights: a block's weights are scale * code - min for a few dozen
    codes, and scales repeat, so a Q5_0 matrix of 4.4 million weights has about 40,000 distinct ones. Each
    is made once, as one float object that every row holding it points at (as bf16 rows share
    `bf16.TABLE`), the most used scales' first, so that the floats most rows read lie together in memory:

        y[r] = sumprod(row_r, x)        row_r[j] = scale[b] * code[r, j] - min[b], a shared float
    """

    kernel = "rows"

    def __init__(self, unpacked: quant.Unpacked, rows: int, cols: int) -> None:
        super().__init__(rows, cols)
        codes, block = unpacked.codes, unpacked.block
        low, high = (min(codes), max(codes)) if codes else (0, 0)
        keys = list(zip(unpacked.scales, unpacked.mins or itertools.repeat(0.0)))  # a block's (scale, min)
        values: dict[float, float] = {}
        lists = {}  # (scale, min) -> the shared float of each code low..high
        for (scale, minimum), _ in collections.Counter(keys).most_common():
            lists[scale, minimum] = [_shared(values, scale * code - minimum) for code in range(low, high + 1)]
        block_lists = list(map(lists.__getitem__, keys))
        index = codes.tobytes().translate(bytes((byte - low) & 255 for byte in range(256)))  # its place in a list
        per_row = cols // block
        self.row_values = []
        for r in range(rows):
            each: list[list[float]] = []  # for each weight of the row, its block's list
            for shared in block_lists[r * per_row : (r + 1) * per_row]:
                each += [shared] * block
            self.row_values.append(list(map(operator.getitem, each, index[r * cols : (r + 1) * cols])))
        self.dot: Callable[[Vector, Vector], float] = getattr(math, "sumprod", _sum_of_products)

    def matvec(self, x: Vector) -> list[float]:
        """y[r] = row_r . x, one C call (`math.sumprod`) per row."""
        dot_row = self.dot
        return [dot_row(row, x) for row in self.row_values]


_ZEROS = (0.0, -0.0)


def _shared(values: dict[float, float], value: float) -> float:
    """The one float object of `value` in `values` (0.0 and -0.0 are equal as keys: each has its own)."""
    if value == 0.0:
        return _ZEROS[math.copysign(1.0, value) < 0]
    return values.setdefault(value, value)


class QuantSuperBlocksMatrix(Matrix):
    """CPython's kernel for a k-quant: per block of 256 its integers as a tuple of shared floats, one `sumprod` each.

    A k-quant's weights have too many distinct values to share (its groups' scales and minimums vary), but
    its codes s[g] * q are integers from `CODE_VALUES`, and one d scales 256 of them, so a C call per
    block does 256 multiply-adds; the minimums are one more call per row:

        y[r] = sumprod(d_r, [sumprod(codes_r_b, x_b) for each block b]) - sumprod(mins_r, [sum(x_g) for each group g])
    """

    kernel = "rows"

    def __init__(self, unpacked: quant.Unpacked, rows: int, cols: int) -> None:
        super().__init__(rows, cols)
        block, codes = unpacked.block, unpacked.folded()
        value = CODE_VALUES.__getitem__
        self.block, self.group = block, unpacked.group
        self.row_blocks = [[tuple(map(value, map(operator.add, codes[start : start + block], itertools.repeat(4096))))
                            for start in range(r * cols, (r + 1) * cols, block)] for r in range(rows)]  # fmt: skip
        blocks, groups = cols // block, cols // unpacked.group
        self.row_scales = [unpacked.scales[r * blocks : (r + 1) * blocks] for r in range(rows)]
        mins = unpacked.mins
        self.row_mins = None if mins is None else [mins[r * groups : (r + 1) * groups] for r in range(rows)]
        self.dot: Callable[[Iterable[float], Iterable[float]], float] = getattr(math, "sumprod", _sum_of_products)

    def matvec(self, x: Vector) -> list[float]:
        """Per row one C call per block of 256, one for the block scales, one for the minimums."""
        dot, block, group = self.dot, self.block, self.group
        pieces = [x[j : j + block] for j in range(0, self.cols, block)]  # x_b for every block
        ys = [dot(scales, map(dot, blocks, pieces)) for blocks, scales in zip(self.row_blocks, self.row_scales)]
        if self.row_mins is None:
            return ys
        sums = [sum(x[j : j + group]) for j in range(0, self.cols, group)]
        return [y - dot(mins, sums) for y, mins in zip(ys, self.row_mins)]


class QuantInterleavedMatrix(Matrix):
    """PyPy's kernel for a block format: one integer per weight, 8 rows per pass, a scale per block of columns.

    As in `InterleavedMatrix`, rows 8b .. 8b+7 are stored column by column (their codes, plus 4096, in an
    `array('H')`), and their scales block by block. A pass takes the 8 rows a block of 32 or 256 columns
    at a time, then subtracts the minimums, a group of columns at a time:

        s_k = sum_{j in b} CODE_VALUES[code[k, j] + 4096] x[j]     8 running sums
        y_k = y_k + scale[k, b] * s_k                              then y_k = y_k - sum_g min[k, g] * sum_{j in g} x[j]

    The code is looked up as a float rather than converted (PyPy's JIT makes int-times-float slower than
    a table read). A last block of fewer than 8 rows is padded with zeros.
    """

    kernel = "interleaved"
    BLOCK = 8
    CHUNK = 1024
    """Rows unpacked at a time: the integers of a whole output head would take a gigabyte on the way."""

    def __init__(self, type_name: str, blocks: quant.Blocks, rows: int, cols: int) -> None:
        super().__init__(rows, cols)
        width, row_bytes = self.BLOCK, quant.BY_NAME[type_name].row_bytes(cols)
        self.block = self.group = quant.BY_NAME[type_name].block_size
        self.padded_rows = -(-rows // width) * width
        self.codes = array("H", [4096]) * (self.padded_rows * cols)  # 4096 is the code of 0
        self.scales = array("d", bytes(8 * self.padded_rows * (cols // self.block)))
        self.mins: array[float] | None = None
        for first in range(0, rows, self.CHUNK):
            count = min(self.CHUNK, rows - first)
            self._place(quant.unpack(type_name, blocks[first * row_bytes : (first + count) * row_bytes]), first, count)

    def _place(self, unpacked: quant.Unpacked, first: int, count: int) -> None:
        """Store rows first..first+count-1 (unpacked) in their interleaved places."""
        cols, width = self.cols, self.BLOCK
        self.group = unpacked.group
        codes = unpacked.folded()
        for r in range(count):
            b, k = divmod(first + r, width)
            start = b * width * cols + k
            self.codes[start : start + width * cols : width] = array("H", [c + 4096 for c in codes[r * cols : (r + 1) * cols]])
        _interleave_into(self.scales, unpacked.scales, first, count, cols // self.block)
        if unpacked.mins is not None:
            if self.mins is None:
                self.mins = array("d", bytes(8 * self.padded_rows * (cols // self.group)))
            _interleave_into(self.mins, unpacked.mins, first, count, cols // self.group)

    def matvec(self, x: Vector) -> list[float]:
        """y = W x, 8 rows per pass, a block of columns at a time; then the minimums."""
        q, scales, block = self.codes, self.scales, self.block
        pieces = [x[j : j + block] for j in range(0, self.cols, block)]
        y = [0.0] * self.padded_rows
        i = k = 0
        for r in range(0, self.padded_rows, 8):
            y0 = y1 = y2 = y3 = y4 = y5 = y6 = y7 = 0.0
            for piece in pieces:
                s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
                for xj in piece:
                    s0 += CODE_VALUES[q[i]] * xj
                    s1 += CODE_VALUES[q[i + 1]] * xj
                    s2 += CODE_VALUES[q[i + 2]] * xj
                    s3 += CODE_VALUES[q[i + 3]] * xj
                    s4 += CODE_VALUES[q[i + 4]] * xj
                    s5 += CODE_VALUES[q[i + 5]] * xj
                    s6 += CODE_VALUES[q[i + 6]] * xj
                    s7 += CODE_VALUES[q[i + 7]] * xj
                    i += 8
                y0 += scales[k] * s0
                y1 += scales[k + 1] * s1
                y2 += scales[k + 2] * s2
                y3 += scales[k + 3] * s3
                y4 += scales[k + 4] * s4
                y5 += scales[k + 5] * s5
                y6 += scales[k + 6] * s6
                y7 += scales[k + 7] * s7
                k += 8
            y[r], y[r + 1], y[r + 2], y[r + 3], y[r + 4], y[r + 5], y[r + 6], y[r + 7] = y0, y1, y2, y3, y4, y5, y6, y7
        if self.mins is not None:
            self._subtract_mins(x, y, self.mins)
        return y if self.padded_rows == self.rows else y[: self.rows]

    def _subtract_mins(self, x: Vector, y: list[float], mins: array[float]) -> None:
        """y_k -= sum over groups g: min[k, g] * sum_{j in g} x[j], 8 rows per pass."""
        group = self.group
        sums = [sum(x[j : j + group]) for j in range(0, self.cols, group)]
        k = 0
        for r in range(0, self.padded_rows, 8):
            m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = 0.0
            for t in sums:
                m0 += mins[k] * t
                m1 += mins[k + 1] * t
                m2 += mins[k + 2] * t
                m3 += mins[k + 3] * t
                m4 += mins[k + 4] * t
                m5 += mins[k + 5] * t
                m6 += mins[k + 6] * t
                m7 += mins[k + 7] * t
                k += 8
            y[r] -= m0
            y[r + 1] -= m1
            y[r + 2] -= m2
            y[r + 3] -= m3
            y[r + 4] -= m4
            y[r + 5] -= m5
            y[r + 6] -= m6
            y[r + 7] -= m7


def _interleave_into(out: array[float], values: Sequence[float], first: int, count: int, per_row: int) -> None:
    """Put rows first..first+count-1's values (per_row of each, row after row) where `out` keeps them:
    [row block of 8][value][8 rows]."""
    for r in range(count):
        b, k = divmod(first + r, 8)
        start = b * 8 * per_row + k
        out[start : start + 8 * per_row : 8] = array("d", values[r * per_row : (r + 1) * per_row])


def _quant_rows(type_name: str, blocks: quant.Blocks, rows: int, cols: int) -> Matrix:
    """CPython's form: shared floats for the 32-weight formats, a sumprod per block of 256 for the k-quants."""
    unpacked = quant.unpack(type_name, blocks)
    if unpacked.block == 256:
        return QuantSuperBlocksMatrix(unpacked, rows, cols)
    return QuantRowsMatrix(unpacked, rows, cols)


QUANT_KERNELS: dict[str, Callable[[str, quant.Blocks, int, int], Matrix]] = {
    "naive": QuantMatrix, "rows": _quant_rows, "unrolled": QuantInterleavedMatrix, "interleaved": QuantInterleavedMatrix,
}  # fmt: skip
"""A block-format matrix for each kernel name: the reference for `naive`, CPython's or PyPy's form for the others."""


class FloatMatrix(Matrix):
    """F32 and F16 weights, which bfloat16 cannot hold exactly: each row a list of floats, `dots` for y."""

    kernel = "float"

    def __init__(self, values: Sequence[float], rows: int, cols: int) -> None:
        super().__init__(rows, cols)
        self.row_values = [list(values[r * cols : (r + 1) * cols]) for r in range(rows)]

    def matvec(self, x: Vector) -> list[float]:
        """y[r] = row_r . x, with the interpreter's fastest dot product (`dots`)."""
        return dots(x, self.row_values)


class StackedMatrix(Matrix):
    """Matrices of one width stacked by rows (q_proj, k_proj, v_proj of different types): y is their outputs in turn."""

    kernel = "stacked"

    def __init__(self, parts: Sequence[Matrix]) -> None:
        super().__init__(sum(part.rows for part in parts), parts[0].cols)
        self.parts = list(parts)

    def matvec(self, x: Vector) -> list[float]:
        """Each part's y, one after the other."""
        return [y for part in self.parts for y in part.matvec(x)]

    def matmat(self, xs: Sequence[Vector]) -> list[list[float]]:
        """Each part's y for every token, joined token by token (each part reads its weights once for all)."""
        outputs = [part.matmat(xs) for part in self.parts]  # [parts][T][part rows]
        return [[y for ys in token for y in ys] for token in zip(*outputs)]


Kernel = Union[str, Type[Bf16Matrix], None]
"""A kernel by name (None: the best here), or a bfloat16 `Matrix` class (a planted bug's, `microqwen.lab.mutations`)."""


def kernel_name(kernel: Kernel) -> str:
    """A kernel's name: the one given, a `Matrix` class's own, or the best here for None."""
    if isinstance(kernel, type):
        return kernel.kernel
    return kernel or best_kernel()


def load_matrix(data: array[int], rows: int, cols: int, kernel: Kernel = None, dtype: str = "BF16") -> Matrix:
    """W [rows, cols] from its stored form, in the form `kernel` wants (default: the best for this interpreter).

    `dtype` BF16: `data` is the bfloat16 bits (`array('H')`, row-major); `naive` and `unrolled` keep it as
    it is, and a `Matrix` class (a planted bug's) is given them as they are. A block format of
    `microqwen.quant` (Q4_K, ...): `data` is the rows' blocks (`array('B')`), which `naive` keeps; a
    `Matrix` class stands for its kernel name there. F32 and F16: the rows' bytes, widened to floats.
    """
    if dtype == "BF16":
        return kernel(data, rows, cols) if isinstance(kernel, type) else KERNELS[kernel_name(kernel)](data, rows, cols)
    if dtype in quant.BLOCK_FORMATS:
        return QUANT_KERNELS[kernel_name(kernel)](dtype, data, rows, cols)
    return FloatMatrix(quant.dequantize(dtype, data), rows, cols)
