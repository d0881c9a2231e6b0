"""The precision lab: the same forward pass with every value rounded to float32 or to bfloat16.

microqwen computes in Python floats (float64). A port in C or on a GPU usually computes in float32,
and one that keeps its activations in bfloat16 (as the C project microqwen grew out of did) rounds
every value to 8 significant bits. A hook that rounds every named point as it is computed
(`rounding_hook`) shows what that costs, point by point, against the float64 run:

    relative drift of a point = ||rounded - float64|| / ||float64||      over all its values at every position

float32 keeps about 7 decimal digits (a drift near 1e-7 per point, growing slowly through the layers);
bfloat16 about 2-3 (near 4e-3 per point). The values between two points are still computed in
float64 (e.g. the sums inside a dot product), so this is the cost of storing each result in the
narrow type. Then: at which prompt positions does the next-token choice change, and when does a greedy
continuation part from the float64 one.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from .. import bf16
from ..errors import UsageError
from ..generation import generate
from ..model import LAYER_POINTS, Hook, Qwen2ForCausalLM, point_names
from ..sampling import Sampler, SamplingParams, argmax
from ..trace import Recorder, fit, prefill_logits, show_token
from .runs import token_text


def _float32(values: Sequence[float]) -> list[float]:
    """Each value rounded to the nearest float32."""
    return array("f", values).tolist()


ROUNDINGS: Dict[str, Callable[[Sequence[float]], List[float]]] = {"float32": _float32, "bfloat16": bf16.narrow}
"""The narrow types, and how a value is rounded to each (ties to even)."""


def rounding_hook(dtype: str) -> Hook:
    """A hook that replaces every point's values by the same values rounded to `dtype`."""
    if dtype not in ROUNDINGS:
        raise UsageError(f"unknown precision {dtype!r}: the precisions are {', '.join(ROUNDINGS)}")
    rounding = ROUNDINGS[dtype]

    def hook(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> list[float]:
        return rounding(values)

    return hook


@dataclass
class PointDrift:
    """How far one point drifts when every point is rounded: ||rounded - float64|| / ||float64||, and max |difference|."""

    name: str
    relative: float
    max_abs: float


@dataclass
class Choice:
    """The next token after one prompt position, in float64 and rounded."""

    pos: int
    float64_id: int
    float64_text: Optional[str]
    rounded_id: int
    rounded_text: Optional[str]


@dataclass
class Precision:
    """The precision lab's findings for one prompt.

    Attributes:
        dtype: `float32` or `bfloat16`.
        points: every point's drift, in forward order.
        choices: the next token after each prompt position, both ways.
        float64_ids, rounded_ids: greedy continuations; `parted` is the first step where they differ (None: never).
    """

    dtype: str
    points: List[PointDrift]
    choices: List[Choice]
    float64_ids: List[int]
    rounded_ids: List[int]
    parted: Optional[int]


class _Drift:
    """A hook that rounds every point and compares it with the float64 run's values, as the pass goes."""

    def __init__(self, dtype: str, reference: Recorder) -> None:
        self.round = ROUNDINGS[dtype]
        self.reference = reference.points
        self.squares: Dict[str, List[float]] = {}  # name -> [sum of differences^2, sum of values^2, max |difference|]

    def __call__(self, name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> list[float]:
        rounded = self.round(values)
        theirs = self.reference[pos][name].values
        total = self.squares.setdefault(name, [0.0, 0.0, 0.0])
        diffs = [r - t for r, t in zip(rounded, theirs)]
        total[0] += math.fsum(d * d for d in diffs)
        total[1] += math.fsum(t * t for t in theirs)
        total[2] = max(total[2], max((abs(d) for d in diffs), default=0.0))
        return rounded


def compare_precision(model: Qwen2ForCausalLM, ids: Sequence[int], dtype: str = "bfloat16",
                      max_new_tokens: int = 8) -> Precision:
    """Run `ids` in float64 and with every point rounded to `dtype`; compare point by point, and the choices."""
    rounding_hook(dtype)  # an unknown dtype is an error before anything runs
    if not ids:
        raise UsageError("the prompt is empty")
    names = point_names(model.config.num_hidden_layers)
    reference = Recorder(lambda name: True)
    model.reset()
    exact = prefill_logits(model, ids, reference)
    drift = _Drift(dtype, reference)
    model.reset()
    rounded = prefill_logits(model, ids, drift)
    points = []
    for name in names:
        squares, values, worst = drift.squares[name]
        points.append(PointDrift(name, math.sqrt(squares / values) if values else 0.0, worst))
    choices = []
    for pos in sorted(exact):
        a, b = argmax(exact[pos]), argmax(rounded[pos])
        choices.append(Choice(pos, a, token_text(model, a), b, token_text(model, b)))
    continuations = []
    for hook in (None, rounding_hook(dtype)):
        model.reset()
        sampler = Sampler(SamplingParams(temperature=0.0))
        continuations.append([t.id for t in generate(model, ids, max_new_tokens, sampler, hook=hook) if t.id is not None])
    plain, narrow = continuations
    parted = next((i for i, (x, y) in enumerate(zip(plain, narrow)) if x != y), None)
    if parted is None and len(plain) != len(narrow):
        parted = min(len(plain), len(narrow))
    return Precision(dtype, points, choices, plain, narrow, parted)


def format_precision(result: Precision, pieces: Callable[[int], Optional[str]]) -> str:
    """The drift of every point as a layers x points table, then the choices and the continuations."""
    def shown(token: int) -> str:
        return show_token(token, pieces)

    drift = {p.name: p.relative for p in result.points}
    layers = sorted({int(n.split(".")[1]) for n in drift if n.startswith("layers.")})
    kinds = list(LAYER_POINTS) + ["residual"]
    short = [k.split(".")[-1].replace("post_attention_layernorm", "post_norm").replace("input_layernorm", "in_norm")
             for k in kinds]  # fmt: skip
    lines = [f"every point rounded to {result.dtype}: ||rounded - float64|| / ||float64|| over all positions",
             f"  {'embed_tokens':<12} {drift['embed_tokens']:9.2e}",
             "  layer " + " ".join(f"{s[:9]:>9}" for s in short)]  # fmt: skip
    for i in layers:
        cells = [drift[f"layers.{i}.{k}" if k != "residual" else f"layers.{i}"] for k in kinds]
        lines.append(f"  {i:>5} " + " ".join(f"{v:9.2e}" for v in cells))
    lines += [f"  {'norm':<12} {drift['norm']:9.2e}", f"  {'logits':<12} {drift['logits']:9.2e}",
              "next token after each position: float64 | " + result.dtype]  # fmt: skip
    for c in result.choices:
        mark = "" if c.float64_id == c.rounded_id else "   <- changed"
        lines.append(f"  {c.pos:>3}  {fit(shown(c.float64_id), 20)} | {fit(shown(c.rounded_id), 20)}{mark}")
    lines.append(f"greedy continuation, float64:  {[shown(t) for t in result.float64_ids]}")
    lines.append(f"greedy continuation, {result.dtype}: {[shown(t) for t in result.rounded_ids]}")
    lines.append("the continuations agree" if result.parted is None else f"they part at generated token {result.parted}")
    return "\n".join(lines)
