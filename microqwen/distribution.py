"""What a vector of logits says about the next token: log-probabilities, entropy, KL divergence, rank.

The logits l [151936] define the next-token distribution p = softmax(l) (`microqwen.model.softmax`).
The logit lens, the lab's experiments and perplexity all measure that distribution the same way:

    log p_i  = l_i - logsumexp(l),     logsumexp(l) = max l + log sum_j e^(l_j - max l)
    H(p)     = -sum_i p_i log p_i                      entropy, in nats (0: certain; log 151936 = 11.9: uniform)
    KL(p||q) = sum_i p_i (log p_i - log q_i)           how far q is from p, in nats (0: the same)
    rank_i   = 1 + #{j : l_j > l_i}                    1: the most likely token

Entropy and KL take log-probabilities (`log_softmax` of the logits), which callers usually have
already. A worked example with three tokens (p = 0.665, 0.245, 0.090 for the logits 2, 1, 0):

    >>> log_p = log_softmax([2.0, 1.0, 0.0])
    >>> [round(v, 4) for v in log_p]
    [-0.4076, -1.4076, -2.4076]
    >>> round(entropy(log_p), 4), round(kl_divergence(log_p, log_softmax([0.0, 0.0, 0.0])), 4)
    (0.8324, 0.2662)
    >>> rank([2.0, 1.0, 0.0], 2)
    3
"""

from __future__ import annotations

import math
from typing import Sequence


def logsumexp(logits: Sequence[float]) -> float:
    """log sum_j e^(l_j), computed as max l + log sum_j e^(l_j - max l) so that no e^ overflows."""
    top = max(logits)
    return top + math.log(math.fsum(math.exp(x - top) for x in logits))


def log_softmax(logits: Sequence[float]) -> list[float]:
    """log p_i = l_i - logsumexp(l) for every token: [vocab]."""
    total = logsumexp(logits)
    return [x - total for x in logits]


def log_probability(logits: Sequence[float], token: int) -> float:
    """log p of one token: l_token - logsumexp(l)."""
    return logits[token] - logsumexp(logits)


def entropy(log_p: Sequence[float]) -> float:
    """H(p) = -sum_i p_i log p_i, in nats, from the log-probabilities."""
    return -math.fsum(math.exp(lp) * lp for lp in log_p)


def kl_divergence(log_p: Sequence[float], log_q: Sequence[float]) -> float:
    """KL(p || q) = sum_i p_i (log p_i - log q_i), in nats: how far q (e.g. after a change) is from p.

    Never below 0 (a rounding error could make a tiny negative sum).
    """
    return max(0.0, math.fsum(math.exp(a) * (a - b) for a, b in zip(log_p, log_q)))


def rank(logits: Sequence[float], token: int) -> int:
    """1 + the number of tokens with a larger logit: 1 is the most likely token."""
    own = logits[token]
    return 1 + sum(1 for x in logits if x > own)
