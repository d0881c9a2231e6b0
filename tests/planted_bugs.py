"""The C project's porting bugs, as drop-in replacements for one step of microqwen each.

The tests plant them (monkeypatch) to check that `microqwen trace --compare` names the first broken
operation; scripts/make_trace_tutorial.py plants them to show the same on the real model.
"""

from __future__ import annotations

import math
from typing import Sequence

from microqwen.kernels import dots
from microqwen.model import RotaryEmbedding, softmax
from microqwen.weights import Weights


def interleaved_rope(self: RotaryEmbedding, x: Sequence[float], pos: int, n_heads: int) -> list[float]:
    """RoPE on the pairs (2i, 2i + 1) of the original paper (and llama2.c); Qwen pairs i with i + half."""
    cos, sin = self.tables(pos)
    head_dim = 2 * self.half
    out: list[float] = []
    for h in range(n_heads):
        head = x[h * head_dim : (h + 1) * head_dim]
        for i in range(self.half):
            a, b = head[2 * i], head[2 * i + 1]
            out += [a * cos[i] - b * sin[i], b * cos[i] + a * sin[i]]
    return out


def attention_scores_times_sqrt_d(q: Sequence[float], keys: Sequence[Sequence[Sequence[float]]], n_heads: int,
                                  visible: int) -> list[float]:  # fmt: skip
    """`microqwen.model.attention_weights` with the scores multiplied by sqrt(head_dim), where they must be divided."""
    head_dim = len(q) // n_heads
    n_rep = n_heads // len(keys)
    weights: list[float] = []
    for j in range(n_heads):
        scores = dots(q[j * head_dim : (j + 1) * head_dim], keys[j // n_rep][:visible])
        weights += softmax([s * math.sqrt(head_dim) for s in scores])
    return weights


def embedding_read_8_bytes_late(self: Weights, name: str, first: int = 0, count: int | None = None) -> list[float]:
    """An embedding row read from 8 + N + begin + 8: the header-length field counted twice.

    8 bytes are 4 bfloat16 values, so every row starts 4 values late. (A drop-in for
    `microqwen.weights.Weights.floats`, which reads the norms too; only the embedding gets the bug.)
    """
    late = 4 if name == "model.embed_tokens.weight" else 0
    return READ_FLOATS(self, name, first + late, count)


READ_FLOATS = Weights.floats
"""The correct method, which the planted bug calls."""
