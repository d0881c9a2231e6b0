"""PyTorch on the same model and the same work as `microqwen bench`, for a side-by-side.

    $REFPYTHON scripts/bench_torch.py --model models/random-qwen2.5-0.5b --threads 2

Runs transformers' Qwen2ForCausalLM (eager attention) in float32 and in bfloat16 with
torch.set_num_threads(THREADS): the same 32-token prompt as `microqwen bench` (ids (i * 7919 + 13) % vocab),
then 32 greedy tokens with the KV cache, one forward call per token (as microqwen does); and 16 decode
steps after a 16-token and after a 1,000-token prompt (attention over a longer cache). Prints load
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

PROMPT_TOKENS, DECODE_TOKENS, REPEATS, LONG_CONTEXT = 32, 32, 3, 1000


def run(model: Qwen2ForCausalLM, vocab: int, prompt_tokens: int = PROMPT_TOKENS,
        decode_tokens: int = DECODE_TOKENS) -> tuple[float, float]:  # fmt: skip
    """(prefill seconds, decode seconds) for one prompt and `decode_tokens` greedy steps."""
    ids = torch.tensor([[(i * 7919 + 13) % vocab for i in range(prompt_tokens)]])
    with torch.no_grad():
        start = time.perf_counter()
        out = model(ids, use_cache=True)
        prefill = time.perf_counter() - start
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(decode_tokens):
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
        short = statistics.median(run(model, model.config.vocab_size, 16, 16)[1] for _ in range(REPEATS))
        long = statistics.median(run(model, model.config.vocab_size, LONG_CONTEXT, 16)[1] for _ in range(REPEATS))
        results[name] = {
            "load_seconds": load,
            "prefill_tokens_per_second": PROMPT_TOKENS / statistics.median(r[0] for r in runs),
            "decode_tokens_per_second": DECODE_TOKENS / statistics.median(r[1] for r in runs),
            "decode_ms_at_16": 1000 * short / 16,
            "decode_ms_at_long_context": 1000 * long / 16,
            "long_context": LONG_CONTEXT,
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
