"""The kernel ladder: how many multiply-adds per second each way of writing y = W x reaches.

    python scripts/bench_ladder.py --json out/ladder-cpython3.12.json      # on each interpreter
    pypy3  scripts/bench_ladder.py --json out/ladder-pypy3.9.json
    python scripts/bench_ladder.py --chart docs/images/kernel-ladder.svg out/ladder-*.json

One process, one matrix: the gate and up projections of a layer, W [9728, 896] in bfloat16 (17 MB,
larger than this machine's 2 MB L2 cache, like every real weight matrix), times one 896-wide activation.
Each rung is the median of REPEATS timed calls after a warm-up call (PyPy compiles its loops there):

    naive      two nested loops, TABLE[w[i]] * x[j]          microqwen.kernels.NaiveMatrix
    sum(map)   rows of shared floats, sum(map(mul, row, x))   RowsMatrix with Python < 3.12's dot
    sumprod    rows of shared floats, math.sumprod(row, x)    RowsMatrix (CPython 3.12+)
    unrolled   the naive loop, 4 rows per pass                UnrolledMatrix
    interleaved  8 rows per pass, their weights in block order  InterleavedMatrix (PyPy)
    prefill    interleaved, 2 tokens per weight read (16 tokens)  InterleavedMatrix.matmat (PyPy)

Rungs that make no sense on an interpreter are skipped (the naive loop on CPython takes minutes per
call, so it is timed on 64 rows there; sumprod needs 3.12).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from array import array
from typing import Any, Callable, Dict, List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from microqwen import bf16, kernels  # noqa: E402

ROWS, COLS, REPEATS = 9728, 896, 5


def random_matrix(rows: int, cols: int) -> array:  # type: ignore[type-arg]
    rng = random.Random(0)
    pool = [bf16.float_to_bits(rng.gauss(0.0, 0.03)) for _ in range(4096)]
    return array("H", [pool[rng.randrange(4096)] for _ in range(rows * cols)])


def rate(call: Callable[[], object], multiply_adds: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return multiply_adds / statistics.median(times)


def measure() -> Dict[str, Any]:
    on_pypy = platform.python_implementation() == "PyPy"
    bits = random_matrix(ROWS, COLS)
    x = [math.sin(j) for j in range(COLS)]
    rungs: Dict[str, float] = {}
    naive_rows = ROWS if on_pypy else 64
    naive = kernels.NaiveMatrix(bits[: naive_rows * COLS], naive_rows, COLS)
    rungs["naive"] = rate(lambda: naive.matvec(x), naive_rows * COLS)
    if not on_pypy:
        rows = kernels.RowsMatrix(bits, ROWS, COLS)
        if hasattr(math, "sumprod"):
            rungs["sumprod"] = rate(lambda: rows.matvec(x), ROWS * COLS)
        rows.dot = kernels._sum_of_products  # the rung below: what Python < 3.12 has
        rungs["sum(map)"] = rate(lambda: rows.matvec(x), ROWS * COLS)
    else:
        unrolled = kernels.UnrolledMatrix(bits, ROWS, COLS)
        rungs["unrolled"] = rate(lambda: unrolled.matvec(x), ROWS * COLS)
        interleaved = kernels.InterleavedMatrix(bits, ROWS, COLS)
        rungs["interleaved"] = rate(lambda: interleaved.matvec(x), ROWS * COLS)
        tokens = [[math.sin(j + t) for j in range(COLS)] for t in range(16)]
        rungs["prefill"] = rate(lambda: interleaved.matmat(tokens), 16 * ROWS * COLS)
    return {
        "interpreter": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "matrix": [ROWS, COLS],
        "multiply_adds_per_second": rungs,
    }


def chart(paths: List[str], out: str) -> None:
    """A horizontal bar chart (SVG) of every rung of every interpreter, in M multiply-adds/s."""
    bars = []
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        for rung, value in result["multiply_adds_per_second"].items():
            bars.append((f"{result['interpreter']}: {rung}", value / 1e6))
    bars.sort(key=lambda bar: bar[1])
    top = max(value for _, value in bars)
    height = 40 + 28 * len(bars)
    parts = [f"<rect width='760' height='{height}' fill='white'/>",
             "<text x='380' y='22' font-family='Helvetica, Arial, sans-serif' font-size='14' text-anchor='middle' "
             "font-weight='bold'>y = W x, W [9728, 896] bfloat16: million multiply-adds per second, one core</text>"]
    for i, (label, value) in enumerate(bars):
        y = 36 + 28 * i
        width = 400 * value / top
        parts.append(f"<text x='250' y='{y + 15}' font-family='Helvetica, Arial, sans-serif' font-size='12' "
                     f"text-anchor='end'>{label}</text>")
        parts.append(f"<rect x='260' y='{y}' width='{width:.1f}' height='20' fill='#3f51b5'/>")
        parts.append(f"<text x='{266 + width:.1f}' y='{y + 15}' font-family='Helvetica, Arial, sans-serif' "
                     f"font-size='12'>{value:,.0f}</text>")
    svg = (f"<svg xmlns='http://www.w3.org/2000/svg' width='760' height='{height}' viewBox='0 0 760 {height}'>\n"
           + "\n".join(parts) + "\n</svg>\n")
    with open(out, "w", encoding="utf-8") as f:
        f.write(svg)
    print("wrote", out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="save this interpreter's rungs to FILE")
    parser.add_argument("--chart", nargs="+", metavar=("SVG", "JSON"), help="draw SVG from saved JSON files")
    args = parser.parse_args()
    if args.chart:
        chart(args.chart[1:], args.chart[0])
        return
    result = measure()
    print(result["interpreter"], result["machine"])
    for rung, value in result["multiply_adds_per_second"].items():
        print(f"  {rung:10s} {value / 1e6:8.1f} M multiply-adds/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
