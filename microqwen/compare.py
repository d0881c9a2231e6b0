"""Comparing a trace with the reference: find the first operation where two implementations part.

A port of a model is right when every intermediate value matches the reference's, not only the
logits at the end. When the logits are wrong, comparing trace point by trace point, in the order a
token meets them, names the first operation that went wrong: everything before it agrees, and
everything after it inherits the error. With RoPE pairing dimension i with i + 1 (the original
paper's pairs) instead of i + 32 (Qwen's "rotate half"), the comparison reads

    [OK]   embed_tokens, layers.0.input_layernorm, layers.0.self_attn.q_proj, k_proj, v_proj
    [DIFF] layers.0.self_attn.rope_q      <- the first difference: the bug is in RoPE
    [DIFF] every point after it

and position 0 still agrees there (a rotation by angle 0 changes nothing): the error starts at
position 1.

The reference trace is a safetensors file (`scripts/reference_trace.py` records one with
transformers' forward hooks), laid out as the test fixtures' `reference.safetensors`:

    input_ids                             I64 [T]            the prompt
    <trace point>                         F32 [T, width]     e.g. layers.3.self_attn.q_proj [T, 896]
    layers.{i}.self_attn.attn_weights     F32 [heads, T, T]  row p: position p's weights (0 after p)
    logits                                F32 [T, vocab]

Why not JSON: a trace of 10 tokens of Qwen2.5-0.5B holds about 5 million numbers (1.5 million of
them logits). As float32 that is 20 MB, exact to the bit; as JSON text it is about 100 MB that
must be parsed number by number, and a decimal number is only exact if it is written with enough
digits. safetensors is what the reference already writes, and microqwen reads it with its own
reader (`microqwen.safetensors`).

A worked example of one point's comparison (positions 0 and 1, two values each):

    >>> diff = compare_rows("x", [[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.5]], tolerance=1e-3)
    >>> diff.max_abs, diff.mean_abs, diff.ok, diff.first_position
    (0.5, 0.125, False, 1)
"""

from __future__ import annotations

import math
import re
from array import array
from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

from .errors import FormatError, UsageError
from .safetensors import SafetensorsFile
from .trace import Position

Reference = Dict[str, Tuple[Tuple[int, ...], "array[float]"]]
"""name -> (shape, values flat) of every F32 tensor of a reference trace file."""

TYPECODES = {"F32": "f", "I64": "q"}
"""The dtypes a reference trace holds, as `array` typecodes (4-byte float, 8-byte signed int)."""


def read_reference(path: str) -> tuple[list[int], Reference]:
    """The prompt (`input_ids` I64 [T]) and every F32 tensor of a reference trace file."""
    ids: list[int] | None = None
    tensors: Reference = {}
    with SafetensorsFile(path) as f:
        for name, info in f.tensors.items():
            if info.dtype not in TYPECODES:
                raise FormatError(f"{path}: tensor {name!r} is {info.dtype}; a reference trace holds F32 and I64")
            values = _read(f, name, TYPECODES[info.dtype])
            if name == "input_ids":
                if info.dtype != "I64" or len(info.shape) != 1:
                    raise FormatError(f"{path}: input_ids must be I64 [T], got {info.dtype} {list(info.shape)}")
                ids = [int(i) for i in values]
            elif info.dtype == "F32":
                tensors[name] = (info.shape, values)
    if ids is None:
        raise FormatError(f"{path}: no input_ids tensor: not a reference trace (scripts/reference_trace.py)")
    return ids, tensors


def _read(f: SafetensorsFile, name: str, typecode: str) -> array[Any]:
    values = array(typecode)
    f.read_into(name, values, 0, f.tensors[name].numel)
    return values


def reference_row(reference: Reference, name: str, pos: int, path: str) -> list[float]:
    """The reference's values of point `name` at position `pos`, in the layout the tracer reports.

    [T, width] -> row pos; attention [heads, T, T] -> row pos of each head, up to column pos.
    """
    shape, values = reference[name]
    if name.endswith("attn_weights"):
        if len(shape) != 3 or shape[1] != shape[2] or pos >= shape[1]:
            raise FormatError(f"{path}: {name} must be [heads, T, T] with T > {pos}, got {list(shape)}")
        heads, length = shape[0], shape[1]
        row: list[float] = []
        for h in range(heads):
            start = (h * length + pos) * length
            row += values[start : start + pos + 1].tolist()
        return row
    if len(shape) != 2 or pos >= shape[0]:
        raise FormatError(f"{path}: {name} must be [T, width] with T > {pos}, got {list(shape)}")
    width = shape[1]
    return values[pos * width : (pos + 1) * width].tolist()


