"""Tracing: follow one token through the model and see what each layer thinks.

`Qwen2ForCausalLM.forward(token, pos, hook)` hands every intermediate vector to `hook(name, pos,
values, shape)`, at points named after the Hugging Face module paths (without `model.`):

    embed_tokens                                   the token's row of the embedding      [896]
    layers.{i}.input_layernorm                     x = rmsnorm(h)                        [896]
    layers.{i}.self_attn.q_proj / k_proj / v_proj  W x + b                               [896] [128] [128]
    layers.{i}.self_attn.rope_q / rope_k           q and k after RoPE                    [896] [128]
    layers.{i}.self_attn.attn_weights              softmax(q.k / 8), one row per head    [14, pos + 1]
    layers.{i}.self_attn.attn_output               the heads' outputs, concatenated      [896]
    layers.{i}.self_attn.o_proj                    Wo concat(heads)                      [896]
    layers.{i}.post_attention_layernorm            rmsnorm(h + attention)                [896]
    layers.{i}.mlp.gate_proj / up_proj / down_proj the SwiGLU MLP                        [4864] [4864] [896]
    layers.{i}                                     the residual stream after layer i     [896]
    norm, logits                                   final rmsnorm, output head            [896] [151936]

A `Recorder` is such a hook, one that only reads: it keeps a copy of the points it is asked for. A `TraceSession`
runs one token at a time with a recorder and analyses each position (a `Position`):

- a summary of each chosen point in llama.cpp's tensor-dump style: shape, the first and last 3
  values, sum and RMS (`summarize`);
- the top-k next tokens under the plain softmax of the logits (`top_tokens`);
- for every layer and head, the weights over the earlier positions (`attention`);
- the *logit lens* (`logit_lens`): the final norm and the output head applied to the residual
  stream after each layer, i.e. what the model would predict if it stopped there.

A worked example of the summary, on a vector small enough to check by hand
(sum 1 - 2 + 3 + 4 - 5 + 6 + 7 = 14, RMS sqrt(140 / 7) = 4.4721):

    >>> print(format_summary("example", summarize(Point((7,), array("d", [1, -2, 3, 4, -5, 6, 7])))))
    example                             [7]        [   1.0000,   -2.0000,    3.0000, ...,   -5.0000,    6.0000,    7.0000]  sum 14  rms 4.47214

and of the top tokens (e^0 : e^-1 : e^-2 = 0.665 : 0.245 : 0.090):

    >>> [(c.id, round(c.probability, 3)) for c in top_tokens([1.0, 2.0, 0.0], 2)]
    [(1, 0.665), (0, 0.245)]

`Selection` says which points to keep: `--layers 0,3,20-23` keeps the points of those layers, and
`--points q_proj,attn_weights` keeps the points whose name, or a dotted end of it, matches one of
the patterns (`fnmatch` wildcards allowed; `residual` stands for the layer outputs `layers.{i}`).
`to_json` writes a trace for programs; `microqwen.report` draws it, `microqwen.compare` checks it
against the reference.
"""

from __future__ import annotations

import fnmatch
import heapq
import json
import math
import re
import unicodedata
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from .errors import UsageError
from .kernels import Vector
from .distribution import entropy, kl_divergence, log_probability, log_softmax, rank
from .model import LAYER_POINTS, Hook, Points, Qwen2ForCausalLM, compose_hooks, point_names, softmax
from .sampling import argmax

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

RESIDUAL = "residual"
"""The `--points` name of the residual stream after each layer, the points named `layers.{i}`."""

Pieces = Callable[[int], Optional[str]]
"""Token id -> its text (None when there is no tokenizer)."""


def layer_of(name: str) -> int | None:
    """The layer a trace point belongs to (`layers.3.mlp.up_proj` -> 3), None for the others."""
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "layers" and len(parts) > 1 else None


def matches(pattern: str, name: str) -> bool:
    """True if `pattern` matches the point `name` or one of its dotted ends.

    ```python
    >>> matches("q_proj", "layers.3.self_attn.q_proj"), matches("mlp.*", "layers.3.mlp.up_proj")
    (True, True)
    >>> matches("proj", "layers.3.self_attn.q_proj"), matches("residual", "layers.3")
    (False, True)

    ```
    """
    parts = name.split(".")
    if pattern == RESIDUAL:
        return len(parts) == 2 and parts[0] == "layers"
    return any(fnmatch.fnmatchcase(".".join(parts[i:]), pattern) for i in range(len(parts)))


