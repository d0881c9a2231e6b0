"""The Qwen2 transformer: one token in, 151,936 logits out, with a KV cache.

The whole forward pass for one token at position `pos` (shapes are Qwen2.5-0.5B's):

    h = embed_tokens[token]                                   # [896]
    for each of the 24 layers:
        x = rmsnorm(h, input_layernorm)                       # [896]
        q, k, v = Wq x + bq, Wk x + bk, Wv x + bv             # [896], [128], [128]: 14 / 2 / 2 heads of 64
        q, k = rope(q, pos), rope(k, pos)                     # rotate pairs (i, i+32) by pos * theta^(-2i/64)
        cache.append(k, v)                                    # the cache keeps rotated keys
        o_j = sum_t softmax_t(q_j . k_(g,t) / sqrt(64)) v_(g,t)   # head j reads kv head g = j // 7, t <= pos
        h = h + Wo concat(o_0 .. o_13)                        # [896] -> [896]
        x = rmsnorm(h, post_attention_layernorm)
        h = h + Wdown (silu(Wgate x) * (Wup x))               # [896] -> [4864] -> [896]
    logits = E rmsnorm(h, norm)                               # [896] -> [151936], E = embed_tokens (tied)

`Qwen2Model.forward` follows it line by line. The small steps are the functions below
(`rmsnorm`, `RotaryEmbedding`, `attention`, `silu`); the big matrix products go to a
`LinearBackend` (this process, or worker processes). `prefill` runs a whole prompt
through the same code, several tokens per matrix product, and computes the output
head only at the last position.

Everything is computed in Python floats (float64) over the bf16 weights; the reference
(transformers, float32) agrees to about 1e-5.
"""

from __future__ import annotations

import math
import os
from array import array
from dataclasses import dataclass
from typing import Callable, Sequence, Tuple

from . import bf16
from .config import Config, check_tensors
from .errors import ContextError, UsageError
from .kernels import KERNELS, Vector, dot, dots
from .linear import LinearBackend, LocalLinear, linear_jobs
from .safetensors import Checkpoint, open_checkpoint

Tracer = Callable[[str, int, Sequence[float], Tuple[int, ...]], None]
"""Receives (trace point name, position, values, shape) at every named point of the forward pass."""


def rmsnorm(x: Vector, weight: Vector, eps: float) -> list[float]:
    """RMSNorm: y_i = w_i * x_i / sqrt(mean(x^2) + eps). No mean subtraction, no bias."""
    scale = 1.0 / math.sqrt(dot(x, x) / len(x) + eps)
    return [w * xi * scale for w, xi in zip(weight, x)]


def silu(z: float) -> float:
    """SiLU (swish): z * sigmoid(z) = z / (1 + e^-z), written so e^-z cannot overflow."""
    if z >= 0.0:
        return z / (1.0 + math.exp(-z))
    e = math.exp(z)
    return z * e / (1.0 + e)


def softmax(scores: Vector) -> list[float]:
    """p_t = e^(s_t - max s) / sum_u e^(s_u - max s): subtracting the max keeps e^ finite."""
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


