"""Benchmark one sampling step on a full 151,936-entry logits vector.

    python scripts/bench_sampling.py            # any interpreter: CPython 3.9+ or PyPy

Two kinds of random logits: "flat" (Gaussian, sigma 2: no token stands out, so top-p alone must keep
tens of thousands of tokens) and "peaked" (uniform in [-3, 3] plus 300 ids raised to 6..14, closer to
a trained model's output, where a few hundred tokens carry most of the mass). Settings: the Instruct
defaults (T 0.7, top-k 20, top-p 0.8, repetition penalty 1.1), the same with top-k off, min-p alone,
plain temperature sampling, and greedy; a prompt of 200 ids feeds the penalty. Prints the median time of
`Sampler.sample` over repeats, and how many tokens survive.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from microqwen.sampling import Sampler, SamplingParams  # noqa: E402

VOCAB = 151_936
REPEATS = 15

SETTINGS = {
    "Instruct defaults (top-k 20)": SamplingParams(temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.1),
    "top-k off (top-p 0.8)": SamplingParams(temperature=0.7, top_k=0, top_p=0.8, repetition_penalty=1.1),
    "min-p 0.05 alone": SamplingParams(temperature=0.7, min_p=0.05, repetition_penalty=1.1),
    "temperature only": SamplingParams(temperature=0.7, repetition_penalty=1.1),
    "greedy": SamplingParams(temperature=0.0, repetition_penalty=1.1),
}


def flat(rng: random.Random) -> list[float]:
    return [rng.gauss(0.0, 2.0) for _ in range(VOCAB)]


def peaked(rng: random.Random) -> list[float]:
    logits = [rng.uniform(-3.0, 3.0) for _ in range(VOCAB)]
    for _ in range(300):
        logits[rng.randrange(VOCAB)] = rng.uniform(6.0, 14.0)
    return logits


def median_ms(sampler: Sampler, logits: list[float], prompt: list[int]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        sampler.sample(logits, prompt)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    print(f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs; {VOCAB:,} logits, median of {REPEATS} steps")
    rng = random.Random(0)
    prompt = [rng.randrange(VOCAB) for _ in range(200)]
    for kind, make in (("flat", flat), ("peaked", peaked)):
        logits = make(rng)
        for name, params in SETTINGS.items():
            sampler = Sampler(params)
            survivors = len(sampler.candidates(logits, prompt)[0])
            print(f"{kind:6s} {name:30s} {median_ms(sampler, logits, prompt):8.1f} ms per step"
                  f"   ({survivors:,} tokens survive)")


if __name__ == "__main__":
    main()
