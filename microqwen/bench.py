"""`microqwen bench`: how fast is pure Python at running an LLM, and where does the time go?

One run measures, on the model and worker count you give it:

- the bare kernel rate: multiply-adds per second of one process's matrix kernel on its share of
  the output head (`lm_head`, 151,936 x 896: far larger than the CPU caches, as the 1 GB of weights
  of a whole step is), timed in every computing process at once (the main process and the workers,
  so all cores are as busy as in a real step);
- load time; prefill of a 32-token prompt (tokens/s); greedy decode of 32 tokens (tokens/s);
- decode with 1,000 positions in the KV cache against decode with 16 (attention grows with the
  context; the cache is filled with made-up keys and values, which cost attention the same as real
  ones, instead of prefilling 1,000 tokens);
- the first answer of a chat: the prompt evaluation of a 35-token chat prompt from an empty prompt
  cache, and again when the prompt cache holds the 24 tokens every chat shares (the system prompt);
- the efficiency ratio: the multiply-adds per second of a whole decode step (its median time)
  divided by (bare kernel rate x computing processes). 1.0 would mean the engine adds no cost to the kernel:
  no time in the main process's norms, RoPE and attention, no waiting on pipes, no imbalance;
- the peak resident memory of all processes together.

A decode step's multiply-adds are counted from the weight matrices (494 million for
Qwen2.5-0.5B); attention over the cache adds a few thousand per position and is left out.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

from .kernels import best_kernel
from .shards import LocalEngine
from .generation import generate
from .model import Qwen2ForCausalLM, check_context, load
from .promptcache import PromptCache
from .workers import WorkerPool, kernel_rate


CHAT_PROMPT, CHAT_SHARED = 35, 24
"""A chat's first prompt ("Hi! Who are you?" after the default system prompt), and the tokens every chat shares."""


