"""The C project's porting bugs, as drop-in replacements for one step of microqwen each.

The tests plant them (monkeypatch) to check that `microqwen trace --compare` names the first broken
operation; scripts/make_trace_tutorial.py plants them to show the same on the real model.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from microqwen.kernels import dot
from microqwen.model import KVCache, RotaryEmbedding, _read_floats, softmax
from microqwen.safetensors import Checkpoint


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


def attention_scores_times_sqrt_d(q: Sequence[float], cache: KVCache, layer: int, n_heads: int) -> Any:
    """Attention with the scores multiplied by sqrt(head_dim), where they must be divided by it."""
    _, kv_heads, head_dim = cache.shape
    n_rep = n_heads // kv_heads
    out: list[float] = []
    weights = []
    for j in range(n_heads):
        g = j // n_rep
        q_j = q[j * head_dim : (j + 1) * head_dim]
        a = softmax([dot(q_j, k) * math.sqrt(head_dim) for k in cache.keys[layer][g]])
        out += [dot(a, column) for column in cache.values_t[layer][g]]
        weights.append(a)
    return out, weights


def embedding_read_8_bytes_late(checkpoint: Checkpoint, name: str, first: int = 0, count: int | None = None) -> list[float]:
    """The embedding row read from 8 + N + begin + 8: the header-length field counted twice.

    8 bytes are 4 bfloat16 values, so every row starts 4 values late. (A drop-in for
    `microqwen.model._read_floats`, which reads the norms too; only the embedding gets the bug.)
    """
    late = 4 if name == "model.embed_tokens.weight" else 0
    return READ_FLOATS(checkpoint, name, first + late, count)


READ_FLOATS = _read_floats
"""The correct function, which the planted bug calls."""