def parse_ranges(spec: str, count: int, flag: str, what: str) -> tuple[int, ...]:
    """`0,3,20-23` -> (0, 3, 20, 21, 22, 23): numbers and inclusive ranges below `count`, in order.

    `flag` and `what` name them in an error: `--layers 30: this model has layers 0..23`.
    """
    chosen: set[int] = set()
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise UsageError(f"{flag} takes numbers and ranges like 0,3,20-23; got {part!r} in {spec!r}")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if not first <= last < count:
            raise UsageError(f"{flag} {part.strip()}: {what} 0..{count - 1}")
        chosen.update(range(first, last + 1))
    return tuple(sorted(chosen))


def parse_layers(spec: str, num_layers: int) -> tuple[int, ...]:
    """`--layers 0,3,20-23` -> (0, 3, 20, 21, 22, 23): numbers and inclusive ranges, in order.

    ```python
    >>> parse_layers("0,3,20-23", 24)
    (0, 3, 20, 21, 22, 23)

    ```
    """
    return parse_ranges(spec, num_layers, "--layers", "this model has layers")


def parse_points(spec: str, num_layers: int) -> tuple[str, ...]:
    """`--points q_proj,attn_weights` -> the patterns, each checked to match some trace point."""
    names = point_names(num_layers)
    patterns = tuple(part.strip() for part in spec.split(",") if part.strip())
    for pattern in patterns:
        if not any(matches(pattern, name) for name in names):
            known = ", ".join(["embed_tokens", *LAYER_POINTS, RESIDUAL, "norm", "logits"])
            raise UsageError(f"--points {pattern!r} matches no trace point; the points are {known}")
    if not patterns:
        raise UsageError(f"--points needs at least one point name, got {spec!r}")
    return patterns


@dataclass(frozen=True)
class Selection:
    """Which points to keep: the points of `layers`, those matching `patterns` (none = every point)."""

    layers: tuple[int, ...]
    patterns: tuple[str, ...] = ()

    @classmethod
    def every_point(cls, num_layers: int) -> Selection:
        """Every point of every layer (no `--layers`, no `--points`)."""
        return cls(tuple(range(num_layers)))

    def chosen(self, name: str) -> bool:
        """Is the point `name` kept? A layer's point only if its layer is chosen."""
        layer = layer_of(name)
        if layer is not None and layer not in self.layers:
            return False
        return not self.patterns or any(matches(pattern, name) for pattern in self.patterns)


class Point(NamedTuple):
    """The values of one trace point at one position: shape, and the values flat, row-major."""

    shape: Tuple[int, ...]
    values: array[float]


class Recorder:
    """A hook for `Qwen2ForCausalLM.forward` that keeps a copy of the points `keep(name)` accepts.

    `points[pos][name]` is a `Point`; everything else the model reports is ignored at once. It
    returns None, so the pass goes on with the values as they were.
    """

    def __init__(self, keep: Callable[[str], bool]) -> None:
        self.keep = keep
        self.points: dict[int, dict[str, Point]] = {}

    def __call__(self, name: str, pos: int, values: Sequence[float], shape: tuple[int, ...]) -> None:
        if self.keep(name):
            self.points.setdefault(pos, {})[name] = Point(shape, array("d", values))


# ------------------------------------------------------------------ what one position shows


class Summary(NamedTuple):
    """llama.cpp's tensor dump in one line: shape, first and last values, sum, RMS = sqrt(mean(x^2))."""

    shape: Tuple[int, ...]
    first: List[float]
    last: List[float]
    total: float
    rms: float


def summarize(point: Point, edge: int = 3) -> Summary:
    """The summary of a point: its first and last `edge` values, sum and RMS."""
    values = point.values
    total = math.fsum(values)
    rms = math.sqrt(math.fsum(v * v for v in values) / len(values)) if len(values) else 0.0
    return Summary(point.shape, list(values[:edge]), list(values[-edge:]) if len(values) > edge else [], total, rms)