class RotaryEmbedding:
    """RoPE in the "rotate half" form, with cos/sin tables computed once per position.

    For a head vector x of head_dim = 64 and position p, with inv_freq_i = theta^(-2i/64):

        out[i]      = x[i] cos(p inv_freq_i) - x[i+32] sin(p inv_freq_i)      i = 0..31
        out[i + 32] = x[i+32] cos(p inv_freq_i) + x[i] sin(p inv_freq_i)

    Dimension i is paired with i + 32 (the first and second halves), not with its
    neighbour i + 1 as in the original RoPE paper: the pairing is the reference's, and the
    weights were trained with it. The reference computes in float32, so theta^(2i/64), its
    inverse inv_freq, and the angle p * inv_freq are each rounded to float32 here too (an
    inv_freq one float32 step off turns by a thousandth of a radian more at position 30,000),
    then cos and sin taken.
    """

    def __init__(self, head_dim: int, theta: float) -> None:
        self.half = head_dim // 2
        powers = array("f", [theta ** (2 * i / head_dim) for i in range(self.half)])  # float32, as the reference
        self.inv_freq = array("f", [1.0 / p for p in powers]).tolist()
        self._tables: dict[int, tuple[list[float], list[float]]] = {}

    def tables(self, pos: int) -> tuple[list[float], list[float]]:
        """(cos, sin) of the 32 angles pos * inv_freq_i, computed on first use."""
        if pos not in self._tables:
            angles = array("f", [pos * f for f in self.inv_freq])
            self._tables[pos] = ([math.cos(a) for a in angles], [math.sin(a) for a in angles])
        return self._tables[pos]

    def rotate(self, x: Vector, pos: int, n_heads: int) -> list[float]:
        """Apply RoPE to each of the n_heads head vectors packed in x [n_heads * head_dim]."""
        cos, sin = self.tables(pos)
        half = self.half
        out: list[float] = []
        for h in range(n_heads):
            first, second = x[2 * h * half : (2 * h + 1) * half], x[(2 * h + 1) * half : (2 * h + 2) * half]
            out += [a * c - b * s for a, b, c, s in zip(first, second, cos, sin)]
            out += [b * c + a * s for a, b, c, s in zip(first, second, cos, sin)]
        return out


class KVCache:
    """Keys and values of every past position, per layer and key/value head.

    `keys[layer][g]` is a list over positions of [head_dim] rotated keys; values are kept
    transposed, `values_t[layer][g][d]` is a list over positions, so that a head's output
    `o[d] = sum_t a_t v_t[d]` is one dot product per dimension. (Lists of floats: on both
    interpreters the dot products run faster over lists than over `array('d')`.)
    """

    def __init__(self, n_layers: int, kv_heads: int, head_dim: int) -> None:
        self.shape = (n_layers, kv_heads, head_dim)
        self.keys: list[list[list[list[float]]]] = []
        self.values_t: list[list[list[list[float]]]] = []
        self.reset()

    def reset(self) -> None:
        """Empty every layer's cache."""
        n_layers, kv_heads, head_dim = self.shape
        self.keys = [[[] for _ in range(kv_heads)] for _ in range(n_layers)]
        self.values_t = [[[[] for _ in range(head_dim)] for _ in range(kv_heads)] for _ in range(n_layers)]

    def __len__(self) -> int:
        """The number of positions complete in every layer.

        Counted on the list `append` writes last (the last value column of the last layer's last
        head), so that a step interrupted halfway through an `append` does not count.
        """
        return len(self.values_t[-1][-1][-1])

    def truncate(self, length: int) -> None:
        """Keep only positions 0..length-1 in every layer (e.g. after an interrupted step)."""
        for layer_keys, layer_values in zip(self.keys, self.values_t):
            for g, keys in enumerate(layer_keys):
                layer_keys[g] = keys[:length]
                for d, column in enumerate(layer_values[g]):
                    layer_values[g][d] = column[:length]

    def append(self, layer: int, k: Vector, v: Vector) -> None:
        """Add one position's k and v [kv_heads * head_dim] to `layer`."""
        _, kv_heads, head_dim = self.shape
        for g in range(kv_heads):
            self.keys[layer][g].append(list(k[g * head_dim : (g + 1) * head_dim]))
            for d, column in enumerate(self.values_t[layer][g]):
                column.append(v[g * head_dim + d])


def attention(q: Vector, cache: KVCache, layer: int, n_heads: int) -> tuple[list[float], list[list[float]]]:
    """Grouped-query attention of one query position over every cached position.

    Query head j reads key/value head g = j // n_rep (7 query heads share one kv head):

        s_t = q_j . k_(g,t) / sqrt(head_dim)      a = softmax(s)      o_j[d] = sum_t a_t v_(g,t)[d]

    The cache holds exactly the positions up to this one, so the causal mask is implicit.
    Returns the heads' outputs concatenated [n_heads * head_dim] and each head's weights.
    """
    _, kv_heads, head_dim = cache.shape
    n_rep = n_heads // kv_heads
    scale = 1.0 / math.sqrt(head_dim)
    out: list[float] = []
    weights = []
    for j in range(n_heads):
        g = j // n_rep
        q_j = q[j * head_dim : (j + 1) * head_dim]
        a = softmax([s * scale for s in dots(q_j, cache.keys[layer][g])])  # [pos + 1]
        out += dots(a, cache.values_t[layer][g])  # [head_dim]: one dot product per value dimension
        weights.append(a)
    return out, weights


