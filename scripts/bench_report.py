"""Turn the benchmark results in docs/bench/*.json into the tables docs/performance.md includes.

    python scripts/bench_report.py          # run by scripts/bench_all.sh after the measurements

Writes docs/snippets/bench/{ladder,engine,torch}.md, so every number on the performance page is
one that `microqwen bench`, scripts/bench_ladder.py or scripts/bench_torch.py printed.
"""

from __future__ import annotations

import glob
import json
import os
import statistics
from typing import Any, Dict, List

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BENCH = os.path.join(ROOT, "docs", "bench")
OUT = os.path.join(ROOT, "docs", "snippets", "bench")
RUNGS = ["naive", "sum(map)", "sumprod", "unrolled", "interleaved", "prefill"]


def load(pattern: str) -> List[Dict[str, Any]]:
    results = []
    for path in sorted(glob.glob(os.path.join(BENCH, pattern))):
        with open(path) as f:
            results.append(dict(json.load(f), file=os.path.basename(path)))
    return results


def ladder() -> str:
    lines = ["| interpreter | " + " | ".join(RUNGS) + " |", "|---" * (len(RUNGS) + 1) + "|"]
    for result in load("ladder-*.json"):
        rates = result["multiply_adds_per_second"]
        cells = [f"{rates[r] / 1e6:,.0f}" if r in rates else "" for r in RUNGS]
        lines.append(f"| {result['interpreter']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def engine() -> str:
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for result in load("bench-*.json"):
        groups.setdefault((result["interpreter"], result["workers"]), []).append(result)
    lines = [
        "| interpreter | processes | runs | kernel M/s per process | load s | prefill tokens/s | decode tokens/s "
        "| decode ms/token (median) | efficiency | decode at 1,000 / at 16 | chat's first prompt s (cached) "
        "| peak memory GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (interpreter, workers), runs in sorted(groups.items()):
        def median(key: str) -> float:
            return statistics.median(run[key] for run in runs)

        lines.append(
            f"| {interpreter} | {workers + 1} | {len(runs)} | {median('kernel_rate_per_process') / 1e6:,.0f} "
            f"| {median('load_seconds'):.1f} | {median('prefill_tokens_per_second'):.2f} "
            f"| {median('decode_tokens_per_second'):.2f} | {median('decode_median_ms_per_token'):,.0f} "
            f"| {median('efficiency'):.2f} | {median('long_over_short_speed'):.2f} "
            f"| {median('chat_prompt_seconds_cold'):.1f} ({median('chat_prompt_seconds_cached'):.1f}) "
            f"| {median('peak_memory_bytes') / 2**30:.2f} |"
        )
    return "\n".join(lines) + "\n"


def torch() -> str:
    results = load("torch-*.json")
    if not results:
        return "(not measured)\n"
    r = results[0]
    pypy = [run for run in load("bench-*.json") if run["interpreter"].startswith("PyPy") and run["workers"] == 1]
    ours = statistics.median(run["decode_tokens_per_second"] for run in pypy) if pypy else float("nan")
    ours_prefill = statistics.median(run["prefill_tokens_per_second"] for run in pypy) if pypy else float("nan")
    lines = [
        f"| engine ({r['threads']} threads / processes) | prefill tokens/s | decode tokens/s "
        "| decode at 1,000 / at 16 | microqwen PyPy prefill as a fraction | microqwen PyPy decode as a fraction |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for dtype in ("float32", "bfloat16"):
        f = r[dtype]
        lines.append(f"| PyTorch {r['torch']}, transformers {r['transformers']}, {dtype} "
                     f"| {f['prefill_tokens_per_second']:.1f} | {f['decode_tokens_per_second']:.2f} "
                     f"| {f['decode_ms_at_16'] / f['decode_ms_at_long_context']:.2f} "
                     f"| {ours_prefill / f['prefill_tokens_per_second']:.2f} "
                     f"| {ours / f['decode_tokens_per_second']:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def lookup() -> str:
    results = load("lookup-*.json")
    if not results:
        return "(not measured: set MICROQWEN_REAL_MODEL for scripts/bench_all.sh)\n"
    lines = ["| interpreter | processes | tokens | plain greedy tokens/s | with --lookup | speed-up | drafted | accepted |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in results:
        lines.append(f"| {r['interpreter']} | {r['workers'] + 1} | {r['tokens']} | {r['decode_tokens_per_second']:.2f} "
                     f"| {r['lookup_tokens_per_second']:.2f} (--lookup {r['lookup']}) | {r['speedup']:.2f}x "
                     f"| {r['drafted']} | {r['accepted']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for name, table in (("ladder", ladder()), ("engine", engine()), ("torch", torch()), ("lookup", lookup())):
        with open(os.path.join(OUT, f"{name}.md"), "w") as f:
            f.write(table)
        print(table)


if __name__ == "__main__":
    main()
