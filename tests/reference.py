"""The forward-pass reference fixtures, read without torch: tests/fixtures/models/<name>/.

Each fixture directory is a small random Qwen2 model in the real layout (config.json,
model.safetensors in bfloat16) and `reference.safetensors`: what transformers computed for it
(scripts/make_model_fixtures.py, see tests/fixtures/models/README.md). The reference holds

    input_ids [T] I64, logits [T, V], greedy_ids [16] I64, greedy_logits [16, V], rotary_emb.inv_freq [head_dim / 2]
    and every trace point (`trace_point_names`), F32, with the shapes of `trace_shapes`;
    for the models in LAB_MODELS also the lab's references, with the shapes of `lab_shapes`.

>>> ref = load_reference(model_dirs()[0] / "reference.safetensors")   # doctest: +SKIP
>>> shape, values = ref["layers.0.self_attn.q_proj"]                   # (T, heads * head_dim), floats
"""

from __future__ import annotations

import pathlib
import sys
from array import array
from typing import Dict, List, Sequence, Tuple, Union

from microqwen.config import Config
from microqwen.model import point_names
from microqwen.safetensors import SafetensorsFile

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "models"

GREEDY_TOKENS = 16

Values = Union[List[float], List[int]]
Reference = Dict[str, Tuple[Tuple[int, ...], Values]]

TYPECODES = {"F32": "f", "I64": "q"}
"""array typecodes of the dtypes a reference file uses (4-byte float, 8-byte signed int)."""

def model_dirs() -> list[pathlib.Path]:
    """Every fixture model directory, by name."""
    return sorted(p.parent for p in FIXTURES.glob("*/config.json"))


def load_reference(path: str | pathlib.Path) -> Reference:
    """name -> (shape, values) for every tensor of a reference file; F32 as floats, I64 as ints."""
    with SafetensorsFile(str(path)) as f:
        return {name: (info.shape, _values(f, name, info.dtype)) for name, info in f.tensors.items()}


def load_metadata(path: str | pathlib.Path) -> dict[str, str]:
    """The reference file's __metadata__: versions, seeds, statistics (all strings)."""
    with SafetensorsFile(str(path)) as f:
        return dict(f.metadata)


def _values(f: SafetensorsFile, name: str, dtype: str) -> Values:
    if dtype not in TYPECODES:
        raise ValueError(f"{f.path}: tensor {name!r} is {dtype}; a reference file holds only F32 and I64")
    values = array(TYPECODES[dtype])
    with f.data(name) as view:
        values.frombytes(view)
    if sys.byteorder == "big":  # safetensors data is little-endian
        values.byteswap()
    result: Values = values.tolist()
    return result


def trace_point_names(num_hidden_layers: int) -> list[str]:
    """The trace points a reference file holds: microqwen's, but `logits` (stored [T, V] on its own)."""
    return point_names(num_hidden_layers)[:-1]


def layer_count(ref: Reference) -> int:
    """How many decoder layers the reference recorded (each has one attn_weights tensor)."""
    return sum(name.endswith(".self_attn.attn_weights") for name in ref)


def argmax(values: Sequence[float]) -> int:
    """The index of the largest value (the first one, on a tie)."""
    return max(range(len(values)), key=values.__getitem__)


def max_difference(ours: Sequence[float], theirs: Sequence[float]) -> float:
    """The largest absolute difference between two vectors of the same length."""
    assert len(ours) == len(theirs)
    return max(abs(a - b) for a, b in zip(ours, theirs))


def trace_shapes(config: Config, length: int) -> dict[str, tuple[int, ...]]:
    """The shape of every trace point for a prompt of `length` tokens."""
    widths = {
        "self_attn.q_proj": config.q_size,
        "self_attn.rope_q": config.q_size,
        "self_attn.k_proj": config.kv_size,
        "self_attn.rope_k": config.kv_size,
        "self_attn.v_proj": config.kv_size,
        "self_attn.attn_output": config.q_size,
        "mlp.gate_proj": config.intermediate_size,
        "mlp.up_proj": config.intermediate_size,
    }
    shapes: dict[str, tuple[int, ...]] = {}
    for name in trace_point_names(config.num_hidden_layers):
        point = name.split(".", 2)[2] if name.count(".") >= 2 else ""
        if point == "self_attn.attn_weights":
            shapes[name] = (config.num_attention_heads, length, length)
        else:
            shapes[name] = (length, widths.get(point, config.hidden_size))
    return shapes


def token_ids(ref: Reference, name: str = "input_ids") -> list[int]:
    """An I64 tensor of ids (`input_ids`, `greedy_ids`) as a list of ints."""
    return [int(i) for i in ref[name][1]]


def rows(shape: tuple[int, ...], values: Values) -> list[Values]:
    """Split a flat row-major tensor into its rows of length shape[-1]."""
    width = shape[-1]
    return [values[i : i + width] for i in range(0, len(values), width)]


LAB_MODELS = ("gqa7-hd64-tied", "gqa2-hd64-untied", "mqa-hd32-untied")
"""The fixtures with the lab's references (scripts/make_model_fixtures.py `lab_references`)."""

NO_MASK_TOKENS = 8
STEER_LAYER, STEER_SCALE, STEER_TOKENS = 1, 4.0, 8
MUTATED = ("rope-theta-1e4", "interleaved-rope", "scores-times-sqrt-d", "rmsnorm-no-eps")
"""The planted bugs the reference also ran over the whole prompt (and `no-causal-mask` over NO_MASK_TOKENS)."""


def patch_cells(config: Config, length: int) -> list[tuple[int, int]]:
    """The (layer, position) cells of the residual stream the reference patched: the corrupted position
    (the middle one) in layers 0 and 1, and the last position in layer 1 and the last layer."""
    middle, last_layer = length // 2, config.num_hidden_layers - 1
    return [(0, middle), (1, middle), (1, length - 1), (last_layer, length - 1)]


def lab_shapes(config: Config, length: int) -> dict[str, tuple[int, ...]]:
    """The shape of every lab reference tensor of a prompt of `length` tokens."""
    vocab, hidden = config.vocab_size, config.hidden_size
    shapes: dict[str, tuple[int, ...]] = {name: (vocab,) for name in (
        "ablate.mean.layers.1.self_attn.head.1", "ablate.zero.layers.0.self_attn", "ablate.mean.layers.2.mlp",
        "ablate.zero.layers.1.mlp@3,7", "patch.corrupted_logits", "patch.layers.1.self_attn.head.1")}  # fmt: skip
    shapes.update({f"patch.layers.{layer}@{pos}": (vocab,) for layer, pos in patch_cells(config, length)})
    shapes.update({"patch.corrupted_ids": (length,), "steer.vector": (hidden,), "steer.difference": (hidden,),
                   "steer.logits": (length, vocab), "steer.greedy_ids": (STEER_TOKENS,), "dla.target": (1,),
                   "dla.contributions": (1 + config.num_hidden_layers * (config.num_attention_heads + 1),)})  # fmt: skip
    shapes.update({f"mutated.{name}": (length, vocab) for name in MUTATED})
    shapes["mutated.no-causal-mask"] = (NO_MASK_TOKENS, vocab)
    shapes["mutated.scores-times-sqrt-d.layer_0_attention"] = (config.num_attention_heads, length, length)
    return shapes
