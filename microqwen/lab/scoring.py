"""Perplexity: how well the model predicts a text, token by token, as llama.cpp's `llama-perplexity` measures it.

The text's tokens are cut into chunks of `ctx` tokens (the rest is dropped). Each chunk runs from an
empty cache, and only the tokens of its second half are scored, so that every scored token has at
least ctx/2 tokens of context:

    nll_t = -log p(token_t | the chunk's tokens before t)          t = ctx/2 + 1 .. ctx - 1 in each chunk
    PPL   = exp(mean nll)       +/- PPL * sqrt((mean nll^2 - (mean nll)^2) / (n - 1))   (the standard error)

llama.cpp prints the running PPL after each chunk, `[1]5.6421,[2]6.1234,...`, then
`Final estimate: PPL = 6.1234 +/- 0.05678`; `perplexity` reports the same figures, and every scored
token's log-probability. (Qwen2.5 adds no BOS token, so neither llama.cpp nor microqwen puts one at
the start of a chunk.) A perplexity of 1 is certainty; a uniform guess over 151,936 tokens is 151,936.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from ..distribution import log_probability
from ..errors import UsageError
from ..model import Hook, Qwen2ForCausalLM
from .runs import Runs, token_text


@dataclass
class TokenScore:
    """One scored token: its position in the text, its id and text, log p of it given what came before."""

    pos: int
    id: int
    text: Optional[str]
    logprob: float


@dataclass
class Perplexity:
    """A perplexity run.

    Attributes:
        ctx, chunks: the chunk size and the number of chunks scored.
        tokens: how many tokens the text has.
        running: the perplexity after each chunk (llama.cpp's `[1]..,[2]..` line).
        ppl, stderr: the final estimate, and its standard error.
        scores: every scored token.
    """

    ctx: int
    chunks: int
    tokens: int
    running: List[float]
    ppl: float
    stderr: float
    scores: List[TokenScore]


def chunk_count(tokens: int, ctx: int, chunks: int | None = None) -> int:
    """How many whole chunks of `ctx` tokens the text gives (at most `chunks`); an error if none."""
    if ctx < 4:
        raise UsageError(f"the chunk size (-c) must be 4 tokens or more, got {ctx}")
    if chunks is not None and chunks < 1:
        raise UsageError(f"--chunks must be 1 or more, got {chunks}")
    whole = tokens // ctx
    if whole == 0:
        raise UsageError(f"the text has {tokens} tokens, fewer than one chunk of {ctx} (-c): give a longer text "
                         "or a smaller -c")  # fmt: skip
    return whole if chunks is None else min(whole, chunks)


def perplexity(model: Qwen2ForCausalLM, ids: Sequence[int], ctx: int = 512, chunks: int | None = None,
               hook: Hook | None = None,
               progress: Callable[[int, int, float], None] | None = None) -> Perplexity:  # fmt: skip
    """Score `ids` in chunks of `ctx` tokens (see the module docstring).

    `progress(done, total, seconds)` is called after each chunk, with the seconds it took.
    """
    total = chunk_count(len(ids), ctx, chunks)
    first = ctx // 2
    scores: list[TokenScore] = []
    running: list[float] = []
    for chunk in range(total):
        start = chunk * ctx
        window = list(ids[start : start + ctx])
        began = time.perf_counter()
        logits = Runs(model, window).run(hook, at=range(first, ctx - 1)).logits
        for t in range(first, ctx - 1):
            token = window[t + 1]
            scores.append(TokenScore(start + t + 1, token, token_text(model, token), log_probability(logits[t], token)))
        running.append(math.exp(-math.fsum(s.logprob for s in scores) / len(scores)))
        if progress:
            progress(chunk + 1, total, time.perf_counter() - began)
    nll = [-s.logprob for s in scores]
    mean = math.fsum(nll) / len(nll)
    variance = math.fsum(x * x for x in nll) / len(nll) - mean * mean
    ppl = math.exp(mean)
    stderr = ppl * math.sqrt(variance / (len(nll) - 1)) if variance > 0 and len(nll) > 1 else 0.0
    return Perplexity(ctx, total, len(ids), running, ppl, stderr, scores)


def format_running(result: Perplexity) -> str:
    """llama.cpp's running line, `[1]5.6421,[2]6.1234,`."""
    return "".join(f"[{i}]{value:.4f}," for i, value in enumerate(result.running, 1))


def format_final(result: Perplexity) -> str:
    """`Final estimate: PPL = 6.1234 +/- 0.05678`, as llama.cpp prints it."""
    return f"Final estimate: PPL = {result.ppl:.4f} +/- {result.stderr:.5f}"
