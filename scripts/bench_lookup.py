"""Lookup decoding on a prompt that asks for an edit of given code: the same text, how much faster?

    pypy3 scripts/bench_lookup.py --model DIR [--workers 1] [--lookup 8] [--json out.json]

DIR is a real Qwen2.5-architecture model directory (random weights do not repeat their prompt). Both
runs decode greedily, with the prompt cache off; the script checks that the two texts are the same and
prints the decode speed of each, the speed-up, and the drafts accepted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from microqwen.generation import Timings, generate  # noqa: E402
from microqwen.model import load  # noqa: E402
from microqwen.sampling import Sampler, SamplingParams  # noqa: E402

CODE = '''def mean(values):
    total = 0
    for value in values:
        total = total + value
    return total / len(values)


def variance(values):
    m = mean(values)
    total = 0
    for value in values:
        total = total + (value - m) ** 2
    return total / len(values)
'''
REQUEST = "Rename the function `mean` to `average` everywhere in this code, and change nothing else:\n\n" + CODE


def run(model_dir: str, workers: int, lookup: int, tokens: int) -> tuple[str, Timings]:
    timings = Timings()
    with load(model_dir, workers=workers, prompt_cache=False) as model:
        assert model.tokenizer is not None
        prompt = model.tokenizer.apply_chat_template([{"role": "user", "content": REQUEST}])
        greedy = Sampler(SamplingParams(temperature=0.0))
        text = "".join(t.text for t in generate(model, prompt, tokens, greedy, timings=timings, lookup=lookup))
    return text, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a real Qwen2.5-architecture model directory")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--lookup", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=160)
    parser.add_argument("--json", help="save the figures to FILE")
    args = parser.parse_args()
    plain_text, plain = run(args.model, args.workers, 0, args.tokens)
    fast_text, fast = run(args.model, args.workers, args.lookup, args.tokens)
    if fast_text != plain_text:
        raise SystemExit(f"lookup decoding changed the text:\n{plain_text!r}\n{fast_text!r}")
    rate = plain.generated_tokens / plain.generate_seconds
    fast_rate = fast.generated_tokens / fast.generate_seconds
    figures = {
        "interpreter": f"{platform.python_implementation()} {platform.python_version()}",
        "workers": args.workers,
        "lookup": args.lookup,
        "tokens": plain.generated_tokens,
        "decode_tokens_per_second": rate,
        "lookup_tokens_per_second": fast_rate,
        "speedup": fast_rate / rate,
        "drafted": fast.drafted_tokens,
        "accepted": fast.accepted_tokens,
        "text": plain_text,
    }
    print(plain_text)
    print(f"{figures['interpreter']}, {args.workers} workers: {plain.generated_tokens} tokens, plain greedy "
          f"{rate:.2f} tokens/s, with --lookup {args.lookup} {fast_rate:.2f} tokens/s ({fast_rate / rate:.2f}x); "
          f"{fast.drafted_tokens} drafted, {fast.accepted_tokens} accepted; the same text", file=sys.stderr)  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
