"""The Qwen2 transformer: one token in, 151,936 logits out, with a KV cache.

The whole forward pass for one token at position `pos` (shapes are Qwen2.5-0.5B's):

    h = embed_tokens[token]                                       # [896]
    for each of the 24 layers:
        x = input_layernorm(h)                                    # RMSNorm: [896]
        q, k, v = q_proj(x), k_proj(x), v_proj(x)                 # W x + b: [896], [128], [128] (14 / 2 / 2 heads of 64)
        q, k = rope(q, pos), rope(k, pos)                         # turn pairs (i, i+32) by pos * theta^(-2i/64)
        cache.append(k, v)                                        # the cache keeps rotated keys
        o_j = sum_t softmax_t(q_j . k_(g,t) / sqrt(64)) v_(g,t)   # head j reads kv head g = j // 7, t <= pos
        h = h + o_proj(concat(o_0 .. o_13))                       # [896] -> [896]
        x = post_attention_layernorm(h)
        h = h + down_proj(silu(gate_proj(x)) * up_proj(x))        # [896] -> [4864] -> [896]
    logits = lm_head(norm(h))                                     # [896] -> [151936]; lm_head = embed_tokens (tied)

`Qwen2ForCausalLM.forward` follows it line by line; the small steps are the functions and classes
just below (`rmsnorm`, `silu`, `softmax`, `RotaryEmbedding`, `attention_weights`, `attention_output`).
The products W x are `microqwen.linear.Linear` layers named as in Hugging Face, computed by an
engine: this process, or worker processes (`microqwen.workers`).

Every named value can be read or replaced by a *hook*, `hook(name, pos, values, shape)`, at the
points listed by `point_names` (the Hugging Face module paths without `model.`): returning None
leaves the value as it was, returning a sequence of the same length replaces it, and everything
downstream uses the replacement. The hook gets a copy (a tuple), so reading cannot change anything.
A planted bug (`microqwen.lab.mutations`, `load(..., mutation=NAME)`) may give the model a hook of its
own, `planted`, which runs before the caller's; without one there is none.

`prefill` runs a whole prompt through the same steps, `TOKENS_PER_PASS` tokens per product (each
weight read once for all of them), and computes the output head at the last position only.

Everything is computed in Python floats (float64) over the bfloat16 weights; the reference
(transformers, float32) agrees within 1.5e-5 to 4e-5 on the fixtures' logits, its own float32 rounding
(docs: "Qwen2.5-0.5B at a glance", what is computed in which precision).
"""

from __future__ import annotations

import math
from array import array
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Tuple

from .config import Config
from .errors import ContextError, HookError, UsageError
from .kernels import KERNELS, Kernel, Vector, dot, dots
from .linear import TOKENS_PER_PASS, Engine, Job, Linear, fused, fused_tokens, linear_jobs
from .tokenizer import Tokenizer
from .weights import Weights, open_model

if TYPE_CHECKING:
    from .promptcache import PromptCache
    from .sampling import SamplingParams
    from .shards import ShardedEngine

Hook = Callable[[str, int, Tuple[float, ...], Tuple[int, ...]], Optional[Sequence[float]]]
"""`hook(name, pos, values, shape)` at every named point: None leaves the value, a same-length sequence replaces it."""

