"""Planted bugs: the mistakes ports of this model make, switched on by name (`--mutate NAME`).

Each mutation breaks one step the way a real port broke it: the C project microqwen grew out of had
several of these, and the others are common in ports of Llama-style models. Tracing a mutated model
with `microqwen trace --mutate NAME --compare` against the unmutated one shows the bug's fingerprint:
the first point that differs is where the bug is, and the differences after it show how it spreads.

| name                  | the bug                                                      | first point that differs            |
|-----------------------|--------------------------------------------------------------|-------------------------------------|
| `rope-theta-1e4`      | RoPE's base 10,000 (Llama 2's) instead of the config's 1e6    | rope_q, rope_k of layer 0, from position 1 |
| `interleaved-rope`    | RoPE turns the pairs (2i, 2i+1), not (i, i + 32)              | rope_q, rope_k of layer 0, from position 1 |
| `scores-times-sqrt-d` | attention scores multiplied by sqrt(64), not divided          | attn_weights of layer 0, from position 1   |
| `no-causal-mask`      | prefill lets a token see the later tokens of its block        | attn_weights of layer 0 (prefill only)     |
| `rmsnorm-no-eps`      | RMSNorm without its epsilon: x / sqrt(mean(x^2))              | input_layernorm of layer 0 (a little)      |
| `offset-8`            | every tensor read 8 bytes after its start in the file        | embed_tokens                               |
| `bf16-truncate`       | every value stored as bfloat16, truncated instead of rounded | input_layernorm of layer 0                 |
| `bf16-accumulate`     | the matrix products' running sums rounded to bfloat16        | q_proj of layer 0                          |

How each is planted, in the order the model meets them:

- in the reads of the file (`engine_parts`, which the worker processes apply too): `offset-8` reads
  every tensor through `EightBytesLate`, a checkpoint whose reads start 8 bytes late (4 bfloat16
  values: the header-length field counted twice); `bf16-accumulate` gives the matrices to
  `Bf16AccumulatingMatrix`, the naive kernel with its running sum rounded after every addition;
- in the model (`plant`): the RoPE ones replace `model.rope`, `rmsnorm-no-eps` sets every norm's
  eps to 0, `no-causal-mask` sets `model.causal = False`;
- as the model's own hook (`model.planted`, run at every point before any other hook):
  `scores-times-sqrt-d` and `bf16-truncate` change the values at a point. The first uses
  softmax(s sqrt(d)) = softmax(d (s / sqrt(d))) = p^d / sum p^d, where p = softmax(s / sqrt(d)) is what
  attention computed: the bug's exact result, from the weights the point shows.

`microqwen.load(..., mutation=NAME)` plants one. With no mutation nothing here runs.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Dict, Optional, Type

from .. import bf16
from ..bf16 import TABLE
from ..errors import UsageError
from ..kernels import Bf16Matrix, Kernel, NaiveMatrix, Vector
from ..model import Hook, Qwen2ForCausalLM, RotaryEmbedding
from ..safetensors import Checkpoint
from ..weights import SafetensorsWeights, Weights


@dataclass(frozen=True)
class Mutation:
    """One planted bug.

    Attributes:
        name: its `--mutate` name.
        bug: what goes wrong, in one line.
        first_point: the first trace point it changes, in layer 0 (`embed_tokens` or `layers.0.<point>`).
        first_position: the first position where that point changes (in a token-by-token trace).
        prefill_only: the bug is in prefill, so a token-by-token trace does not see it (`trace --prefill` does).
        plant: what it changes in the model, if anything.
        weights: how it wraps the weights' reads, if it does.
        kernel: the matrix class it computes the products with, if it does.
    """

    name: str
    bug: str
    first_point: str
    first_position: int = 0
    prefill_only: bool = False
    plant: Optional[Callable[[Qwen2ForCausalLM], None]] = None
    weights: Optional[Callable[[Weights], Weights]] = None
    kernel: Optional[Type[Bf16Matrix]] = None


# ------------------------------------------------------------------ in the model


class InterleavedRotaryEmbedding(RotaryEmbedding):
    """RoPE on the pairs (2i, 2i + 1) of the original paper (and llama2.c); Qwen pairs i with i + 32."""

    def rotate(self, x: Vector, pos: int, n_heads: int) -> list[float]:
        """Each head's pair (2i, 2i + 1) turned by the angle pos * inv_freq_i."""
        cos, sin = self.tables(pos)
        head_dim = 2 * self.half
        out: list[float] = []
        for h in range(n_heads):
            head = x[h * head_dim : (h + 1) * head_dim]
            for i in range(self.half):
                a, b = head[2 * i], head[2 * i + 1]
                out += [a * cos[i] - b * sin[i], b * cos[i] + a * sin[i]]
        return out


