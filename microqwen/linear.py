"""Linear layers, y = W x + b, and the engine that computes the products W x.

Each of Qwen2's linear layers is a `Linear` named after its Hugging Face module
(`layers.3.self_attn.q_proj`): W is stored [out, in], so y[r] = sum_j W[r, j] x[j] + b[r].
The model calls them where the math has them:

    o = attn.o_proj(heads)                                   # [896] -> [896]
    q, k, v = fused(x, attn.q_proj, attn.k_proj, attn.v_proj)  # [896] -> [896], [128], [128]

The second line is one explicit speed step: q_proj, k_proj and v_proj read the same x, so their
weights are stacked into one [1152, 896] matrix and computed in one pass (gate_proj and up_proj
likewise, [9728, 896]); that is the same as three separate products, row for row. Such a stack is
a `Job`, the engine's unit of work:

| job (its weights, stacked)                 | shape (Qwen2.5-0.5B) |
|--------------------------------------------|----------------------|
| `layers.{i}.self_attn.q_proj+k_proj+v_proj` | [896 + 128 + 128, 896] |
| `layers.{i}.self_attn.o_proj`              | [896, 896]           |
| `layers.{i}.mlp.gate_proj+up_proj`         | [4864 + 4864, 896]   |
| `layers.{i}.mlp.down_proj`                 | [896, 4864]          |
| `lm_head` (embed_tokens when tied)         | [151936, 896]        |

An engine runs a job on several token vectors at once (`TOKENS_PER_PASS` in prefill), so each
weight is read from memory once for all of them. `microqwen.shards.LocalEngine` runs every job in
this process; `microqwen.workers.WorkerPool` shares each job out among worker processes
(`microqwen.shards` says how).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from .config import Config
from .kernels import Vector

TOKENS_PER_PASS = 16
"""Token vectors an engine takes in one call: the prompt block of prefill, and the size of the workers' buffers."""


@dataclass(frozen=True)
class Job:
    """Linear layers that read the same input, their weights stacked row-wise: [sum(sizes), cols].

    `layers` are the module paths (`layers.3.self_attn.q_proj`), `tensors` the files' names of their
    weights, `sizes` their output rows.
    """

    layers: tuple[str, ...]
    tensors: tuple[str, ...]
    sizes: tuple[int, ...]
    cols: int

    @property
    def name(self) -> str:
        """`layers.3.self_attn.q_proj+k_proj+v_proj`: the first layer's path, then the others' last names."""
        return "+".join([self.layers[0]] + [layer.rsplit(".", 1)[-1] for layer in self.layers[1:]])

    @property
    def rows(self) -> int:
        return sum(self.sizes)

    @property
    def multiply_adds(self) -> int:
        return self.rows * self.cols


def linear_jobs(config: Config) -> list[Job]:
    """The jobs of one forward pass, in the order it runs them."""
    hidden, inter, q, kv = config.hidden_size, config.intermediate_size, config.q_size, config.kv_size
    jobs = []
    for i in range(config.num_hidden_layers):
        attn, mlp = f"layers.{i}.self_attn", f"layers.{i}.mlp"
        jobs += [
            _job([f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"], [q, kv, kv], hidden),
            _job([f"{attn}.o_proj"], [hidden], q),
            _job([f"{mlp}.gate_proj", f"{mlp}.up_proj"], [inter, inter], hidden),
            _job([f"{mlp}.down_proj"], [hidden], inter),
        ]
    head = "model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"
    jobs.append(Job(("lm_head",), (head,), (config.vocab_size,), hidden))
    return jobs


def _job(layers: list[str], sizes: list[int], cols: int) -> Job:
    """A job of the decoder layers, whose weights are `model.<layer>.weight` in the files."""
    return Job(tuple(layers), tuple(f"model.{layer}.weight" for layer in layers), tuple(sizes), cols)


JOBS_PER_LAYER = 4
"""`linear_jobs` gives each layer's jobs in this order: q/k/v, o_proj, gate/up, down_proj; lm_head is last."""


class Engine(Protocol):
    """Computes jobs: `microqwen.shards.LocalEngine` here, or `microqwen.workers.WorkerPool` in workers."""

    jobs: list[Job]

    def run(self, job: Job, xs: Sequence[Vector]) -> list[list[float]]:
        """[W x for x in xs] for the job's stacked W: [T, cols] -> [T, rows], T <= TOKENS_PER_PASS."""

    def close(self) -> None:
        """Free the weights (and stop any processes)."""


class Linear:
    """One linear layer, y = W x + b: W is rows [first, first + out) of an engine's job, b a vector or None."""

    def __init__(self, name: str, engine: Engine, job: Job, first: int, out: int, bias: list[float] | None) -> None:
        self.name = name
        self.engine, self.job = engine, job
        self.first, self.out = first, out
        self.bias = bias

    def __call__(self, x: Vector) -> list[float]:
        """y = W x + b: [in] -> [out]."""
        return fused(x, self)[0]

    def tokens(self, xs: Sequence[Vector]) -> list[list[float]]:
        """[W x + b for x in xs], each weight read once for all of them: [T, in] -> [T, out]."""
        return [y for (y,) in fused_tokens(xs, self)]

    def __repr__(self) -> str:
        return f"Linear({self.name!r}, [{self.out}, {self.job.cols}], bias={self.bias is not None})"


def fused(x: Vector, *layers: Linear) -> list[list[float]]:
    """[W x + b for each layer]: layers that read the same x, computed in one pass over their job.

    The layers must be rows of one job, in order (q_proj, k_proj, v_proj). One layer alone runs its
    whole job and keeps its rows: `q_proj(x)` costs the whole q/k/v stack.
    """
    stacked = _job_of(layers).run(layers[0].job, [x])[0]  # [1152] for q/k/v
    return [_rows_plus_bias(stacked, layer) for layer in layers]


def fused_tokens(xs: Sequence[Vector], *layers: Linear) -> list[list[list[float]]]:
    """For each token x of xs: [W x + b for each layer], every weight read once for all the tokens."""
    engine, outs = _job_of(layers), []
    for start in range(0, len(xs), TOKENS_PER_PASS):
        for stacked in engine.run(layers[0].job, xs[start : start + TOKENS_PER_PASS]):
            outs.append([_rows_plus_bias(stacked, layer) for layer in layers])
    return outs


def _job_of(layers: Sequence[Linear]) -> Engine:
    """The engine of the layers' one job (a ValueError if they are not rows of one job)."""
    if any(layer.job is not layers[0].job for layer in layers):
        raise ValueError(f"{', '.join(layer.name for layer in layers)} are not rows of one job")
    return layers[0].engine


def _rows_plus_bias(stacked: list[float], layer: Linear) -> list[float]:
    """The layer's rows of a job's output, plus its bias."""
    if layer.bias is not None:
        return [a + b for a, b in zip(stacked[layer.first : layer.first + layer.out], layer.bias)]
    return stacked if layer.out == len(stacked) else stacked[layer.first : layer.first + layer.out]
