"""Induction heads: the heads that continue a repeated sequence by looking up what followed last time.

On a sequence of random tokens repeated twice, A B C ... A B C ..., a model can predict the second
half only by copying: at the second A, look for the earlier A, and read the token after it (B). A head
that does that (Olsson et al. 2022, "In-context learning and induction heads") puts its attention,
at position t of the second half, on position t - n + 1 (n the length of the sequence): the token
after the earlier occurrence of the current one. Its induction score is that weight, averaged:

    score(layer, head) = mean over t = n .. 2n - 1 of  a_(layer, head)(t -> t - n + 1)

The loss on the second half (mean -log p of each token) is far below the first half's (which is
random, so about log 151936 = 11.9 nats minus what the model knows of token statistics), and
ablating the top induction heads (`microqwen.lab.ablation`, `score_from=n`) brings it back up.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import List, Optional, Sequence

from ..distribution import log_probability
from ..errors import UsageError
from ..model import Qwen2ForCausalLM
from .components import head_name
from .runs import Runs


def repeated_sequence(vocab: int, length: int, seed: int = 0, low: int = 0) -> list[int]:
    """`length` random token ids in low..vocab-1 (no repeats within), then the same ids again."""
    if not 2 <= length <= vocab - low:
        raise UsageError(f"the random sequence must have 2..{vocab - low} tokens, got {length}")
    first = random.Random(seed).sample(range(low, vocab), length)
    return first + first


@dataclass
class HeadScore:
    """One head's induction score: its mean attention from the second half to the token after the earlier copy."""

    component: str
    layer: int
    head: int
    score: float


@dataclass
class Induction:
    """The induction scores of a repeated sequence.

    Attributes:
        ids: the sequence (n tokens, then the same n again).
        period: n.
        scores: `[layer][head]` induction scores, the heatmap.
        ranked: every head, the highest score first.
        loss_first, loss_repeat: mean -log p of the tokens of the first half (from position 1) and of the second.
    """

    ids: List[int]
    period: int
    scores: List[List[float]]
    ranked: List[HeadScore]
    loss_first: float
    loss_repeat: float


def induction_scores(model: Qwen2ForCausalLM, ids: Sequence[int], period: Optional[int] = None) -> Induction:
    """Score every head on `ids`, a sequence repeated once (`period`: its length, default half of ids)."""
    n = period or len(ids) // 2
    if n < 2 or len(ids) < 2 * n or list(ids[n : 2 * n]) != list(ids[:n]):
        raise UsageError(f"the ids must be a sequence of {n} tokens (2 or more) followed by the same tokens again")
    config = model.config
    points = [f"layers.{i}.self_attn.attn_weights" for i in range(config.num_hidden_layers)]
    run = Runs(model, ids).run(at=range(len(ids) - 1), keep=points)
    heads = config.num_attention_heads
    scores = [[0.0] * heads for _ in range(config.num_hidden_layers)]
    for i, point in enumerate(points):
        for h in range(heads):
            weights = []
            for t in range(n, 2 * n):
                row = run.points[t][point]  # [heads * (t + 1)]
                weights.append(row[h * (t + 1) + t - n + 1])
            scores[i][h] = math.fsum(weights) / len(weights)
    ranked = sorted((HeadScore(head_name(i, h), i, h, scores[i][h]) for i in range(len(scores)) for h in range(heads)),
                    key=lambda s: -s.score)  # fmt: skip
    nll = [-log_probability(run.logits[t], ids[t + 1]) for t in range(len(ids) - 1)]
    return Induction(list(ids), n, scores, ranked, math.fsum(nll[: n - 1]) / (n - 1), math.fsum(nll[n - 1 : 2 * n - 1]) / n)


def format_induction(result: Induction, top: int = 10) -> str:
    """The `top` heads by induction score, the layers x heads table, and the two halves' losses."""
    lines = [f"induction scores on {result.period} random tokens repeated: the mean attention from each token of the "
             "repeat to the token after its earlier copy",
             f"  {'rank':>4}  {'head':<28} {'score':>7}"]  # fmt: skip
    lines += [f"  {n:>4}  {s.component:<28} {s.score:7.4f}" for n, s in enumerate(result.ranked[:top], 1)]
    heads = len(result.scores[0])
    lines += ["  layer " + "".join(f"{h:>6}" for h in range(heads))]
    lines += [f"  {i:>5} " + "".join(f"{v:6.2f}" for v in row) for i, row in enumerate(result.scores)]
    lines.append(f"loss per token: first half {result.loss_first:.4f} nats, repeat {result.loss_repeat:.4f} nats")
    return "\n".join(lines)
