"""Steering (activation addition): add a vector to the residual stream during generation.

At layer L, every position's residual stream after the layer (the point `layers.{L}`) becomes

    h_L  ->  h_L + scale * v                                        v: [896]

for the prompt and for every generated token, as llama.cpp's control vectors do. The vector comes
from a file (`read_vector`: a JSON list of hidden_size numbers), or from two prompts (ActAdd,
Turner et al. 2023): v = h_L(plus) - h_L(minus), their residual streams after layer L at their last
tokens, e.g. " love" minus " hate". `steer` generates with and without it, for a side-by-side look.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

from ..errors import UsageError
from ..generation import generate
from ..jsonparse import parse_file
from ..model import Hook, Qwen2ForCausalLM
from ..sampling import Sampler, SamplingParams
from .runs import Runs


def check_layer(model: Qwen2ForCausalLM, layer: int) -> None:
    """A layer number must be one of the model's."""
    layers = model.config.num_hidden_layers
    if not 0 <= layer < layers:
        raise UsageError(f"layer {layer}: this model has layers 0..{layers - 1}")


def check_vector(model: Qwen2ForCausalLM, vector: Sequence[float], source: str) -> None:
    """A steering vector must be as wide as the residual stream, and finite."""
    width = model.config.hidden_size
    if len(vector) != width:
        raise UsageError(f"{source}: the vector has {len(vector)} numbers; this model's residual stream has {width}")
    if not all(math.isfinite(v) for v in vector):
        raise UsageError(f"{source}: the vector holds a number that is not finite")


def steering_hook(layer: int, vector: Sequence[float], scale: float = 1.0) -> Hook:
    """A hook that adds `scale * vector` to the residual stream after `layer`, at every position."""
    point = f"layers.{layer}"
    added = [scale * v for v in vector]

    def hook(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> list[float] | None:
        return [h + a for h, a in zip(values, added)] if name == point else None

    return hook


def difference_vector(model: Qwen2ForCausalLM, plus_ids: Sequence[int], minus_ids: Sequence[int],
                      layer: int) -> list[float]:  # fmt: skip
    """h_L(plus) - h_L(minus): the residual streams after `layer` at the two prompts' last tokens."""
    check_layer(model, layer)
    point = f"layers.{layer}"
    plus = Runs(model, plus_ids).run(keep=[point]).points[len(plus_ids) - 1][point]
    minus = Runs(model, minus_ids).run(keep=[point]).points[len(minus_ids) - 1][point]
    return [p - m for p, m in zip(plus, minus)]


def read_vector(path: str, model: Qwen2ForCausalLM) -> list[float]:
    """A steering vector from a JSON file: a list of hidden_size numbers (as `write_vector` writes)."""
    data = parse_file(path)
    if not isinstance(data, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data):
        raise UsageError(f"{path}: a steering vector file holds one JSON list of numbers")
    vector = [float(v) for v in data if isinstance(v, (int, float))]
    check_vector(model, vector, path)
    return vector


def write_vector(path: str, vector: Sequence[float]) -> None:
    """Save a steering vector as a JSON list of numbers (every digit kept: `repr` of each float)."""
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(list(vector)) + "\n")
    except OSError as e:
        raise UsageError(f"{path}: cannot write the vector: {e.strerror}") from None


@dataclass
class Steering:
    """Text generated from one prompt without and with the vector (greedy), and the vector's size.

    Attributes:
        layer, scale: where the vector was added, and how strongly.
        norm: |scale * v|, to compare with the residual stream's own size (`norm_stream`, at the last prompt token).
        plain_ids, steered_ids: the generated token ids; plain_text, steered_text their text ('' without a tokenizer).
    """

    layer: int
    scale: float
    norm: float
    norm_stream: float
    plain_ids: List[int]
    steered_ids: List[int]
    plain_text: str
    steered_text: str


def steer(model: Qwen2ForCausalLM, prompt_ids: Sequence[int], layer: int, vector: Sequence[float],
          scale: float = 1.0, max_new_tokens: int = 32, sampler: Optional[Sampler] = None) -> Steering:  # fmt: skip
    """Generate `max_new_tokens` after the prompt twice: plainly, and with `scale * vector` added at `layer`.

    Greedy unless a `sampler` is given (it is used for both, from the same seed if it has one).
    """
    check_layer(model, layer)
    check_vector(model, vector, "the steering vector")
    point = f"layers.{layer}"
    stream = Runs(model, prompt_ids).run(keep=[point]).points[len(prompt_ids) - 1][point]
    runs = []
    for hook in (None, steering_hook(layer, vector, scale)):
        model.reset()
        chosen = Sampler(sampler.params) if sampler else Sampler(SamplingParams(temperature=0.0))
        tokens = list(generate(model, prompt_ids, max_new_tokens, chosen, hook=hook))
        runs.append(([t.id for t in tokens if t.id is not None], "".join(t.text for t in tokens)))
    (plain_ids, plain_text), (steered_ids, steered_text) = runs
    norm = abs(scale) * math.sqrt(math.fsum(v * v for v in vector))
    return Steering(layer, scale, norm, math.sqrt(math.fsum(h * h for h in stream)), plain_ids, steered_ids,
                    plain_text, steered_text)  # fmt: skip


def format_steering(result: Steering, prompt: str) -> str:
    """The two continuations, one after the other, and how large the added vector is."""
    return "\n".join([
        f"steering: {result.scale:g} x the vector added to the residual stream after layer {result.layer} "
        f"(|added| = {result.norm:.2f}; the stream at the prompt's last token has |h| = {result.norm_stream:.2f})",
        "--- without", prompt + (result.plain_text or ",".join(map(str, result.plain_ids))),
        "--- with", prompt + (result.steered_text or ",".join(map(str, result.steered_ids))),
    ])  # fmt: skip
