"""Shards: how a layer is split among processes, and the part one process computes.

Pure Python runs one core per process, so P processes share out every layer (tensor parallelism,
as Megatron-LM splits a transformer across GPUs). Process s of P owns, in every layer:

    query heads  [14 s / P, 14 (s + 1) / P)      and the key/value heads they read (g = j // 7)
    MLP units    [4864 s / P, 4864 (s + 1) / P)  rows of gate_proj and up_proj, columns of down_proj
    vocabulary   [151936 s / P, ...)             rows of lm_head

With P = 2: process 0 has heads 0..6 and key/value head 0, process 1 heads 7..13 and key/value
head 1, and each has half of the MLP. A projection *into* heads or units (q/k/v, gate/up, lm_head)
is split by output rows: each process computes its rows of y. A projection *out of* them (o_proj,
down_proj) is split by input columns: each process multiplies its block of columns by its part of
the input, and the P partial sums add up to the product,

    o_proj(o) = Wo[:, heads of 0] o[heads of 0] + Wo[:, heads of 1] o[heads of 1]

so a process can run a whole half-layer on its own: its q, k, v; RoPE; its share of the KV cache;
attention for its heads; and its partial o_proj (`Shard.attention`), or gate/up, SwiGLU and its
partial down_proj (`Shard.mlp`). Per layer the processes then meet twice, to add partial sums,
instead of four times.

The same split serves `Shard.run`, one product at a time, which the readable forward pass uses
(and any pass with a hook): with one process (P = 1) it is the whole matrix, as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .config import Config
from .kernels import Kernel, Matrix, Vector, kernel_name
from .linear import JOBS_PER_LAYER, Job
from .model import KVCache, RotaryEmbedding, attention_output, attention_weights, swiglu
from .weights import Weights

Ranges = tuple[tuple[int, int], ...]
"""Row ranges [start, stop) of a job's stacked matrix."""


@dataclass(frozen=True)
class Share:
    """What process `index` of `processes` computes in every layer."""

    index: int
    processes: int
    heads: range  # query heads
    kv_heads: range  # the key/value heads those query heads read
    units: range  # MLP units: rows of gate_proj and up_proj, columns of down_proj
    vocab: range  # rows of lm_head

    def rows(self, job: Job, config: Config) -> Ranges:
        """The rows of a row-split job that this process computes, in the stack's order."""
        d, q = config.head_dim, config.q_size
        kind = _kind(job)
        if kind == "qkv":
            kv = (self.kv_heads.start * d, self.kv_heads.stop * d)
            return (self.heads.start * d, self.heads.stop * d), (q + kv[0], q + kv[1]), (q + config.kv_size + kv[0],
                                                                                          q + config.kv_size + kv[1])
        if kind == "gate_up":
            inter = config.intermediate_size
            return (self.units.start, self.units.stop), (inter + self.units.start, inter + self.units.stop)
        return ((self.vocab.start, self.vocab.stop),)

    def columns(self, job: Job, config: Config) -> tuple[int, int]:
        """The columns [start, stop) of a column-split job (o_proj, down_proj) that this process owns."""
        if _kind(job) == "o_proj":
            return self.heads.start * config.head_dim, self.heads.stop * config.head_dim
        return self.units.start, self.units.stop