def _rope_theta_1e4(model: Qwen2ForCausalLM) -> None:
    model.rope = RotaryEmbedding(model.config.head_dim, 1e4)


def _interleaved_rope(model: Qwen2ForCausalLM) -> None:
    model.rope = InterleavedRotaryEmbedding(model.config.head_dim, model.config.rope_theta)


def _no_causal_mask(model: Qwen2ForCausalLM) -> None:
    model.causal = False


def _rmsnorm_no_eps(model: Qwen2ForCausalLM) -> None:
    for layer in model.layers:
        layer.input_layernorm.eps = layer.post_attention_layernorm.eps = 0.0
    model.norm.eps = 0.0


def scores_times_sqrt_d(head_dim: int) -> Hook:
    """The hook of `scores-times-sqrt-d`: each head's weights p become p^d / sum p^d = softmax(s * sqrt(d)).

    (p / max p)^d is computed rather than p^d, so that no weight that matters underflows.
    """

    def hook(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> list[float] | None:
        if not name.endswith(".self_attn.attn_weights"):
            return None
        heads, visible = shape
        out: list[float] = []
        for h in range(heads):
            row = values[h * visible : (h + 1) * visible]
            top = max(row)
            powered = [(p / top) ** head_dim for p in row]
            total = math.fsum(powered)
            out += [p / total for p in powered]
        return out

    return hook


def _scores_times_sqrt_d(model: Qwen2ForCausalLM) -> None:
    model.planted = scores_times_sqrt_d(model.config.head_dim)


def truncating_hook(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> list[float]:
    """The hook of `bf16-truncate`: every value stored as bfloat16 by dropping its low 16 bits."""
    return bf16.narrow(values, truncate=True)


def _bf16_truncate(model: Qwen2ForCausalLM) -> None:
    model.planted = truncating_hook


# ------------------------------------------------------------------ in the reads and the kernel


class EightBytesLate(Checkpoint):
    """A checkpoint whose every read starts 8 bytes after the tensor: file offset 8 + N + begin + 8.

    The 8 is the header-length field, counted twice. 8 bytes are 4 bfloat16 values, so every tensor
    is read 4 values late: its last 4 values come from the next tensor in the file (zeros past the
    end of the file, as a mapping of the file would give).
    """

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__(checkpoint.files)
        self.handles: Dict[str, BinaryIO] = {}

    def read_into(self, name: str, out: array[Any], first: int, count: int) -> None:
        """Append `count` elements of tensor `name` from element `first` on, read 8 bytes late."""
        info = self.tensors[name]
        if not 0 <= first <= first + count <= info.numel:
            raise ValueError(f"cannot read elements {first}..{first + count} of {name} {list(info.shape)}")
        if info.path not in self.handles:
            self.handles[info.path] = open(info.path, "rb")
        handle = self.handles[info.path]
        handle.seek(info.begin + 8 + first * out.itemsize)
        size = count * out.itemsize
        out.frombytes(handle.read(size).ljust(size, b"\0"))

    def close(self) -> None:
        """Close our own handles, then the files."""
        for handle in self.handles.values():
            handle.close()
        super().close()


def _eight_bytes_late(weights: Weights) -> Weights:
    if not isinstance(weights, SafetensorsWeights):
        raise UsageError("the mutation eight-bytes-late misreads a safetensors file; this model is a .gguf file")
    return SafetensorsWeights(EightBytesLate(weights.checkpoint))


def round_to_bf16(x: float) -> float:
    """x rounded to the nearest bfloat16 (8 significant bits, ties to even), fast enough for every addition.

    x = m 2^e with 0.5 <= |m| < 1 (`math.frexp`); m 256 is exact, and `round` keeps 8 bits, ties to even.
    Below 2^-126 bfloat16 has a fixed step of 2^-133 (its subnormals), and from 2^128 on it is infinite.
    (It rounds float64 to bfloat16 directly; `bf16.narrow` goes through float32 first, which agrees on
    every float32 value.)
    """
    if not math.isfinite(x):
        return x
    if abs(x) < SMALLEST_NORMAL:
        return round(x * 2.0**133) / 2.0**133
    mantissa, exponent = math.frexp(x)
    rounded = math.ldexp(round(mantissa * 256.0) / 256.0, exponent)
    return rounded if abs(rounded) < 2.0**128 else math.copysign(math.inf, x)


SMALLEST_NORMAL = 2.0**-126
"""The smallest normal bfloat16 (and float32)."""


class Bf16AccumulatingMatrix(NaiveMatrix):
    """The naive kernel with a bfloat16 accumulator: after every addition the sum is rounded to bfloat16.

    y[r] = bf16(... bf16(bf16(W[r,0] x[0]) + W[r,1] x[1]) ...): once the sum is large, 8 bits of it
    cannot hold the small terms still to come, and they are lost.
    """

    kernel = "bf16-accumulate"

    def matvec(self, x: Vector) -> list[float]:
        """y[r] = sum_j W[r, j] x[j], the running sum rounded to bfloat16 after each term."""
        w, cols = self.bits, self.cols
        y = []
        for r in range(self.rows):
            base = r * cols
            total = 0.0
            for j in range(cols):
                total = round_to_bf16(total + TABLE[w[base + j]] * x[j])
            y.append(total)
        return y


# ------------------------------------------------------------------ the list


MUTATIONS: Dict[str, Mutation] = {m.name: m for m in (
    Mutation("rope-theta-1e4", "RoPE's base theta is 10,000 (Llama 2's) instead of the config's rope_theta",
             "layers.0.self_attn.rope_q", 1, plant=_rope_theta_1e4),
    Mutation("interleaved-rope", "RoPE turns the neighbour pairs (2i, 2i + 1) instead of (i, i + head_dim / 2)",
             "layers.0.self_attn.rope_q", 1, plant=_interleaved_rope),
    Mutation("scores-times-sqrt-d", "the attention scores are multiplied by sqrt(head_dim) instead of divided",
             "layers.0.self_attn.attn_weights", 1, plant=_scores_times_sqrt_d),
    Mutation("no-causal-mask", "prefill lets each token attend to the later tokens of its block",
             "layers.0.self_attn.attn_weights", 0, prefill_only=True, plant=_no_causal_mask),
    Mutation("rmsnorm-no-eps", "RMSNorm leaves out its epsilon: x / sqrt(mean(x^2))",
             "layers.0.input_layernorm", 0, plant=_rmsnorm_no_eps),
    Mutation("offset-8", "every tensor is read 8 bytes after its start in the safetensors file",
             "embed_tokens", 0, weights=_eight_bytes_late),
    Mutation("bf16-truncate", "every value is stored as bfloat16 by truncating its float32 bits, not rounding",
             "layers.0.input_layernorm", 0, plant=_bf16_truncate),
    Mutation("bf16-accumulate", "the matrix products round their running sum to bfloat16 after every addition",
             "layers.0.self_attn.q_proj", 0, kernel=Bf16AccumulatingMatrix),
)}  # fmt: skip
"""Every planted bug, by name."""


def find(name: str) -> Mutation:
    """The mutation called `name`; a `UsageError` listing the names if there is none."""
    if name not in MUTATIONS:
        raise UsageError(f"unknown mutation {name!r}: the mutations are {', '.join(MUTATIONS)}")
    return MUTATIONS[name]


def engine_parts(name: str, weights: Weights, kernel: Kernel) -> tuple[Weights, Kernel]:
    """The weights and the kernel a mutated model computes with (the worker processes call this too)."""
    mutation = find(name)
    if mutation.weights is not None:
        weights = mutation.weights(weights)
    return weights, mutation.kernel or kernel


def plant(name: str, model: Qwen2ForCausalLM) -> None:
    """Plant mutation `name` in a loaded model (after `engine_parts` gave it its weights and kernel)."""
    mutation = find(name)
    model.mutation = name
    model.in_blocks = False  # the workers' attention and MLP halves know nothing of the bug: the plain path
    if mutation.plant is not None:
        mutation.plant(model)

