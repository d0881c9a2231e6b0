"""What an experiment can change: the model's components by name, the points to patch, the positions.

A component is a part of the computation whose output joins the residual stream, named after the
Hugging Face module that computes it, with TransformerLens's `head.H` for one attention head:

    name                          its value                                      the hook point it is read at
    layers.L.self_attn.head.H     head H's output o_H, before o_proj [64]        layers.L.self_attn.attn_output[64 H : 64 (H + 1)]
    layers.L.self_attn            the attention block's output o_proj(o) [896]   layers.L.self_attn.o_proj
    layers.L.mlp                  the MLP's output down_proj(...) [896]          layers.L.mlp.down_proj

(o_proj has no bias, so zeroing head H's slice of o_proj's input removes exactly W_o[:, 64 H : 64 (H + 1)] o_H,
the head's contribution, from the stream.) `parse_component` checks a name against the model and says
what is wrong with a bad one; `patch_point` does the same for the points activation patching swaps.

```python
>>> from microqwen.config import Config
>>> config = Config.from_file("tests/fixtures/models/gqa7-hd64-tied/config.json")
>>> parse_component("layers.1.self_attn.head.3", config)
Component(name='layers.1.self_attn.head.3', layer=1, point='layers.1.self_attn.attn_output', start=192, stop=256, head=3)
>>> parse_component("layers.1.self_attn.head.14", config)
Traceback (most recent call last):
...
microqwen.errors.UsageError: layers.1.self_attn.head.14: layer 1 has heads 0..13

```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

from ..config import Config
from ..errors import UsageError
from ..model import LAYER_POINTS
from ..trace import RESIDUAL, parse_ranges

KINDS = "layers.L.self_attn.head.H, layers.L.self_attn or layers.L.mlp"


@dataclass(frozen=True)
class Component:
    """A component of the model: its name, its layer (and head), and where its value is, values
    [start, stop) of `point`."""

    name: str
    layer: int
    point: str
    start: int
    stop: int
    head: Optional[int] = None


def head_name(layer: int, head: int) -> str:
    """`layers.3.self_attn.head.5`."""
    return f"layers.{layer}.self_attn.head.{head}"


def parse_component(name: str, config: Config) -> Component:
    """The component called `name` in this model; a `UsageError` naming the valid range if there is none."""
    match = re.fullmatch(r"layers\.(\d+)\.(self_attn(?:\.head\.(\d+))?|mlp)", name.strip())
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    if not match:
        raise UsageError(f"unknown component {name!r}: give {KINDS} (L in 0..{layers - 1}, H in 0..{heads - 1})")
    layer, part, head = int(match.group(1)), match.group(2), match.group(3)
    if layer >= layers:
        raise UsageError(f"{name}: this model has layers 0..{layers - 1}")
    prefix = f"layers.{layer}"
    if part == "mlp":
        return Component(name, layer, f"{prefix}.mlp.down_proj", 0, config.hidden_size)
    if head is None:
        return Component(name, layer, f"{prefix}.self_attn.o_proj", 0, config.hidden_size)
    if int(head) >= heads:
        raise UsageError(f"{name}: layer {layer} has heads 0..{heads - 1}")
    width = config.head_dim
    first = int(head) * width
    return Component(name, layer, f"{prefix}.self_attn.attn_output", first, first + width, int(head))


def every_head(config: Config) -> list[Component]:
    """Every attention head of the model, layer by layer (24 x 14 = 336 on Qwen2.5-0.5B)."""
    return [parse_component(head_name(i, h), config)
            for i in range(config.num_hidden_layers) for h in range(config.num_attention_heads)]  # fmt: skip


def patch_point(point: str, num_layers: int) -> list[str]:
    """The points, one per layer, that patching swaps: `residual` (the stream after each layer, `layers.{i}`,
    with `embed_tokens` before them) or a point inside each layer (`mlp.down_proj`: `layers.{i}.mlp.down_proj`)."""
    if point == RESIDUAL:
        return ["embed_tokens"] + [f"layers.{i}" for i in range(num_layers)]
    if point not in LAYER_POINTS:
        raise UsageError(f"unknown point {point!r} to patch: the points are {RESIDUAL}, {', '.join(LAYER_POINTS)}")
    return [f"layers.{i}.{point}" for i in range(num_layers)]


def parse_positions(spec: str | None, length: int) -> tuple[int, ...] | None:
    """`--positions 0,3-5` -> (0, 3, 4, 5), checked against a prompt of `length` tokens; None stays None (all)."""
    return None if spec is None else parse_ranges(spec, length, "--positions", f"the prompt has {length} tokens, positions")


def check_positions(positions: Sequence[int] | None, length: int) -> None:
    """Positions must lie in the prompt: 0..length-1."""
    for pos in positions or ():
        if not 0 <= pos < length:
            raise UsageError(f"position {pos} is outside the prompt of {length} tokens (positions 0..{length - 1})")