def plan(config: Config, processes: int, heads_step: int = 1, units_step: int = 1) -> list[Share]:
    """Split every layer among `processes` processes: contiguous, nearly equal shares.

    Query heads go in multiples of `heads_step` and MLP units in multiples of `units_step`
    (`column_steps`): 4864 units in steps of 256 are 19 steps, so of 2 processes the first gets
    9 (2304 units) and the second 10 (2560).
    """
    n_rep = config.n_rep

    def part(n: int, step: int, s: int) -> range:
        steps = n // step
        return range(step * (steps * s // processes), step * (steps * (s + 1) // processes))

    shares = []
    for s in range(processes):
        mine = part(config.num_attention_heads, heads_step, s)
        kv = range(mine.start // n_rep, (mine.stop - 1) // n_rep + 1) if mine else range(0)
        units, vocab = part(config.intermediate_size, units_step, s), part(config.vocab_size, 1, s)
        shares.append(Share(s, processes, mine, kv, units, vocab))
    return shares


def column_steps(config: Config, weights: Weights, jobs: Sequence[Job]) -> tuple[int, int]:
    """The query heads and MLP units a share holds a multiple of, so o_proj's and down_proj's columns split
    on block boundaries: a Q4_K down_proj's rows are blocks of 256 weights, so units go 256 at a time;
    a Q5_0 o_proj's blocks of 32 hold half a head of 64, so heads go one at a time. (1, 1) for bfloat16."""
    heads, units = 1, 1
    for job in jobs:
        if split_by_columns(job):
            block = max(weights.block_size(tensor) for tensor in job.tensors)
            if _kind(job) == "o_proj":
                heads = math.lcm(heads, block // math.gcd(block, config.head_dim))
            else:
                units = math.lcm(units, block)
    return heads, units


def split_by_columns(job: Job) -> bool:
    """o_proj and down_proj are split by input columns (partial sums); the others by output rows."""
    return _kind(job) in ("o_proj", "down_proj")


def _kind(job: Job) -> str:
    last = job.layers[0].rsplit(".", 1)[-1]
    return {"q_proj": "qkv", "gate_proj": "gate_up"}.get(last, last)


class Shard:
    """One process's share of every layer: its matrices, its q/k/v biases, its part of the KV cache.

    `run(i, xs)` computes its part of job i for tokens xs (its rows, or its partial sums); `attention`
    and `mlp` run a whole half-layer on its heads or units.
    """

    def __init__(self, config: Config, weights: Weights, jobs: Sequence[Job], share: Share, kernel: Kernel) -> None:
        self.config, self.share, self.jobs = config, share, list(jobs)
        self.columns: list[tuple[int, int] | None] = []  # the input columns of a column-split job
        self.matrices: list[Matrix] = []
        for job in self.jobs:
            if split_by_columns(job):
                columns = share.columns(job, config)
                self.columns.append(columns)
                self.matrices.append(weights.matrix(job.tensors, ((0, job.rows),), columns, kernel))
            else:
                self.columns.append(None)
                self.matrices.append(weights.matrix(job.tensors, share.rows(job, config), None, kernel))
        n = config.num_hidden_layers
        qkv_jobs = self.jobs[::JOBS_PER_LAYER][:n]
        self.qkv_bias = [_biases(weights, job, share.rows(job, config)) for job in qkv_jobs]
        self.rope = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.cache = KVCache(n, len(share.kv_heads), config.head_dim)

    def run(self, index: int, xs: Sequence[Vector]) -> list[list[float]]:
        """Job `index` for each token of xs: this process's rows of y, or its partial sum of y."""
        columns, matrix = self.columns[index], self.matrices[index]
        if columns is not None:
            start, stop = columns
            return matrix.matmat([x[start:stop] for x in xs])
        return matrix.matmat(xs)

    def attention(self, layer: int, xs: Sequence[Vector], pos: int) -> list[list[float]]:
        """The attention half of `layer` for tokens at pos, pos+1, ... on this process's heads.

        For each token: its partial o_proj [896], then its new k and v rows ([64] per kv head each),
        which the main process keeps in the full cache.
        """
        c, share = self.config, self.share
        n_q, n_kv = len(share.heads) * c.head_dim, len(share.kv_heads) * c.head_dim
        self.cache.truncate_layer(layer, pos)  # anything past pos is from an interrupted step
        qkvs = self.matrices[JOBS_PER_LAYER * layer].matmat(xs)
        qs, kvs = [], []
        for t, qkv in enumerate(qkvs):
            qkv = [a + b for a, b in zip(qkv, self.qkv_bias[layer])]
            q = self.rope.rotate(qkv[:n_q], pos + t, len(share.heads))
            k = self.rope.rotate(qkv[n_q : n_q + n_kv], pos + t, len(share.kv_heads))
            v = qkv[n_q + n_kv :]
            self.cache.append(layer, k, v)
            qs.append(q)
            kvs.append(k + v)
        heads = [self._heads(layer, q, pos + t + 1) for t, q in enumerate(qs)]  # T x [its heads x 64]
        partials = self.matrices[JOBS_PER_LAYER * layer + 1].matmat(heads)  # T x [896]
        return [partial + kv for partial, kv in zip(partials, kvs)]

    def _heads(self, layer: int, q: list[float], visible: int) -> list[float]:
        """Attention of this process's query heads over the first `visible` cached positions."""
        n_rep, first_kv = self.config.n_rep, self.share.kv_heads.start
        out: list[float] = []
        d = self.config.head_dim
        for i, j in enumerate(self.share.heads):  # global query head j reads global kv head j // n_rep
            g = j // n_rep - first_kv
            q_j = q[i * d : (i + 1) * d]
            weights = attention_weights(q_j, [self.cache.keys[layer][g]], 1, visible)
            out += attention_output(weights, [self.cache.values_t[layer][g]], 1)
        return out

    def mlp(self, layer: int, xs: Sequence[Vector]) -> list[list[float]]:
        """The MLP half of `layer` on this process's units: its partial down_proj [896] for each token."""
        units = len(self.share.units)
        first = JOBS_PER_LAYER * layer
        acts = [swiglu(gu[:units], gu[units:]) for gu in self.matrices[first + 2].matmat(xs)]  # T x [its units]
        return self.matrices[first + 3].matmat(acts)  # T x [896]

    def push(self, first: int, rows: Sequence[Sequence[Vector]]) -> None:
        """Set the cache from position `first` on: `rows[t][layer]` is k + v [2 * kv_size] of every kv head."""
        c, kv = self.config, self.share.kv_heads
        d = c.head_dim
        for layer in range(c.num_hidden_layers):
            self.cache.truncate_layer(layer, first)
            for row in rows:
                k, v = row[layer][: c.kv_size], row[layer][c.kv_size :]
                self.cache.append(layer, k[kv.start * d : kv.stop * d], v[kv.start * d : kv.stop * d])


def _biases(weights: Weights, job: Job, ranges: Ranges) -> list[float]:
    """The q, k and v biases of the rows `ranges` of a q/k/v job."""
    stacked: list[float] = []
    for tensor in job.tensors:
        stacked += weights.floats(tensor[: -len("weight")] + "bias")
    return [b for start, stop in ranges for b in stacked[start:stop]]


class ShardedEngine:
    """Runs jobs and half-layers on every shard (share 0 in this process) and puts the parts together.

    Subclasses say how the shards compute (`_compute`): `LocalEngine` has one shard, the whole model,
    in this process; `microqwen.workers.WorkerPool` has shard 0 here and the others in workers.
    """

    local: Shard  # share 0, computed in this process

    def __init__(self, config: Config, weights: Weights, jobs: Sequence[Job], processes: int, kernel: Kernel) -> None:
        self.config = config
        self.kernel = kernel_name(kernel)
        self.jobs = list(jobs)
        self.index = {job.name: i for i, job in enumerate(self.jobs)}
        self.processes = processes
        self.shares = plan(config, processes, *column_steps(config, weights, self.jobs))
        self.synced = 0  # the positions every shard's cache holds, the same as the model's cache
        self.kv_owner = [next(s for s in self.shares if g in s.kv_heads) for g in range(config.num_key_value_heads)]

    def run(self, job: Job, xs: Sequence[Vector]) -> list[list[float]]:
        """[W x for x in xs] for the job's whole W: the shards' rows put in place, or their partial sums added."""
        parts = self._compute(RUN, self.index[job.name], xs, 0)  # [shares][T][...]
        if split_by_columns(job):
            return [_add_all(pieces) for pieces in zip(*parts)]
        return [self._assemble(job, pieces) for pieces in zip(*parts)]

    def attention_block(self, layer: int, xs: Sequence[Vector], pos: int) -> list[tuple[list[float], list[float], list[float]]]:
        """For each token: o_proj(attention) [896] over all heads, and the token's k and v of every kv head."""
        hidden = self.config.hidden_size
        parts = self._compute(ATTENTION, layer, xs, pos)
        if layer == self.config.num_hidden_layers - 1:
            self.synced = pos + len(xs)
        return [(_add_all([p[:hidden] for p in pieces]),) + self._kv(pieces) for pieces in zip(*parts)]

    def mlp_block(self, layer: int, xs: Sequence[Vector]) -> list[list[float]]:
        """For each token: down_proj(silu(gate_proj(x)) * up_proj(x)) [896], the shards' partial sums added."""
        return [_add_all(pieces) for pieces in zip(*self._compute(MLP, layer, xs, 0))]

    def sync(self, cache: KVCache) -> None:
        """Give every shard the positions of `cache` it lacks (those a pass with a hook computed here)."""
        length = len(cache)
        self.synced = min(self.synced, length)  # the shards drop what is past it with their next step
        if self.synced < length:
            self._push(self.synced, cache.rows(self.synced, length))
            self.synced = length

    def _assemble(self, job: Job, pieces: Sequence[list[float]]) -> list[float]:
        """A row-split job's output from each shard's rows (a key/value head two shards share is the same in both)."""
        if len(pieces) == 1:
            return pieces[0]
        y = [0.0] * job.rows
        for share, piece in zip(self.shares, pieces):
            offset = 0
            for start, stop in share.rows(job, self.config):
                y[start:stop] = piece[offset : offset + stop - start]
                offset += stop - start
        return y

    def _kv(self, pieces: Sequence[list[float]]) -> tuple[list[float], list[float]]:
        """The k and v of every kv head, each taken from the first shard that computed it."""
        c = self.config
        d, hidden = c.head_dim, c.hidden_size
        k: list[float] = []
        v: list[float] = []
        for g, share in enumerate(self.kv_owner):
            piece, n_kv = pieces[share.index], len(share.kv_heads) * d
            at = hidden + (g - share.kv_heads.start) * d
            k += piece[at : at + d]
            v += piece[at + n_kv : at + n_kv + d]
        return k, v

    def _compute(self, command: int, index: int, xs: Sequence[Vector], pos: int) -> list[list[list[float]]]:
        """Every shard's output of `command` (RUN a job, ATTENTION or MLP of a layer), shard by shard."""
        raise NotImplementedError

    def close(self) -> None:
        """Free the weights (and stop any processes)."""
        raise NotImplementedError

    def _push(self, first: int, rows: list[list[list[float]]]) -> None:
        """Set every shard's cache from position `first` on (`rows[t][layer]` is k + v of every kv head)."""
        raise NotImplementedError


RUN, ATTENTION, MLP = 0, 1, 2
"""What a shard is asked to compute: one job, or the attention or MLP half of a layer."""


def compute(shard: Shard, command: int, index: int, xs: Sequence[Vector], pos: int) -> list[list[float]]:
    """Ask `shard` for `command` on tokens xs (at positions pos, pos+1, ... for ATTENTION)."""
    if command == RUN:
        return shard.run(index, xs)
    if command == ATTENTION:
        return shard.attention(index, xs, pos)
    return shard.mlp(index, xs)


def _add_all(pieces: Sequence[list[float]]) -> list[float]:
    """The sum of the shards' partial sums, added in shard order (so the same shards give the same bits)."""
    total = pieces[0]
    for piece in pieces[1:]:
        total = [a + b for a, b in zip(total, piece)]
    return total


class LocalEngine(ShardedEngine):
    """Every matrix in this process: one shard that owns the whole model (workers=0)."""

    def __init__(self, config: Config, weights: Weights, jobs: Sequence[Job], kernel: Kernel = None) -> None:
        super().__init__(config, weights, jobs, 1, kernel)
        self.local = Shard(config, weights, self.jobs, self.shares[0], kernel)

    def _compute(self, command: int, index: int, xs: Sequence[Vector], pos: int) -> list[list[list[float]]]:
        return [compute(self.local, command, index, xs, pos)]

    def _push(self, first: int, rows: list[list[list[float]]]) -> None:
        self.local.push(first, rows)

    def close(self) -> None:
        """Drop the matrices."""
        self.local.matrices.clear()