def format_summary(name: str, summary: Summary) -> str:
    """One line: name, shape, the first and last 3 values, sum and RMS."""
    shown = ", ".join(f"{v:9.4f}" for v in summary.first)
    if summary.last:
        shown += ", ..., " + ", ".join(f"{v:9.4f}" for v in summary.last)
    shape = "[" + ", ".join(map(str, summary.shape)) + "]"
    return f"{name:<35} {shape:<10} [{shown}]  sum {summary.total:.6g}  rms {summary.rms:.6g}"


class Candidate(NamedTuple):
    """A possible next token: id, logit, and its probability under the softmax of all logits."""

    id: int
    logit: float
    probability: float


def top_tokens(logits: Vector, k: int) -> list[Candidate]:
    """The k most likely next tokens, p_i = e^(l_i - max l) / sum_j e^(l_j - max l) over the whole vocabulary.

    This is the model's own distribution (temperature 1, no top-k/top-p filtering, no repetition
    penalty), what a sampler starts from. On a tie the lower id comes first.
    """
    probabilities = softmax(logits)
    best = heapq.nlargest(k, range(len(logits)), key=logits.__getitem__)
    return [Candidate(i, logits[i], probabilities[i]) for i in best]


def attention(point: Point) -> list[list[float]]:
    """The attention weights of one position, [heads, pos + 1]: row j is head j's weights over 0..pos."""
    heads, width = point.shape
    return [point.values[j * width : (j + 1) * width].tolist() for j in range(heads)]


def mean_over_heads(weights: Sequence[Sequence[float]]) -> list[float]:
    """The weight each earlier position gets, averaged over the heads: [pos + 1]."""
    return [math.fsum(column) / len(weights) for column in zip(*weights)]


MID = "resid_mid"
"""The lens's name for the residual stream halfway through layer i, after attention and before the MLP:
`layers.{i}.resid_mid` = (the stream before layer i) + `layers.{i}.self_attn.o_proj` (TransformerLens's name)."""


class LensRow(NamedTuple):
    """The logit lens at one residual stream: its top token, and where the model's final choice stands.

    `point` names the residual stream read (`embed_tokens`, `layers.{i}.resid_mid` or `layers.{i}`);
    `final_rank` is 1 when the final choice is already the top token there; `entropy` is that of the
    stream's distribution and `kl` its distance from the final one, KL(final || stream), both in nats
    (`microqwen.distribution`). With a target token (the known next token), its log-probability and rank.
    """

    point: str
    id: int
    probability: float
    final_rank: int
    final_probability: float
    entropy: float
    kl: float
    target_logprob: Optional[float] = None
    target_rank: Optional[int] = None


def logit_lens(model: Qwen2ForCausalLM, residuals: Sequence[tuple[str, Vector]],
               final_logits: Sequence[float] | None = None, target: int | None = None) -> list[LensRow]:  # fmt: skip
    """Decode each residual stream as if it were the last: logits_i = lm_head(norm(h_i)).

    `final_logits` are the model's own output at that position, which each stream is measured
    against; None takes the last stream's (the stream after the last layer decodes to the output).
    All streams go through the output head in one `lm_head.tokens` call, so its 151936 x 896
    weights are read once for all of them (len(residuals) x 136M multiply-adds).
    """
    normed = [model.norm(h) for _, h in residuals]  # L x [896]
    rows = model.lm_head.tokens(normed) if normed else []  # L x [151936]
    final = log_softmax(rows[-1] if final_logits is None else final_logits)
    return [_lens_row(name, logits, final, target) for (name, _), logits in zip(residuals, rows)]


def _lens_row(name: str, logits: Sequence[float], final: Sequence[float], target: int | None) -> LensRow:
    """One stream's row; `final` is the log-softmax of the model's output."""
    log_p = log_softmax(logits)
    final_id, best = argmax(final), argmax(logits)
    row = LensRow(name, best, math.exp(log_p[best]), rank(logits, final_id), math.exp(log_p[final_id]),
                  entropy(log_p), kl_divergence(final, log_p))  # fmt: skip
    if target is None:
        return row
    return row._replace(target_logprob=log_p[target], target_rank=rank(logits, target))