LAYER_POINTS = (
    "input_layernorm",
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.rope_q",
    "self_attn.rope_k",
    "self_attn.attn_weights",
    "self_attn.attn_output",
    "self_attn.o_proj",
    "post_attention_layernorm",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
"""The named points inside layer i (`layers.{i}.<point>`), in the order a token meets them; then `layers.{i}`,
the residual stream after the layer. `attn_weights` is [heads, pos + 1], `attn_output` o_proj's input."""


def point_names(num_layers: int) -> list[str]:
    """Every named point in forward order: embed_tokens, each layer's points then `layers.{i}`, norm, logits.

    ```python
    >>> point_names(1)[:3], point_names(1)[-3:]
    (['embed_tokens', 'layers.0.input_layernorm', 'layers.0.self_attn.q_proj'], ['layers.0', 'norm', 'logits'])

    ```
    """
    names = ["embed_tokens"]
    for i in range(num_layers):
        names += [f"layers.{i}.{point}" for point in LAYER_POINTS] + [f"layers.{i}"]
    return names + ["norm", "logits"]


# ------------------------------------------------------------------ the small steps


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


def softmax(scores: Vector, temperature: float = 1.0) -> list[float]:
    """p_t = e^((s_t - max s) / T) / sum_u e^((s_u - max s) / T): subtracting the max keeps e^ finite.

    Attention, the sampler, the trace and the logit lens all use it. The sum is `math.fsum`
    (correctly rounded), so the same scores give the same bits on every interpreter.

    ```python
    >>> [round(p, 4) for p in softmax([1.0, 2.0, 0.0])]
    [0.2447, 0.6652, 0.09]

    ```
    """
    top = max(scores)
    exps = [math.exp((s - top) / temperature) for s in scores]
    total = math.fsum(exps)
    return [e / total for e in exps]


def add(a: Vector, b: Vector) -> list[float]:
    """Elementwise a + b (the residual connections)."""
    return [x + y for x, y in zip(a, b)]


class RMSNorm:
    """`Qwen2RMSNorm`: rmsnorm(x, weight, eps), the weight [896] read from the file."""

    def __init__(self, weight: list[float], eps: float) -> None:
        self.weight = weight
        self.eps = eps

    def __call__(self, x: Vector) -> list[float]:
        return rmsnorm(x, self.weight, self.eps)


class Embedding:
    """`embed_tokens`: row `token` of the [151936, 896] table, read from the file when it is needed."""

    def __init__(self, weights: Weights, name: str, dim: int) -> None:
        self.weights, self.name, self.dim = weights, name, dim

    def __call__(self, token: int) -> list[float]:
        return self.weights.floats(self.name, token * self.dim, self.dim)


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
        for layer in range(len(self.keys)):
            self.truncate_layer(layer, length)

    def truncate_layer(self, layer: int, length: int) -> None:
        """Keep only positions 0..length-1 in `layer`."""
        layer_keys, layer_values = self.keys[layer], self.values_t[layer]
        for g, keys in enumerate(layer_keys):
            if len(keys) > length:
                layer_keys[g] = keys[:length]
            for d, column in enumerate(layer_values[g]):
                if len(column) > length:
                    layer_values[g][d] = column[:length]

    def rows(self, start: int, stop: int) -> list[list[list[float]]]:
        """Positions start..stop-1, each as one row per layer: k then v of every kv head [2 * kv_heads * head_dim]."""
        return [
            [[x for head in keys for x in head[t]] + [column[t] for head in values_t for column in head]
             for keys, values_t in zip(self.keys, self.values_t)]
            for t in range(start, stop)
        ]  # fmt: skip

    def extend(self, rows: Sequence[Sequence[Vector]]) -> None:
        """Append positions given as `rows` gives them."""
        size = self.shape[1] * self.shape[2]
        for row in rows:
            for layer, kv in enumerate(row):
                self.append(layer, kv[:size], kv[size:])

    def append(self, layer: int, k: Vector, v: Vector) -> None:
        """Add one position's k and v [kv_heads * head_dim] to `layer`."""
        _, kv_heads, head_dim = self.shape
        for g in range(kv_heads):
            self.keys[layer][g].append(list(k[g * head_dim : (g + 1) * head_dim]))
            for d, column in enumerate(self.values_t[layer][g]):
                column.append(v[g * head_dim + d])


def attention_weights(q: Vector, keys: Sequence[Sequence[Vector]], n_heads: int, visible: int) -> list[float]:
    """a_(j,t) = softmax_t(q_j . k_(g,t) / sqrt(head_dim)) over positions t < visible: [n_heads * visible].

    Query head j reads key/value head g = j // n_rep (7 query heads share one kv head), and sees only
    the first `visible` positions of the cache: the causal mask, a token never sees a later one.
    """
    head_dim = len(q) // n_heads
    n_rep = n_heads // len(keys)
    scale = 1.0 / math.sqrt(head_dim)
    weights: list[float] = []
    for g, head_keys in enumerate(keys):
        seen = head_keys if len(head_keys) == visible else head_keys[:visible]  # [visible] x [64]
        for j in range(g * n_rep, (g + 1) * n_rep):
            scores = dots(q[j * head_dim : (j + 1) * head_dim], seen)  # [visible]
            weights += softmax([s * scale for s in scores])
    return weights


def attention_output(weights: Vector, values_t: Sequence[Sequence[Vector]], n_heads: int) -> list[float]:
    """o_j[d] = sum_t a_(j,t) v_(g,t)[d], the heads concatenated: [n_heads * head_dim]."""
    visible = len(weights) // n_heads
    n_rep = n_heads // len(values_t)
    out: list[float] = []
    for g, columns in enumerate(values_t):
        if len(columns[0]) != visible:
            columns = [column[:visible] for column in columns]  # [64] x [visible]
        for j in range(g * n_rep, (g + 1) * n_rep):
            out += dots(weights[j * visible : (j + 1) * visible], columns)  # [64]: one dot per dimension
    return out


def swiglu(gate: Vector, up: Vector) -> list[float]:
    """The MLP's activation: silu(gate) * up, elementwise: [4864]."""
    return [silu(g) * u for g, u in zip(gate, up)]


def compose_hooks(*hooks: Hook | None) -> Hook | None:
    """One hook that runs `hooks` in order, each seeing the values as the ones before it left them.

    The result replaces a value if any of them did (None if all the hooks are None).
    """
    chain = [hook for hook in hooks if hook is not None]
    if len(chain) < 2:
        return chain[0] if chain else None

    def composed(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> Sequence[float] | None:
        replaced = None
        for hook in chain:
            out = hook(name, pos, values, shape)
            if out is not None:
                replaced, values = out, tuple(out)
        return replaced

    return composed


class Points:
    """Where one position's pass meets the hook: `at(name, values)` is the value the pass goes on with.

    Without a hook that is `values` itself. With one, the hook gets a copy (a tuple) and its shape,
    and may return a replacement of the same length. `planted`, the model's own hook (a planted
    bug, `microqwen.lab.mutations`), runs before the caller's.
    """

    def __init__(self, hook: Hook | None, pos: int, planted: Hook | None = None) -> None:
        self.hook = hook if planted is None else compose_hooks(planted, hook)
        self.pos = pos

    def __call__(self, name: str, values: list[float], shape: tuple[int, ...] | None = None) -> list[float]:
        if self.hook is None:
            return values
        replacement = self.hook(name, self.pos, tuple(values), shape or (len(values),))
        if replacement is None:
            return values
        if len(replacement) != len(values):
            raise HookError(f"the hook replaced {name} at position {self.pos} with {len(replacement)} values; "
                            f"it has {len(values)}")  # fmt: skip
        try:
            return [float(v) for v in replacement]
        except (TypeError, ValueError):
            raise HookError(f"the hook replaced {name} at position {self.pos} with something other than numbers") from None


# ------------------------------------------------------------------ the model


class Qwen2Attention:
    """`self_attn`: the four projections of one layer's attention (biases on q, k and v only)."""

    def __init__(self, q_proj: Linear, k_proj: Linear, v_proj: Linear, o_proj: Linear) -> None:
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = q_proj, k_proj, v_proj, o_proj


class Qwen2MLP:
    """`mlp`: down_proj(silu(gate_proj(x)) * up_proj(x)), no biases."""

    def __init__(self, gate_proj: Linear, up_proj: Linear, down_proj: Linear) -> None:
        self.gate_proj, self.up_proj, self.down_proj = gate_proj, up_proj, down_proj


class Qwen2DecoderLayer:
    """`layers.{i}`: RMSNorm, attention, RMSNorm, MLP, with a residual connection around each half."""

    def __init__(self, index: int, input_layernorm: RMSNorm, self_attn: Qwen2Attention,
                 post_attention_layernorm: RMSNorm, mlp: Qwen2MLP) -> None:  # fmt: skip
        self.index, self.name = index, f"layers.{index}"
        self.input_layernorm, self.self_attn = input_layernorm, self_attn
        self.post_attention_layernorm, self.mlp = post_attention_layernorm, mlp


def check_context(pos: int, count: int, max_context: int) -> None:
    """Refuse `count` tokens at positions pos, pos+1, ... when the last would be past the context."""
    if pos + count <= max_context:
        return
    if count == 1:
        raise ContextError(f"position {pos} is past the context limit of {max_context} tokens")
    raise ContextError(f"{count} tokens from position {pos} go past the context limit of {max_context} tokens "
                       f"(the last would be at position {pos + count - 1})")  # fmt: skip


class Qwen2ForCausalLM:
    """Qwen2 for one sequence: `forward(token, pos, hook)`, `prefill(ids, hook)`, `reset()`.

    The attributes follow transformers' module tree, so `model.layers[3].self_attn.q_proj` here is
    `model.model.layers[3].self_attn.q_proj` there: transformers splits this class into the body,
    `Qwen2Model` (embed_tokens, layers, norm), and the `lm_head` on top; here both are one class.
    `load` also attaches what generation needs: `tokenizer` (None if the model has none),
    `sampling` (the defaults of generation_config.json), `eos_token_ids`, and the `prompt_cache`
    on disk (`microqwen.promptcache`; None to go without).
    """

    def __init__(self, config: Config, weights: Weights, engine: ShardedEngine, max_context: int) -> None:
        self.config = config
        self.weights = weights  # kept open: embedding rows are read from it on demand
        self.engine = engine
        self.max_context = max_context
        self.closed = False
        self.rope = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.cache = KVCache(config.num_hidden_layers, config.num_key_value_heads, config.head_dim)
        self.embed_tokens = Embedding(weights, "model.embed_tokens.weight", config.hidden_size)
        linears = _linears(weights, engine.jobs, engine)
        eps = config.rms_norm_eps
        self.layers = [_decoder_layer(i, weights, linears, eps) for i in range(config.num_hidden_layers)]
        self.norm = RMSNorm(weights.floats("model.norm.weight"), eps)
        self.lm_head = linears["lm_head"]
        self.path = ""
        self.tokenizer: Tokenizer | None = None
        self.sampling: SamplingParams | None = None  # None: greedy
        self.eos_token_ids: tuple[int, ...] = config.eos_token_ids
        self.mutation: str | None = None  # a planted bug (`microqwen.lab.mutations`), by name
        self.planted: Hook | None = None  # its hook, which runs at every point before the caller's
        self.causal = True  # prefill's causal mask: False lets a token see the later tokens of its block
        self.prompt_cache: PromptCache | None = None
        self.in_blocks = engine.processes > 1  # no hook: each half-layer is one request to the workers

    def forward(self, token: int, pos: int, hook: Hook | None = None) -> list[float]:
        """Logits [vocab] for the token after `token`, which sits at position `pos` (the cache holds 0..pos-1)."""
        self._check_input([token], pos)
        if hook is None and self.in_blocks:
            return self.lm_head(self.norm(self._layers_in_blocks([token], pos)[-1]))  # the same numbers, faster
        heads, kv_heads = self.config.num_attention_heads, self.config.num_key_value_heads
        at = Points(hook, pos, self.planted)  # at(name, values): the values the pass goes on with (a hook may replace them)
        h = at("embed_tokens", self.embed_tokens(token))  # [896]
        for layer in self.layers:
            name, attn, mlp = layer.name, layer.self_attn, layer.mlp
            # attention: h = h + o_proj(attention(rope(q), rope(k), v)), q, k, v projected from input_layernorm(h)
            x = at(f"{name}.input_layernorm", layer.input_layernorm(h))  # [896]
            q, k, v = fused(x, attn.q_proj, attn.k_proj, attn.v_proj)  # W x + b for the three, in one pass
            q = at(f"{name}.self_attn.q_proj", q)  # [896]: 14 heads x 64
            k = at(f"{name}.self_attn.k_proj", k)  # [128]: 2 heads x 64
            v = at(f"{name}.self_attn.v_proj", v)  # [128]: 2 heads x 64
            q = at(f"{name}.self_attn.rope_q", self.rope.rotate(q, pos, heads))  # each head turned by pos
            k = at(f"{name}.self_attn.rope_k", self.rope.rotate(k, pos, kv_heads))
            self.cache.append(layer.index, k, v)  # the cache now holds positions 0..pos
            o = self._attention(layer, q, pos + 1, at)  # [896]: the 14 heads' outputs, concatenated
            h = add(h, at(f"{name}.self_attn.o_proj", attn.o_proj(o)))  # [896] -> [896], the residual connection
            # MLP: h = h + down_proj(silu(gate_proj(x)) * up_proj(x)), with x = post_attention_layernorm(h)
            x = at(f"{name}.post_attention_layernorm", layer.post_attention_layernorm(h))  # [896]
            gate, up = fused(x, mlp.gate_proj, mlp.up_proj)  # [896] -> [4864], [4864], in one pass
            gate, up = at(f"{name}.mlp.gate_proj", gate), at(f"{name}.mlp.up_proj", up)
            down = at(f"{name}.mlp.down_proj", mlp.down_proj(swiglu(gate, up)))  # [4864] -> [896]
            h = at(name, add(h, down))  # the residual stream after the layer
        h = at("norm", self.norm(h))  # [896]
        return at("logits", self.lm_head(h))  # [896] -> [151936]

    def _attention(self, layer: Qwen2DecoderLayer, q: list[float], visible: int, at: Points) -> list[float]:
        """Each head's weights over the first `visible` cached positions, then its weighted sum of values."""
        heads, name = self.config.num_attention_heads, f"{layer.name}.self_attn"
        weights = attention_weights(q, self.cache.keys[layer.index], heads, visible)  # [14 * visible]
        weights = at(f"{name}.attn_weights", weights, (heads, visible))
        return at(f"{name}.attn_output", attention_output(weights, self.cache.values_t[layer.index], heads))

    def prefill(self, ids: Sequence[int], hook: Hook | None = None,
                progress: Callable[[int, int], None] | None = None) -> list[float]:  # fmt: skip
        """Run a prompt through the cache, `TOKENS_PER_PASS` tokens at a time; the logits of the last one.

        The same steps as `forward`, for a block of tokens at once: each product reads its weights once
        for the whole block, and the output head runs only at the last position. `hook` sees every
        point at every position, as `forward` would show it. `progress(done, total)` is called after
        each block.
        """
        h = self._blocks(ids, hook, progress)[-1]  # [896]: the residual stream at the last position
        at = Points(hook, self.pos - 1, self.planted)
        return at("logits", self.lm_head(at("norm", self.norm(h))))

    def final_states(self, ids: Sequence[int]) -> list[list[float]]:
        """`prefill`'s pass without the head: norm(h) at every position [len(ids), 896].

        `lm_head` of one of them is the logits `forward` would give there. Lookup decoding needs the
        logits at a position only if the drafted tokens before it were right, so it runs the head itself.
        """
        return [self.norm(h) for h in self._blocks(ids, None, None)]

    def _blocks(self, ids: Sequence[int], hook: Hook | None,
                progress: Callable[[int, int], None] | None) -> list[list[float]]:  # fmt: skip
        """The residual stream after the last layer at every position of ids, TOKENS_PER_PASS tokens at a time."""
        if not ids:
            raise UsageError("prefill needs at least one token")
        self._check_input(ids, self.pos)  # all of them, before the first block goes into the cache
        states: list[list[float]] = []
        for start in range(0, len(ids), TOKENS_PER_PASS):
            tokens = ids[start : start + TOKENS_PER_PASS]
            if hook is None and self.in_blocks:
                hs = self._layers_in_blocks(tokens, self.pos)
            else:
                block = [Points(hook, self.pos + t, self.planted) for t in range(len(tokens))]
                hs = [at("embed_tokens", self.embed_tokens(token)) for at, token in zip(block, tokens)]  # T x [896]
                for layer in self.layers:
                    hs = self._attention_blocks(layer, hs, block)
                    hs = self._mlp_blocks(layer, hs, block)
            states += hs
            if progress:
                progress(min(start + TOKENS_PER_PASS, len(ids)), len(ids))
        return states

    def _attention_blocks(self, layer: Qwen2DecoderLayer, hs: list[list[float]], block: list[Points],
                          ) -> list[list[float]]:  # fmt: skip
        """The attention half of a layer for T tokens, as in `forward`: every k and v joins the cache,
        then each token attends to the positions up to its own (the causal mask)."""
        attn, name = layer.self_attn, f"{layer.name}.self_attn"
        xs = [at(f"{layer.name}.input_layernorm", layer.input_layernorm(h)) for at, h in zip(block, hs)]
        qs = []
        for at, (q, k, v) in zip(block, fused_tokens(xs, attn.q_proj, attn.k_proj, attn.v_proj)):
            q, k, v = at(f"{name}.q_proj", q), at(f"{name}.k_proj", k), at(f"{name}.v_proj", v)
            qs.append(at(f"{name}.rope_q", self.rope.rotate(q, at.pos, self.config.num_attention_heads)))
            k = at(f"{name}.rope_k", self.rope.rotate(k, at.pos, self.config.num_key_value_heads))
            self.cache.append(layer.index, k, v)
        end = len(self.cache.keys[layer.index][0])  # without the causal mask a token sees the whole block
        heads = [self._attention(layer, q, at.pos + 1 if self.causal else end, at) for at, q in zip(block, qs)]
        outs = [at(f"{name}.o_proj", o) for at, o in zip(block, attn.o_proj.tokens(heads))]
        return [add(h, o) for h, o in zip(hs, outs)]

    def _mlp_blocks(self, layer: Qwen2DecoderLayer, hs: list[list[float]], block: list[Points]) -> list[list[float]]:
        """The MLP half of a layer for T tokens, as in `forward`."""
        mlp, name = layer.mlp, f"{layer.name}.mlp"
        norm = layer.post_attention_layernorm
        xs = [at(f"{layer.name}.post_attention_layernorm", norm(h)) for at, h in zip(block, hs)]  # T x [896]
        acts = []
        for at, (gate, up) in zip(block, fused_tokens(xs, mlp.gate_proj, mlp.up_proj)):
            acts.append(swiglu(at(f"{name}.gate_proj", gate), at(f"{name}.up_proj", up)))  # [4864]
        downs = [at(f"{name}.down_proj", down) for at, down in zip(block, mlp.down_proj.tokens(acts))]
        return [at(layer.name, add(h, down)) for at, h, down in zip(block, hs, downs)]

    def _layers_in_blocks(self, tokens: Sequence[int], pos: int) -> list[list[float]]:
        """The residual stream after the last layer, each half-layer one request to every process.

        With worker processes and no hook, this is what `forward` and `prefill` run: the same numbers
        bit for bit, but each process computes the whole attention (or MLP) half of a layer on its own
        heads (or units), so the processes meet twice per layer instead of four times (`microqwen.shards`).
        The main process keeps the whole KV cache, as the other path needs it.
        """
        self.engine.sync(self.cache)  # positions a pass with a hook computed here
        hs = [self.embed_tokens(token) for token in tokens]  # T x [896]
        for layer in self.layers:
            xs = [layer.input_layernorm(h) for h in hs]
            attention = self.engine.attention_block(layer.index, xs, pos)  # T x (o_proj output, k, v)
            for _, k, v in attention:
                self.cache.append(layer.index, k, v)
            hs = [add(h, o) for h, (o, _, _) in zip(hs, attention)]
            downs = self.engine.mlp_block(layer.index, [layer.post_attention_layernorm(h) for h in hs])
            hs = [add(h, down) for h, down in zip(hs, downs)]
        return hs

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

    def _check_input(self, tokens: Sequence[int], pos: int) -> None:
        """Tokens at positions pos, pos+1, ...: in the vocabulary, following the cache, within the context."""
        if self.closed:
            raise UsageError("the model is closed")
        bad = [token for token in tokens if not 0 <= token < self.config.vocab_size]
        if bad:
            raise UsageError(f"token id {bad[0]} is outside the vocabulary (0..{self.config.vocab_size - 1})")
        if pos != self.pos:
            raise UsageError(f"position {pos} does not follow the cache, which holds {self.pos} positions")
        check_context(pos, len(tokens), self.max_context)

    def close(self) -> None:
        """Release the weights (and stop the workers, if any)."""
        self.closed = True
        try:
            self.engine.close()
        finally:
            self.weights.close()

    def __enter__(self) -> Qwen2ForCausalLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _linears(weights: Weights, jobs: Sequence[Job], engine: Engine) -> dict[str, Linear]:
    """Every linear layer by module path, each a block of rows of its job, with its bias if the file has one."""
    linears = {}
    for job in jobs:
        first = 0
        for layer, tensor, out in zip(job.layers, job.tensors, job.sizes):
            bias = tensor[: -len("weight")] + "bias"
            vector = weights.floats(bias) if bias in weights.tensors else None
            linears[layer] = Linear(layer, engine, job, first, out, vector)
            first += out
    return linears


def _decoder_layer(i: int, weights: Weights, linears: dict[str, Linear], eps: float) -> Qwen2DecoderLayer:
    def norm(name: str) -> RMSNorm:
        return RMSNorm(weights.floats(f"model.layers.{i}.{name}.weight"), eps)

    attn, mlp = f"layers.{i}.self_attn", f"layers.{i}.mlp"
    return Qwen2DecoderLayer(
        i,
        norm("input_layernorm"),
        Qwen2Attention(*(linears[f"{attn}.{p}"] for p in ("q_proj", "k_proj", "v_proj", "o_proj"))),
        norm("post_attention_layernorm"),
        Qwen2MLP(*(linears[f"{mlp}.{p}"] for p in ("gate_proj", "up_proj", "down_proj"))),
    )


def load(
    model: str | None = None,
    workers: int = 0,
    kernel: str | None = None,
    max_context: int | None = None,
    *,
    tokenizer: Tokenizer | None = None,
    offline: bool | None = None,
    progress: bool = True,
    mutation: str | None = None,
    prompt_cache: bool = True,
) -> Qwen2ForCausalLM:
    """Load a Qwen2 model: a Hub id (`Qwen/Qwen2.5-0.5B-Instruct`, `org/name@revision`), a directory or a .gguf file.

    Args:
        model: a model directory, a .gguf file (llama.cpp's format, `microqwen.gguf`), or a Hub id
            fetched into (or found in) the Hugging Face cache; None means Qwen/Qwen2.5-0.5B-Instruct.
        workers: 0 computes everything in this process; N starts N worker processes that share out
            the matrix products (the command line uses one per CPU but one).
        kernel: a matrix kernel by name (default: the fastest for this interpreter).
        max_context: cap the positions (default: the config's max_position_embeddings).
        tokenizer: use this tokenizer instead of reading the model's (the command line reads it
            first, to check the prompt before the weights load).
        offline: use only the cache; None reads `HF_HUB_OFFLINE`.
        progress: show a download on stderr.
        mutation: plant a bug by name (`microqwen.lab.mutations.MUTATIONS`), to see what it changes
            (a mutated model computes on the plain path, with no prompt cache).
        prompt_cache: keep the KV cache of prompts on disk, so that a prompt that begins like an
            earlier one (every chat's system prompt) evaluates only the rest (`microqwen.promptcache`).
    """
    from .hub import resolve_model
    from .promptcache import PromptCache
    from .sampling import generation_defaults
    from .shards import LocalEngine

    if workers < 0:
        raise UsageError(f"workers must be 0 or more, got {workers}")
    if kernel is not None and kernel not in KERNELS:
        raise UsageError(f"unknown kernel {kernel!r}: the kernels are {', '.join(KERNELS)}")
    if mutation is not None:
        from .lab import mutations

        mutations.find(mutation)  # an unknown name is an error before anything loads
    path = resolve_model(model, offline=offline, progress=progress)
    config, weights = open_model(path)
    limit = config.max_position_embeddings
    engine: ShardedEngine | None = None
    matrix_kernel: Kernel = kernel
    try:
        if max_context is not None and not 0 < max_context <= limit:
            raise UsageError(f"max_context must be in 1..{limit} (max_position_embeddings), got {max_context}")
        if mutation is not None:  # a bug in the reads of the file or in the kernel (the workers plant it too)
            weights, matrix_kernel = mutations.engine_parts(mutation, weights, kernel)
        if workers:
            from .workers import WorkerPool

            engine = WorkerPool(path, config, weights, linear_jobs(config), workers, matrix_kernel, mutation)
        else:
            engine = LocalEngine(config, weights, linear_jobs(config), matrix_kernel)
        qwen = Qwen2ForCausalLM(config, weights, engine, max_context or limit)
        if mutation is not None:
            mutations.plant(mutation, qwen)
        qwen.path = path
        qwen.tokenizer = tokenizer or (Tokenizer.from_model(path, weights.metadata) if Tokenizer.found_in(path) else None)
        qwen.sampling, qwen.eos_token_ids = generation_defaults(path, config, weights.metadata)
        qwen.prompt_cache = PromptCache(qwen) if prompt_cache and mutation is None else None
        return qwen
    except BaseException:
        if engine is not None:  # the workers started, then the model failed (or Ctrl-C)
            engine.close()
        weights.close()
        raise