def measure(path: str, workers: int, kernel: str | None, prompt_tokens: int = 32, decode_tokens: int = 32,
            long_context: int = 1000, kernel_seconds: float = 2.0,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run the benchmark on the model at `path`; return every figure in a dict."""
    say = progress or (lambda message: None)
    start = time.perf_counter()
    with load(path, workers=workers, kernel=kernel, prompt_cache=False) as model:
        load_seconds = time.perf_counter() - start
        check_context(0, prompt_tokens + decode_tokens, model.max_context)  # the prompt, then the decoded tokens
        long_context = max(16, min(long_context, model.max_context - 17))  # a small model's context may be short
        say(f"loaded in {load_seconds:.1f} s; timing the kernel")
        rates = _kernel_rates(model, kernel_seconds)
        say(f"prefill of {prompt_tokens} tokens")
        start = time.perf_counter()
        logits = model.prefill(_ids(prompt_tokens, model.config.vocab_size))
        prefill_seconds = time.perf_counter() - start
        say(f"decode of {decode_tokens} tokens")
        step_seconds = _decode(model, logits, decode_tokens)
        say(f"decode at 16 and at {long_context} positions of context")
        short, long = (statistics.median(_decode_at(model, context, 16)) for context in (16, long_context))
        say(f"a chat's first prompt ({CHAT_PROMPT} tokens), without and with the prompt cache")
        cold, warm = _chat_prompt(model)
        memory = _peak_memory(model)
    macs_per_token = sum(job.multiply_adds for job in model.engine.jobs)
    decode_rate = decode_tokens / sum(step_seconds)
    kernel_mean = statistics.mean(rates)
    return {
        "interpreter": f"{platform.python_implementation()} {platform.python_version()}",
        "cpus": os.cpu_count(),
        "model": path,
        "workers": workers,
        "kernel": kernel or best_kernel(),
        "kernel_rate_per_process": kernel_mean,
        "kernel_rates": rates,
        "load_seconds": load_seconds,
        "prefill_tokens": prompt_tokens,
        "prefill_tokens_per_second": prompt_tokens / prefill_seconds,
        "decode_tokens": decode_tokens,
        "decode_tokens_per_second": decode_rate,
        "decode_median_ms_per_token": 1000 * statistics.median(step_seconds),
        "multiply_adds_per_token": macs_per_token,
        "compute_processes": len(rates),
        "efficiency": macs_per_token / statistics.median(step_seconds) / (kernel_mean * len(rates)),
        "decode_ms_at_16": 1000 * short,
        "long_context": long_context,
        "decode_ms_at_long_context": 1000 * long,
        "long_over_short_speed": short / long,
        "chat_prompt_tokens": CHAT_PROMPT,
        "chat_prompt_seconds_cold": cold,
        "chat_prompt_seconds_cached": warm,
        "peak_memory_bytes": memory,
    }


def _ids(count: int, vocab: int, first: int = 0) -> list[int]:
    """Made-up prompt ids (the work does not depend on which ids they are)."""
    return [((first + i) * 7919 + 13) % vocab for i in range(count)]


def _decode(model: Qwen2ForCausalLM, logits: list[float], count: int) -> list[float]:
    """The seconds of `count` greedy decode steps."""
    seconds = []
    for _ in range(count):
        token = max(range(len(logits)), key=logits.__getitem__)
        start = time.perf_counter()
        logits = model.forward(token, model.pos)
        seconds.append(time.perf_counter() - start)
    return seconds


def _decode_at(model: Qwen2ForCausalLM, context: int, count: int) -> list[float]:
    """Decode steps with `context` positions already in the cache (made-up keys and values)."""
    model.reset()
    rng = random.Random(0)
    width = 2 * model.config.kv_size
    model.cache.extend([[[rng.gauss(0.0, 1.0) for _ in range(width)] for _ in model.layers] for _ in range(context)])
    return _decode(model, model.forward(13, context), count)


def _chat_prompt(model: Qwen2ForCausalLM) -> tuple[float, float]:
    """Seconds to evaluate a chat's first prompt from an empty prompt cache, and with its shared part saved."""
    vocab = model.config.vocab_size
    with tempfile.TemporaryDirectory() as directory:
        model.prompt_cache = PromptCache(model, directory)
        times = []
        for question in (1, 2):  # two different questions after the same system prompt
            model.reset()
            ids = _ids(CHAT_SHARED, vocab) + _ids(CHAT_PROMPT - CHAT_SHARED, vocab, first=1000 * question)
            start = time.perf_counter()
            list(generate(model, ids, 0))  # only the prompt: what a chat does before its first word
            times.append(time.perf_counter() - start)
        model.prompt_cache = None
    return times[0], times[1]


def _kernel_rates(model: Qwen2ForCausalLM, seconds: float) -> list[float]:
    """The kernel's rate on its share of the output head, in every computing process at once."""
    head = model.lm_head.job
    if isinstance(model.engine, WorkerPool):
        return model.engine.kernel_rates(head, seconds)
    assert isinstance(model.engine, LocalEngine)
    return [kernel_rate(model.engine.local.matrices[model.engine.index[head.name]], seconds)]


def _peak_memory(model: Qwen2ForCausalLM) -> int:
    """Sum of the peak resident set size (VmHWM) of this process and its workers, in bytes."""
    pids = [os.getpid()]
    if isinstance(model.engine, WorkerPool):
        pids += [worker.pid for worker in model.engine.workers]
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                total += next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
        except (OSError, StopIteration):  # not Linux: this process's own peak only
            import resource

            scale = 1 if sys.platform == "darwin" else 1024
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return total


def report(figures: dict[str, Any]) -> str:
    """The figures as a few readable lines."""
    f = figures
    return "\n".join([
        f"{f['interpreter']}, {f['cpus']} CPUs, {f['workers']} workers, kernel {f['kernel']}, model {f['model']}",
        f"kernel      {f['kernel_rate_per_process'] / 1e6:8.1f} M multiply-adds/s per process "
        f"({', '.join(f'{r / 1e6:.1f}' for r in f['kernel_rates'])})",
        f"load        {f['load_seconds']:8.1f} s",
        f"prefill     {f['prefill_tokens_per_second']:8.2f} tokens/s ({f['prefill_tokens']} tokens)",
        f"decode      {f['decode_tokens_per_second']:8.2f} tokens/s ({f['decode_tokens']} tokens, "
        f"median {f['decode_median_ms_per_token']:.0f} ms/token, "
        f"{f['multiply_adds_per_token'] / 1e6:.0f} M multiply-adds/token)",
        f"efficiency  {f['efficiency']:8.2f} (decode multiply-adds/s / (kernel rate x {f['compute_processes']} "
        "computing processes))",
        f"context     {f['decode_ms_at_16']:8.0f} ms/token at 16 positions, {f['decode_ms_at_long_context']:.0f} at "
        f"{f['long_context']}: {f['long_over_short_speed']:.2f} of the speed",
        f"chat        {f['chat_prompt_seconds_cold']:8.2f} s for a {f['chat_prompt_tokens']}-token first prompt, "
        f"{f['chat_prompt_seconds_cached']:.2f} s with the prompt cache",
        f"memory      {f['peak_memory_bytes'] / 2**30:8.2f} GiB peak resident, all processes",
    ])  # fmt: skip