@dataclass(frozen=True)
class PointDiff:
    """How far one trace point is from the reference, over all positions.

    Attributes:
        name: the trace point.
        max_abs: the largest |ours - reference| (NaN if either side has a NaN).
        mean_abs: the mean |ours - reference| over every value at every position.
        tolerance: the largest difference still counted as equal.
        first_position: the first position whose values differ beyond the tolerance, or None.
    """

    name: str
    max_abs: float
    mean_abs: float
    tolerance: float
    first_position: int | None

    @property
    def ok(self) -> bool:
        """Within the tolerance everywhere (a NaN is never within)."""
        return self.max_abs <= self.tolerance


def compare_rows(name: str, ours: Sequence[Sequence[float]], theirs: Sequence[Sequence[float]],
                 tolerance: float) -> PointDiff:  # fmt: skip
    """Compare one point position by position: ours[pos] against theirs[pos]."""
    worst, total, count, first = 0.0, 0.0, 0, None
    for pos, (a, b) in enumerate(zip(ours, theirs)):
        diffs = [abs(x - y) for x, y in zip(a, b)]
        row_worst = math.nan if any(math.isnan(d) for d in diffs) else max(diffs, default=0.0)
        if len(a) != len(b):  # another shape (a planted bug's attention sees more positions): as far apart as can be
            row_worst = math.inf
        if first is None and not row_worst <= tolerance:
            first = pos
        worst = row_worst if math.isnan(row_worst) or math.isnan(worst) else max(worst, row_worst)
        total += math.fsum(diffs)
        count += len(diffs)
    return PointDiff(name, worst, total / count if count else 0.0, tolerance, first)


def compare(positions: Sequence[Position], reference: Reference, tolerance: float,
            path: str = "REF") -> tuple[list[PointDiff], list[str]]:  # fmt: skip
    """Compare every traced point that the reference holds, in forward order.

    Returns the differences, and the names of the traced points the reference lacks.
    """
    if not positions:
        return [], []
    diffs, missing = [], []
    for name, point in positions[0].points.items():
        if name not in reference:
            missing.append(name)
            continue
        theirs = [reference_row(reference, name, p.pos, path) for p in positions]
        ours = [p.points[name].values for p in positions]
        for pos, (a, b) in enumerate(zip(ours, theirs)):
            if len(a) != len(b):
                raise UsageError(f"{path}: {name} has {len(b)} values at position {pos}, the trace {len(a)}: "
                                 "is it a trace of this model?")  # fmt: skip
        diffs.append(compare_rows(name, ours, theirs, tolerance))
    return diffs, missing


def compare_traces(positions: Sequence[Position], baseline: Sequence[Position], tolerance: float = 0.0) -> list[PointDiff]:
    """Compare two traces of one prompt point by point, e.g. a mutated model against the unmutated one.

    Both are microqwen's, computed the same way but for the planted bug, so by default any difference
    at all counts (tolerance 0). A point whose shape differs at a position differs by infinity there.
    """
    if not positions:
        return []
    if [p.tokens for p in positions] != [p.tokens for p in baseline]:
        raise UsageError("the two traces are not of the same tokens")
    diffs = []
    for name in positions[0].points:
        ours, theirs = [p.points[name].values for p in positions], [p.points[name].values for p in baseline]
        diffs.append(compare_rows(name, ours, theirs, tolerance))
    return diffs


def format_growth(diffs: Sequence[PointDiff]) -> str:
    """How the difference grows through the model: max |difference| of the residual stream after each layer."""
    streams = [d for d in diffs if d.name == "embed_tokens" or re.fullmatch(r"layers\.\d+", d.name)]
    if not streams:
        return ""
    cells = ", ".join(f"{d.name.replace('layers.', '')} {d.max_abs:.2g}" for d in streams)
    return f"max |difference| of the residual stream after each layer: {cells}"


def first_difference(diffs: Sequence[PointDiff]) -> PointDiff | None:
    """The first point, in forward order, that differs beyond the tolerance."""
    return next((d for d in diffs if not d.ok), None)


def format_comparison(diffs: Sequence[PointDiff], missing: Sequence[str], positions: int, path: str) -> str:
    """[OK]/[DIFF] per point with max and mean |ours - reference|, then the first difference."""
    lines = [f"{'[OK]' if d.ok else '[DIFF]':<7}{d.name:<35} max {d.max_abs:.3e}  mean {d.mean_abs:.3e}"
             + ("" if d.first_position is None else f"  (from position {d.first_position})") for d in diffs]  # fmt: skip
    differ = [d for d in diffs if not d.ok]
    tolerance = diffs[0].tolerance if diffs else 0.0
    lines.append(f"compared {len(diffs)} points at {positions} positions with {path} (tolerance {tolerance:g}): "
                 f"{len(differ)} differ")  # fmt: skip
    if missing:
        lines.append(f"not in {path}, not compared: {', '.join(missing)}")
    first = first_difference(diffs)
    if first is not None:
        lines.append(f"first difference: {first.name} (max |ours - reference| {first.max_abs:.4g} "
                     f"> {first.tolerance:g}, from position {first.first_position})")  # fmt: skip
    return "\n".join(lines)
