"""PyTorch on the same model and the same work as `microqwen bench`, for a side-by-side.

    $REFPYTHON scripts/bench_torch.py --model models/random-qwen2.5-0.5b --threads 2

Runs transformers' Qwen2ForCausalLM (eager attention) in float32 and in bfloat16 with
torch.set_num_threads(THREADS): the same 32-token prompt as `microqwen bench` (ids (i * 7919 + 13) % vocab),
then 32 greedy tokens with the KV cache, one forward call per token (as microqwen does). Prints load
time, prefill and decode tokens/s, medians over REPEATS runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import transformers
from transformers import Qwen2ForCausalLM

PROMPT_TOKENS, DECODE_TOKENS, REPEATS = 32, 32, 3


def run(model: Qwen2ForCausalLM, vocab: int) -> tuple[float, float]:
    """(prefill seconds, decode seconds) for one prompt and DECODE_TOKENS greedy steps."""
    ids = torch.tensor([[(i * 7919 + 13) % vocab for i in range(PROMPT_TOKENS)]])
    with torch.no_grad():
        start = time.perf_counter()
        out = model(ids, use_cache=True)
        prefill = time.perf_counter() - start
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(DECODE_TOKENS):
            out = model(token, past_key_values=cache, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        decode = time.perf_counter() - start
    return prefill, decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="save the figures to FILE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"torch": torch.__version__, "transformers": transformers.__version__,
               "python": platform.python_version(), "threads": args.threads}  # fmt: skip
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        start = time.perf_counter()
        model = Qwen2ForCausalLM.from_pretrained(args.model, dtype=dtype, attn_implementation="eager").eval()
        load = time.perf_counter() - start
        run(model, model.config.vocab_size)  # warm-up
        runs = [run(model, model.config.vocab_size) for _ in range(REPEATS)]
        results[name] = {
            "load_seconds": load,
            "prefill_tokens_per_second": PROMPT_TOKENS / statistics.median(r[0] for r in runs),
            "decode_tokens_per_second": DECODE_TOKENS / statistics.median(r[1] for r in runs),
        }
        print(f"PyTorch {torch.__version__} {name}, {args.threads} threads: load {load:.1f} s, "
              f"prefill {results[name]['prefill_tokens_per_second']:.1f} tokens/s, "
              f"decode {results[name]['decode_tokens_per_second']:.2f} tokens/s")  # fmt: skip
        del model
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