@dataclass
class Position:
    """Everything traced at one position: the chosen points and the analyses.

    Attributes:
        tokens: the tokens at positions 0..pos; the last one was fed at this position.
        points: the chosen trace points, in forward order.
        top: the most likely next tokens (`top_tokens`).
        attn: layer -> its attention weights at this position [heads, pos + 1], for the chosen layers.
        logit_lens: one `LensRow` for the embedding and each chosen layer (empty with the lens off).
        residual_rms: the RMS of the residual stream: embed_tokens, then after each layer [1 + layers].
        target: the token known to come next (`--target`), whose rank the lens shows, or None;
            `target_logprob` and `target_rank` are its log-probability and rank in the model's output.
    """

    tokens: List[int]
    points: Dict[str, Point]
    top: List[Candidate]
    attn: Dict[int, List[List[float]]] = field(default_factory=dict)
    logit_lens: List[LensRow] = field(default_factory=list)
    residual_rms: List[float] = field(default_factory=list)
    target: Optional[int] = None
    target_logprob: Optional[float] = None
    target_rank: Optional[int] = None

    @property
    def pos(self) -> int:
        """The position (0 = the first token)."""
        return len(self.tokens) - 1

    @property
    def token(self) -> int:
        """The token fed at this position."""
        return self.tokens[-1]

    @property
    def choice(self) -> int:
        """The model's top next token (greedy decoding's choice)."""
        return self.top[0].id


class TraceSession:
    """Feed tokens one at a time (`feed`) or as a prompt block (`prefill`), each position analysed into a `Position`.

    A session is one sequence: it starts by emptying the model's KV cache. With `lens_mid` the logit
    lens also reads each layer's stream after attention (`layers.{i}.resid_mid`, see `MID`).
    """

    def __init__(self, model: Qwen2ForCausalLM, selection: Selection, top_k: int = 5, lens: bool = True,
                 lens_mid: bool = False) -> None:  # fmt: skip
        if top_k < 1:
            raise UsageError(f"--top-k must be 1 or more, got {top_k}")
        self.model = model
        self.selection = selection
        self.top_k = top_k
        self.lens = lens
        n_layers = model.config.num_hidden_layers
        self.names = [name for name in point_names(n_layers) if selection.chosen(name)]
        self.streams = ["embed_tokens"] + [f"layers.{i}" for i in range(n_layers)]
        self.lens_streams = ["embed_tokens"]
        for i in selection.layers:
            self.lens_streams += [f"layers.{i}.{MID}", f"layers.{i}"] if lens_mid else [f"layers.{i}"]
        self.wanted = set(self.names) | set(self.streams)
        self.wanted |= {f"layers.{i}.self_attn.attn_weights" for i in selection.layers}
        self.wanted |= {f"layers.{i}.self_attn.o_proj" for i in selection.layers} if lens_mid else set()
        self.tokens: list[int] = []
        model.reset()

    def feed(self, token: int, target: int | None = None) -> Position:
        """Run `token` at the next position; return what was traced there.

        `target`, the token known to come next (`--target`), gets its log-probability and rank in the lens.
        """
        pos = self.model.pos
        recorder = Recorder(self.wanted.__contains__)
        logits = self.model.forward(token, pos, recorder)  # [vocab]
        self.tokens.append(token)
        return self._position(recorder.points[pos], logits, target)

    def prefill(self, tokens: Sequence[int], targets: Sequence[int | None] = ()) -> list[Position]:
        """Run `tokens` as generation runs a prompt, through `Qwen2ForCausalLM.prefill`; a `Position` for each.

        The values are those of a token-by-token `feed` (to rounding), unless a planted bug is in
        prefill only (`no-causal-mask`). Prefill computes the output head at the last token only;
        the others get it from `prefill_logits`, as `forward` would compute it. `targets[t]` is
        token t's target, as in `feed`.
        """
        start = self.model.pos
        recorder = Recorder(self.wanted.__contains__)
        logits = prefill_logits(self.model, tokens, recorder)
        positions = []
        for t, token in enumerate(tokens):
            self.tokens.append(token)
            target = targets[t] if t < len(targets) else None
            positions.append(self._position(recorder.points[start + t], logits[start + t], target))
        return positions

    def _position(self, seen: dict[str, Point], logits: list[float], target: int | None) -> Position:
        """The analyses of one position, from its recorded points and its logits."""
        chosen = {name: seen[name] for name in self.names}
        position = Position(list(self.tokens), chosen, top_tokens(logits, self.top_k))
        position.attn = {i: attention(seen[f"layers.{i}.self_attn.attn_weights"]) for i in self.selection.layers}
        position.residual_rms = [summarize(seen[name]).rms for name in self.streams]
        if self.lens:
            streams = [(name, _stream(seen, name)) for name in self.lens_streams]
            position.logit_lens = logit_lens(self.model, streams, logits, target)
        if target is not None:
            position.target, position.target_logprob = target, log_probability(logits, target)
            position.target_rank = rank(logits, target)
        return position