def add(a: Vector, b: Vector) -> list[float]:
    """Elementwise a + b (residual connections and biases)."""
    return [x + y for x, y in zip(a, b)]


@dataclass
class LayerVectors:
    """One layer's vectors, which the main process applies itself: the norm weights and q/k/v biases."""

    input_layernorm: list[float]  # [896]
    q_bias: list[float]  # [896]
    k_bias: list[float]  # [128]
    v_bias: list[float]  # [128]
    post_attention_layernorm: list[float]  # [896]


def _emit(tracer: Tracer, pos: int, points: dict[str, Vector]) -> None:
    """Hand each named vector at position `pos` to the tracer."""
    for name, values in points.items():
        tracer(name, pos, values, (len(values),))


def _read_floats(checkpoint: Checkpoint, name: str, first: int = 0, count: int | None = None) -> list[float]:
    """Elements first..first+count-1 (default: all) of a bfloat16 tensor, read from the file, as floats.

    Read with read(2) into an array, not through a view of the mmap: a view caught in the traceback of
    an interrupted step would keep the file from closing.
    """
    bits = array("H")
    checkpoint.read_into(name, bits, first, checkpoint.tensors[name].numel if count is None else count)
    return [bf16.TABLE[b] for b in bits]


PREFILL_BLOCK = 16
"""Prompt tokens that go through each weight matrix together in `prefill`."""


