"""Benchmark the file-format code: JSON parse speed and bulk bfloat16 conversion speed.

    python scripts/bench_formats.py            # any interpreter: CPython 3.9+ or PyPy

JSON: a tokenizer.json-like document of about 7 MB (a vocab object of 151,643 byte-level tokens and a
list of 151,387 merges, the sizes of Qwen2.5's), parsed by microqwen.jsonparse and, for scale, by the
standard library's C-accelerated json. bfloat16: 16 Mi values (32 MiB) widened by microqwen.bf16.to_floats.
Prints medians over repeats and the interpreter that ran them.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from microqwen import bf16, jsonparse  # noqa: E402

REPEATS = 5


def median_seconds(function: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tokenizer_like_document() -> str:
    rng = random.Random(0)
    alphabet = [chr(c) for c in range(0x21, 0x7F)] + ["Ġ", "Ċ", "ä¸", "Ã©", "\\", '"']
    vocab = {}
    while len(vocab) < 151_643:
        vocab["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9)))] = len(vocab)
    tokens = list(vocab)
    merges = [f"{rng.choice(tokens)} {rng.choice(tokens)}" for _ in range(151_387)]
    document = {"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": merges}}
    return json.dumps(document, ensure_ascii=False, indent=2)


def main() -> None:
    print(f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    text = tokenizer_like_document()
    size_mb = len(text.encode()) / 1e6
    ours = median_seconds(lambda: jsonparse.parse(text))
    stdlib = median_seconds(lambda: json.loads(text))
    assert jsonparse.parse(text) == json.loads(text)
    print(f"json: {size_mb:.1f} MB tokenizer.json-like document: microqwen.jsonparse {ours:.2f} s "
          f"({size_mb / ours:.1f} MB/s); stdlib json {stdlib:.2f} s; median of {REPEATS}")

    count = 16 * 1024 * 1024
    data = os.urandom(2 * count)
    seconds = median_seconds(lambda: bf16.to_floats(data))
    print(f"bf16: to_floats on {count:,} values: {seconds * 1000:.0f} ms = {count / seconds / 1e6:.0f} M values/s; "
          f"median of {REPEATS}")


if __name__ == "__main__":
    main()
