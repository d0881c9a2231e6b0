"""The linear layers: which weight matrices the model multiplies by, and in which groups.

A linear layer computes y = W x (+ b), with W stored as [out, in]. Qwen2 has seven per
layer plus the output head. Matrices that read the same input are stacked into one
*job*, so the input is sent once and the rows can be shared out among workers:

| job                               | stacked tensors (rows)                   | shape          |
|-----------------------------------|------------------------------------------|----------------|
| `layers.{i}.self_attn.qkv_proj`   | q_proj 896 + k_proj 128 + v_proj 128     | [1152, 896]    |
| `layers.{i}.self_attn.o_proj`     | o_proj                                   | [896, 896]     |
| `layers.{i}.mlp.gate_up_proj`     | gate_proj 4864 + up_proj 4864            | [9728, 896]    |
| `layers.{i}.mlp.down_proj`        | down_proj                                | [896, 4864]    |
| `lm_head`                         | lm_head, or embed_tokens when tied       | [151936, 896]  |

(The shapes are Qwen2.5-0.5B's.) The biases of q/k/v are small and stay with the model.
`LocalLinear` runs every job in this process; `microqwen.workers.WorkerPool` runs the same
jobs in worker processes, each owning a slice of every job's rows.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Protocol, Sequence

from .config import Config
from .kernels import Matrix, Vector, load_matrix
from .safetensors import Checkpoint


@dataclass(frozen=True)
class Job:
    """One stacked weight matrix: its tensors (stacked row-wise) and its shape [rows, cols]."""

    name: str
    tensors: tuple[str, ...]
    rows: int
    cols: int

    @property
    def multiply_adds(self) -> int:
        return self.rows * self.cols


def linear_jobs(config: Config) -> list[Job]:
    """The jobs of one forward pass, in the order it runs them."""
    hidden, inter = config.hidden_size, config.intermediate_size
    jobs = []
    for i in range(config.num_hidden_layers):
        attn, mlp = f"model.layers.{i}.self_attn", f"model.layers.{i}.mlp"
        jobs += [
            Job(f"layers.{i}.self_attn.qkv_proj", (f"{attn}.q_proj.weight", f"{attn}.k_proj.weight",
                f"{attn}.v_proj.weight"), config.q_size + 2 * config.kv_size, hidden),
            Job(f"layers.{i}.self_attn.o_proj", (f"{attn}.o_proj.weight",), hidden, config.q_size),
            Job(f"layers.{i}.mlp.gate_up_proj", (f"{mlp}.gate_proj.weight", f"{mlp}.up_proj.weight"), 2 * inter, hidden),
            Job(f"layers.{i}.mlp.down_proj", (f"{mlp}.down_proj.weight",), hidden, inter),
        ]  # fmt: skip
    head = "model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"
    jobs.append(Job("lm_head", (head,), config.vocab_size, hidden))
    return jobs


def read_rows(checkpoint: Checkpoint, job: Job, start: int, stop: int) -> array[int]:
    """The bfloat16 bits of rows [start, stop) of a job's stacked matrix, read from the file."""
    bits = array("H")
    offset = 0  # first row of the current tensor within the stack
    for name in job.tensors:
        rows = checkpoint.tensors[name].shape[0]
        lo, hi = max(start, offset), min(stop, offset + rows)
        if lo < hi:
            checkpoint.read_into(name, bits, (lo - offset) * job.cols, (hi - lo) * job.cols)
        offset += rows
    return bits


class LinearBackend(Protocol):
    """Runs jobs: `LocalLinear` here, or `microqwen.workers.WorkerPool` in worker processes."""

    def __call__(self, job: str, xs: Sequence[Vector]) -> list[list[float]]: ...

    def close(self) -> None:
        """Free the weights (and stop any processes)."""


class LocalLinear:
    """Every job's matrix in this process, in the form the chosen kernel wants (workers=0)."""

    def __init__(self, checkpoint: Checkpoint, jobs: Sequence[Job], kernel: str | None = None) -> None:
        self.matrices: dict[str, Matrix] = {
            job.name: load_matrix(read_rows(checkpoint, job, 0, job.rows), job.rows, job.cols, kernel) for job in jobs
        }

    def __call__(self, job: str, xs: Sequence[Vector]) -> list[list[float]]:
        """[W x for x in xs] for the job's stacked W: one output row per input vector."""
        return self.matrices[job].matmat(xs)

    def close(self) -> None:
        """Drop the matrices."""
        self.matrices.clear()