def _stream(seen: dict[str, Point], name: str) -> Vector:
    """A residual stream by its lens name; `layers.{i}.resid_mid` is the stream before layer i plus its attention."""
    if not name.endswith(MID):
        return seen[name].values
    layer = int(name.split(".")[1])
    before = seen["embed_tokens" if layer == 0 else f"layers.{layer - 1}"].values
    return [h + o for h, o in zip(before, seen[f"layers.{layer}.self_attn.o_proj"].values)]


def prefill_logits(model: Qwen2ForCausalLM, ids: Sequence[int], hook: Hook | None = None,
                   positions: Iterable[int] | None = None) -> dict[int, list[float]]:  # fmt: skip
    """Prefill `ids` after what the cache holds; the logits at `positions` (default: every one of them).

    `Qwen2ForCausalLM.prefill` runs the output head at the last position only. For the others this
    runs the final norm and the head on the residual stream prefill left there, as `forward` would:
    the hook sees `norm` and `logits` at those positions too, and the head's weights are read once
    for every `TOKENS_PER_PASS` positions.
    """
    start, last_layer = model.pos, f"layers.{model.config.num_hidden_layers - 1}"
    wanted = set(range(start, start + len(ids)) if positions is None else positions)
    streams: dict[int, tuple[float, ...]] = {}

    def keep(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> None:
        if name == last_layer and pos in wanted:
            streams[pos] = values

    last = start + len(ids) - 1
    out = {last: model.prefill(ids, compose_hooks(hook, keep))}
    rest = sorted(pos for pos in streams if pos != last)
    points = [Points(hook, pos, model.planted) for pos in rest]
    normed = [at("norm", model.norm(streams[at.pos])) for at in points]  # [896] each
    for at, logits in zip(points, model.lm_head.tokens(normed)):  # [151936] each
        out[at.pos] = at("logits", logits)
    return {pos: out[pos] for pos in sorted(wanted)}


# ------------------------------------------------------------------ text


def show_token(token: int, pieces: Pieces) -> str:
    """A token for the terminal: its text quoted (`' Paris'`), or `#id` without a tokenizer."""
    return token_label(token, pieces(token))


def token_label(token: int, text: str | None) -> str:
    """`' Paris'` (the text quoted), or `#9625` when there is no text."""
    return f"#{token}" if text is None else repr(text)


def fit(text: str, width: int) -> str:
    """`text` in exactly `width` terminal columns: cut with an ellipsis, or padded (CJK characters take 2).

    ```python
    >>> fit("'hello world'", 8) + "|", fit("'巴黎'", 8) + "|"
    ("'hello …|", "'巴黎'  |")

    ```
    """
    columns = [2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text]
    if sum(columns) > width:
        kept, used = 0, 0
        while used + columns[kept] <= width - 1:
            used += columns[kept]
            kept += 1
        text, columns = text[:kept] + "\u2026", columns[:kept] + [1]
    return text + " " * (width - sum(columns))


def format_position(position: Position, pieces: Pieces) -> str:
    """The text the `trace` command prints for one position."""
    text = pieces(position.token)
    lines = [f"=== position {position.pos}: token {position.token}" + ("" if text is None else f" {text!r}")]
    lines += [format_summary(name, summarize(point)) for name, point in position.points.items()]
    lines += format_top(position.top, pieces)
    lines += format_attention(position, pieces)
    lines += format_lens(position, pieces)
    return "\n".join(lines)


def format_top(top: Sequence[Candidate], pieces: Pieces) -> list[str]:
    """The candidates, numbered from 1 (the numbers `--step` takes)."""
    lines = [f"top {len(top)} next tokens (softmax of the logits: temperature 1, no filtering):",
             f"  {'#':>3} {'id':>7}  {'token':<20} {'logit':>9}  {'p':>6}"]  # fmt: skip
    for n, c in enumerate(top, 1):
        lines.append(f"  {n:>2}. {c.id:>7}  {fit(show_token(c.id, pieces), 20)} {c.logit:9.4f}  {c.probability:.4f}")
    return lines


def format_attention(position: Position, pieces: Pieces, shown: int = 3) -> list[str]:
    """Per layer: the positions the heads read most on average, then the position each head reads most."""
    if not position.attn:
        return []
    heads = len(next(iter(position.attn.values())))
    lines = [f"attention of position {position.pos}: the {shown} positions read most (mean of {heads} heads) "
             "| the position each head reads most"]  # fmt: skip
    for layer, weights in position.attn.items():
        mean = mean_over_heads(weights)
        best = heapq.nlargest(shown, range(len(mean)), key=mean.__getitem__)
        most = "  ".join(f"{t:>3} {fit(show_token(position.tokens[t], pieces), 12)} {mean[t]:.2f}" for t in best)
        strongest = " ".join(str(argmax(head)) for head in weights)
        lines.append(f"  layer {layer:>2}: {most:<{(22 * shown) - 2}}  | {strongest}")
    return lines


def format_lens(position: Position, pieces: Pieces) -> list[str]:
    """The logit-lens table: each residual stream's top token, where the final choice stands there, the
    entropy of the stream's distribution and its KL divergence from the final one (nats); with a target,
    the target's log-probability and rank."""
    if not position.logit_lens:
        return []
    final = show_token(position.choice, pieces)
    width = max(13, max(len(row.point) for row in position.logit_lens))
    head = (f"  {'stream':<{width}} {'top token':<20} {'p':>6}   {'rank of ' + final:>20}  {'its p':>6}  "
            f"{'entropy':>7}  {'KL':>7}")
    target = "" if position.target is None else show_token(position.target, pieces)
    lines = [f"logit lens (final norm + output head on each residual stream; final choice {final}):",
             head + (f"  {'target ' + target:>24} {'rank':>7}" if target else "")]  # fmt: skip
    for row in position.logit_lens:
        line = (f"  {row.point:<{width}} {fit(show_token(row.id, pieces), 20)} {row.probability:.4f}   "
                f"{row.final_rank:>20}  {row.final_probability:.4f}  {row.entropy:7.3f}  {row.kl:7.3f}")  # fmt: skip
        if row.target_logprob is not None:
            line += f"  {'log p ' + format(row.target_logprob, '.3f'):>24} {row.target_rank:>7}"
        lines.append(line)
    return lines


def format_target(positions: Sequence[Position], pieces: Pieces) -> list[str]:
    """`--target`: the log-probability (and rank) of each target token at every lens stream, one column per token.

    The last row's sum is the continuation's log-probability under the model: log p(target | prompt).
    """
    scored = [p for p in positions if p.target is not None and p.logit_lens]
    if not scored:
        return []
    streams = [row.point for row in scored[0].logit_lens]
    width = max(13, max(map(len, streams)))
    columns = [fit(show_token(p.target, pieces), 18) for p in scored if p.target is not None]
    lines = ["target: log p (rank) of each target token, at every residual stream of the position before it",
             f"  {'stream':<{width}} " + " ".join(f"{c:>18}" for c in columns)]  # fmt: skip
    for r, stream in enumerate(streams):
        cells = [f"{p.logit_lens[r].target_logprob:.3f} ({p.logit_lens[r].target_rank})" for p in scored]
        lines.append(f"  {stream:<{width}} " + " ".join(f"{cell:>18}" for cell in cells))
    cells = [f"{p.target_logprob:.3f} ({p.target_rank})" for p in scored]
    lines.append(f"  {'model output':<{width}} " + " ".join(f"{cell:>18}" for cell in cells))
    total = math.fsum(p.target_logprob or 0.0 for p in scored)
    lines.append(f"  log p(target | prompt) = {total:.4f} nats ({len(scored)} tokens)")
    return lines


# ------------------------------------------------------------------ JSON


def to_json(positions: Sequence[Position], pieces: Pieces) -> dict[str, Any]:
    """A trace as JSON-ready data: the tokens, then per position its points by name, `top`, `attn`, `logit_lens`.

    `attn` maps `layers.{i}` to that layer's weights at the position, [heads, pos + 1]; a piece is
    the token's text, or null without a tokenizer.
    """
    tokens = positions[-1].tokens if positions else []
    return {
        "tokens": [{"id": token, "piece": pieces(token)} for token in tokens],
        "positions": [_position_json(position, pieces) for position in positions],
    }


def _position_json(position: Position, pieces: Pieces) -> dict[str, Any]:
    return {
        "pos": position.pos,
        "token": position.token,
        "piece": pieces(position.token),
        "points": {name: {"shape": list(p.shape), "values": p.values.tolist()} for name, p in position.points.items()},
        "top": [{"id": c.id, "piece": pieces(c.id), "logit": c.logit, "probability": c.probability}
                for c in position.top],  # fmt: skip
        "attn": {f"layers.{layer}": weights for layer, weights in position.attn.items()},
        "logit_lens": [dict(row._asdict(), piece=pieces(row.id)) for row in position.logit_lens],
        "target": None if position.target is None else {"id": position.target, "piece": pieces(position.target),
                                                         "logprob": position.target_logprob,
                                                         "rank": position.target_rank},  # fmt: skip
        "residual_rms": dict(zip(["embed_tokens"] + [f"layers.{i}" for i in range(len(position.residual_rms) - 1)],
                                 position.residual_rms)),  # fmt: skip
    }


def write_json(path: str, positions: Sequence[Position], pieces: Pieces) -> None:
    """Write `to_json` of a trace to `path`."""
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(to_json(positions, pieces), f)
    except OSError as e:
        raise UsageError(f"{path}: cannot write the trace: {e.strerror}") from None


# ------------------------------------------------------------------ a run: the prompt, then chosen tokens


def token_pieces(tokenizer: Tokenizer | None) -> Pieces:
    """Token id -> its text with this tokenizer (None without one, or for an id it does not know)."""
    if tokenizer is None:
        return lambda token: None
    known = tokenizer
    return lambda token: known.decode([token]) if known.id_to_token(token) is not None else None


def choose_interactively(position: Position, read_line: Callable[[], Optional[str]],
                         warn: Callable[[str], None]) -> int | None:  # fmt: skip
    """`--step`: an empty line takes candidate 1 (the model's choice), a number n candidate n, `q` stops.

    One answer a line, so a file or a pipe can drive it; the end of input stops too.

    ```python
    >>> top = [Candidate(7, 2.0, 0.7), Candidate(3, 1.0, 0.3)]
    >>> answers = iter(["", "2", "x", "q"])
    >>> [choose_interactively(Position([5], {}, top), lambda: next(answers), print) for _ in range(3)]
    answer Enter (candidate 1), a number 1..2, or q to stop; got 'x'
    [7, 3, None]

    ```
    """
    while True:
        line = read_line()
        answer = "q" if line is None else line.strip().lower()
        if answer in ("q", "quit"):
            return None
        if not answer:
            return position.choice
        if answer.isdecimal() and 1 <= int(answer) <= len(position.top):
            return position.top[int(answer) - 1].id
        warn(f"answer Enter (candidate 1), a number 1..{len(position.top)}, or q to stop; got {line!r}")


def trace_tokens(session: TraceSession, prompt_ids: Sequence[int], more: int | None,
                 choose: Callable[[Position], Optional[int]], emit: Callable[[Position], None],
                 targets: Sequence[int] = (), prefill: bool = False) -> None:  # fmt: skip
    """Trace the prompt, then up to `more` tokens (None: until `choose` returns None or the context is full).

    Each new token is `choose(position)` of the last position (greedy: `lambda p: p.choice`);
    every traced position goes to `emit` as soon as it is done. `targets` are tokens known to follow
    the prompt (`--target`): they are fed after it (all but the last), and the position before each
    one scores it. With `prefill` the prompt (and targets) go through `TraceSession.prefill`, as
    generation runs a prompt, instead of one token at a time.
    """
    fed = list(prompt_ids) + list(targets[:-1])
    following: list[int | None] = [None] * (len(prompt_ids) - 1) + list(targets)
    following += [None] * (len(fed) - len(following))
    position = None
    if prefill:
        for position in session.prefill(fed, following):
            emit(position)
    else:
        for token, target in zip(fed, following):
            position = session.feed(token, target)
            emit(position)
    added = 0
    model = session.model
    while position is not None and (more is None or added < more) and model.pos < model.max_context:
        chosen = choose(position)
        if chosen is None:
            return
        position = session.feed(chosen)
        emit(position)
        added += 1