class Qwen2Model:
    """Qwen2ForCausalLM for one sequence: `forward(token, pos)`, `prefill(ids)`, `reset()`."""

    def __init__(self, config: Config, checkpoint: Checkpoint, linear: LinearBackend, max_context: int) -> None:
        self.config = config
        self.checkpoint = checkpoint  # kept open: embedding rows are read from it on demand
        self.linear = linear
        self.max_context = max_context
        self.closed = False
        self.rope = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.cache = KVCache(config.num_hidden_layers, config.num_key_value_heads, config.head_dim)
        self.norm = _read_floats(checkpoint, "model.norm.weight")
        self.layers = [self._layer_vectors(i) for i in range(config.num_hidden_layers)]

    def _layer_vectors(self, i: int) -> LayerVectors:
        prefix = f"model.layers.{i}"
        return LayerVectors(
            _read_floats(self.checkpoint, f"{prefix}.input_layernorm.weight"),
            _read_floats(self.checkpoint, f"{prefix}.self_attn.q_proj.bias"),
            _read_floats(self.checkpoint, f"{prefix}.self_attn.k_proj.bias"),
            _read_floats(self.checkpoint, f"{prefix}.self_attn.v_proj.bias"),
            _read_floats(self.checkpoint, f"{prefix}.post_attention_layernorm.weight"),
        )

    @property
    def pos(self) -> int:
        """The next position: how many tokens the KV cache holds."""
        return len(self.cache)

    def reset(self) -> None:
        """Forget the sequence: empty the KV cache."""
        self.cache.reset()

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on: the next token goes at position `length`."""
        self.cache.truncate(length)

    def close(self) -> None:
        """Release the weights (and stop the workers, if any)."""
        self.closed = True
        try:
            self.linear.close()
        finally:
            self.checkpoint.close()

    def __enter__(self) -> Qwen2Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def forward(self, token: int, pos: int, tracer: Tracer | None = None) -> list[float]:
        """Logits [vocab] for the token after `token` at position `pos` (the cache holds 0..pos-1)."""
        self._check_input([token], pos)
        h = self._hidden_states([token], pos, tracer)[-1]
        return self._logits(h, pos, tracer)

    def prefill(self, ids: Sequence[int], progress: Callable[[int, int], None] | None = None) -> list[float]:
        """Run a prompt through the cache, PREFILL_BLOCK tokens at a time; logits of the last one only.

        `progress(done, total)` is called after each block with the number of tokens done so far.
        (To trace a prompt, run it through `forward` token by token: every position then has logits.)
        """
        if not ids:
            raise UsageError("prefill needs at least one token")
        self._check_input(ids, self.pos)  # all of them before the first block goes into the cache
        for start in range(0, len(ids), PREFILL_BLOCK):
            hs = self._hidden_states(ids[start : start + PREFILL_BLOCK], self.pos, None)
            if progress:
                progress(min(start + PREFILL_BLOCK, len(ids)), len(ids))
        return self._logits(hs[-1], self.pos - 1, None)

    def _hidden_states(self, tokens: Sequence[int], pos: int, tracer: Tracer | None) -> list[list[float]]:
        """The residual stream after the last layer for tokens at positions pos, pos+1, ..."""
        hs = [self._embed(token, pos + t, tracer) for t, token in enumerate(tokens)]  # T x [896]
        for i in range(self.config.num_hidden_layers):
            hs = self._decoder_layer(i, hs, pos, tracer)
        return hs

    def _check_input(self, tokens: Sequence[int], pos: int) -> None:
        """Tokens at positions pos, pos+1, ...: in the vocabulary, following the cache, within the context."""
        if self.closed:
            raise UsageError("the model is closed")
        bad = [token for token in tokens if not 0 <= token < self.config.vocab_size]
        if bad:
            raise UsageError(f"token id {bad[0]} is outside the vocabulary (0..{self.config.vocab_size - 1})")
        count = len(tokens)
        if pos != self.pos:
            raise UsageError(f"position {pos} does not follow the cache, which holds {self.pos} positions")
        if pos + count > self.max_context:
            raise ContextError(
                f"position {pos + count - 1} is past the context limit of {self.max_context} tokens "
                f"(max_position_embeddings {self.config.max_position_embeddings})"
            )

    def _embed(self, token: int, pos: int, tracer: Tracer | None) -> list[float]:
        """Row `token` of embed_tokens [151936, 896], read from the file: [896]."""
        hidden = self.config.hidden_size
        h = _read_floats(self.checkpoint, "model.embed_tokens.weight", token * hidden, hidden)
        if tracer:
            tracer("embed_tokens", pos, h, (len(h),))
        return h

    def _decoder_layer(self, i: int, hs: list[list[float]], pos: int, tracer: Tracer | None) -> list[list[float]]:
        """One Qwen2DecoderLayer for a block of tokens: h += attention(norm(h)), then h += mlp(norm(h))."""
        hs = self._attention_block(i, hs, pos, tracer)
        return self._mlp_block(i, hs, pos, tracer)

    def _attention_block(self, i: int, hs: list[list[float]], pos: int, tracer: Tracer | None) -> list[list[float]]:
        """h + o_proj(attention(rope(q), rope(k), v)), token after token, the KV cache growing by one each."""
        c, w, name = self.config, self.layers[i], f"layers.{i}"
        xs = [rmsnorm(h, w.input_layernorm, c.rms_norm_eps) for h in hs]  # T x [896]
        qkvs = self.linear(f"{name}.self_attn.qkv_proj", xs)  # T x [896 + 128 + 128]
        heads_out = []
        for t, (x, qkv) in enumerate(zip(xs, qkvs)):
            q = add(qkv[: c.q_size], w.q_bias)  # [896]: 14 heads x 64
            k = add(qkv[c.q_size : c.q_size + c.kv_size], w.k_bias)  # [128]: 2 heads x 64
            v = add(qkv[c.q_size + c.kv_size :], w.v_bias)  # [128]
            rope_q = self.rope.rotate(q, pos + t, c.num_attention_heads)
            rope_k = self.rope.rotate(k, pos + t, c.num_key_value_heads)
            self.cache.append(i, rope_k, v)  # position pos + t
            out, weights = attention(rope_q, self.cache, i, c.num_attention_heads)  # [896]: 14 heads x 64
            heads_out.append(out)
            if tracer:
                _emit(tracer, pos + t, {f"{name}.input_layernorm": x, f"{name}.self_attn.q_proj": q,
                                        f"{name}.self_attn.k_proj": k, f"{name}.self_attn.v_proj": v,
                                        f"{name}.self_attn.rope_q": rope_q, f"{name}.self_attn.rope_k": rope_k})  # fmt: skip
                tracer(f"{name}.self_attn.attn_weights", pos + t, [a for head in weights for a in head],
                       (len(weights), pos + t + 1))  # fmt: skip
        o_projs = self.linear(f"{name}.self_attn.o_proj", heads_out)  # T x [896]
        if tracer:
            for t, o in enumerate(o_projs):
                _emit(tracer, pos + t, {f"{name}.self_attn.o_proj": o})
        return [add(h, o) for h, o in zip(hs, o_projs)]  # the residual connection

    def _mlp_block(self, i: int, hs: list[list[float]], pos: int, tracer: Tracer | None) -> list[list[float]]:
        """h + down_proj(silu(gate_proj(x)) * up_proj(x)), with x = post_attention_layernorm(h)."""
        c, w, name = self.config, self.layers[i], f"layers.{i}"
        xs = [rmsnorm(h, w.post_attention_layernorm, c.rms_norm_eps) for h in hs]  # T x [896]
        gate_ups = self.linear(f"{name}.mlp.gate_up_proj", xs)  # T x [4864 + 4864]
        gates = [gu[: c.intermediate_size] for gu in gate_ups]  # T x [4864]
        ups = [gu[c.intermediate_size :] for gu in gate_ups]  # T x [4864]
        acts = [[silu(g) * u for g, u in zip(gate, up)] for gate, up in zip(gates, ups)]  # T x [4864]
        downs = self.linear(f"{name}.mlp.down_proj", acts)  # T x [4864] -> T x [896]
        hs = [add(h, d) for h, d in zip(hs, downs)]  # the residual connection
        if tracer:
            for t in range(len(hs)):
                _emit(tracer, pos + t, {f"{name}.post_attention_layernorm": xs[t], f"{name}.mlp.gate_proj": gates[t],
                                        f"{name}.mlp.up_proj": ups[t], f"{name}.mlp.down_proj": downs[t], name: hs[t]})  # fmt: skip
        return hs

    def _logits(self, h: Vector, pos: int, tracer: Tracer | None) -> list[float]:
        """Final RMSNorm, then the output head: [896] -> [151936]."""
        normed = rmsnorm(h, self.norm, self.config.rms_norm_eps)
        logits = self.linear("lm_head", [normed])[0]
        if tracer:
            tracer("norm", pos, normed, (len(normed),))
            tracer("logits", pos, logits, (len(logits),))
        return logits


def load(path: str, workers: int = 0, kernel: str | None = None, max_context: int | None = None) -> Qwen2Model:
    """Load a Qwen2 model directory (config.json + safetensors weights).

    `workers=0` computes everything in this process; `workers=N` starts N worker processes
    that share out the matrix products. `kernel` picks a matrix kernel by name (default:
    the fastest for this interpreter). `max_context` caps the positions (default: the
    config's max_position_embeddings).
    """
    if workers < 0:
        raise UsageError(f"workers must be 0 or more, got {workers}")
    if kernel is not None and kernel not in KERNELS:
        raise UsageError(f"unknown kernel {kernel!r}: the kernels are {', '.join(KERNELS)}")
    config = Config.from_file(os.path.join(path, "config.json"))
    limit = config.max_position_embeddings
    if max_context is not None and not 0 < max_context <= limit:
        raise UsageError(f"max_context must be in 1..{limit} (max_position_embeddings), got {max_context}")
    checkpoint = open_checkpoint(path)
    linear: LinearBackend | None = None
    try:
        check_tensors(config, checkpoint.tensors, path)
        jobs = linear_jobs(config)
        if workers:
            from .workers import WorkerPool

            linear = WorkerPool(checkpoint, jobs, workers, kernel)
        else:
            linear = LocalLinear(checkpoint, jobs, kernel)
        return Qwen2Model(config, checkpoint, linear, max_context or limit)
    except BaseException:
        if linear is not None:  # the workers started, then the model failed (or Ctrl-C)
            linear.close()
        checkpoint.close()
        raise
