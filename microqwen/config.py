"""The Qwen2 configuration: the architecture numbers from config.json, checked.

Qwen2.5-0.5B's config.json says, among other things:

    hidden_size 896            the width of the residual stream
    intermediate_size 4864     the width inside the MLP
    num_hidden_layers 24       decoder layers
    num_attention_heads 14     query heads, each head_dim = 896 / 14 = 64 wide
    num_key_value_heads 2      key/value heads, so n_rep = 14 / 2 = 7 query heads share one
    rope_theta 1000000.0       the RoPE base (10000 was the C project's bug)
    rms_norm_eps 1e-06         added to the mean square in every RMSNorm
    tie_word_embeddings true   the output head reuses embed_tokens.weight

`Config.from_file` reads those keys, refuses a missing or wrong-typed one with a
`ConfigError` naming the key and the file, and derives `head_dim` and `n_rep`.
`Config.from_gguf` reads the same numbers from a GGUF file's `qwen2.*` metadata, where llama.cpp
gives them its own names (`qwen2.embedding_length` is hidden_size, ...).
`expected_shapes` lists every tensor a Qwen2 checkpoint must hold, and
`check_tensors` compares a checkpoint with it and reports every mismatch at once.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Collection, Mapping, Protocol

from . import gguf
from .errors import ConfigError
from .jsonparse import JSON, parse_file

@dataclass(frozen=True)
class Config:
    """A Qwen2 model's shape and constants (names as in config.json and transformers)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int
    rope_theta: float
    rms_norm_eps: float
    head_dim: int
    tie_word_embeddings: bool
    eos_token_ids: tuple[int, ...]

    @property
    def n_rep(self) -> int:
        """Query heads per key/value head (the GQA group size): 14 / 2 = 7."""
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def q_size(self) -> int:
        """Width of all query heads together: 14 x 64 = 896."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Width of all key (or value) heads together: 2 x 64 = 128."""
        return self.num_key_value_heads * self.head_dim

    @classmethod
    def from_file(cls, path: str) -> Config:
        """Read and check config.json."""
        return cls.from_dict(parse_file(path), path)

    @classmethod
    def from_model(cls, path: str) -> Config:
        """The config of a model: a directory's config.json, or a .gguf file's metadata (`from_gguf`)."""
        if not gguf.is_gguf(path):
            return cls.from_file(os.path.join(path, "config.json"))
        with gguf.GGUFFile(path) as f:
            return cls.from_gguf(f.metadata, list(f.tensors), path)

    @classmethod
    def from_dict(cls, raw: JSON, source: str) -> Config:
        """Check a parsed config.json; `source` names it in error messages."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: must be a JSON object")
        _check_supported(raw, source)
        hidden_size = _positive_int(raw, "hidden_size", source)
        heads = _positive_int(raw, "num_attention_heads", source)
        kv_heads = _positive_int(raw, "num_key_value_heads", source)
        if heads % kv_heads:
            raise ConfigError(f"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
        return cls(
            hidden_size=hidden_size,
            intermediate_size=_positive_int(raw, "intermediate_size", source),
            num_hidden_layers=_positive_int(raw, "num_hidden_layers", source),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            vocab_size=_positive_int(raw, "vocab_size", source),
            max_position_embeddings=_positive_int(raw, "max_position_embeddings", source),
            rope_theta=_rope_theta(raw, source),
            rms_norm_eps=_positive_float(raw, "rms_norm_eps", source),
            head_dim=_head_dim(raw, hidden_size, heads, source),
            tie_word_embeddings=_bool(raw, "tie_word_embeddings", False, source),
            eos_token_ids=eos_token_ids(raw, source),
        )


    @classmethod
    def from_gguf(cls, metadata: Mapping[str, object], tensor_names: Collection[str], source: str) -> Config:
        """The config of a GGUF file: its `qwen2.*` metadata, under llama.cpp's names.

        | GGUF key | config.json key |
        |---|---|
        | qwen2.embedding_length | hidden_size |
        | qwen2.feed_forward_length | intermediate_size |
        | qwen2.block_count | num_hidden_layers |
        | qwen2.attention.head_count | num_attention_heads |
        | qwen2.attention.head_count_kv | num_key_value_heads (head_count if absent) |
        | qwen2.context_length | max_position_embeddings |
        | qwen2.rope.freq_base | rope_theta |
        | qwen2.attention.layer_norm_rms_epsilon | rms_norm_eps (a float32: 9.99999997e-07 for 1e-06) |
        | qwen2.attention.key_length | head_dim (embedding_length / head_count if absent) |
        | qwen2.vocab_size, or the number of tokenizer.ggml.tokens | vocab_size |
        | tokenizer.ggml.eos_token_id (and the end-of-generation tokens) | eos_token_id |

        The output head is untied when the file has an `output.weight` tensor (`tensor_names`).
        """
        raw = dict(metadata)
        _check_supported_gguf(raw, source)
        hidden_size = _positive_int(raw, "qwen2.embedding_length", source)
        heads = _positive_int(raw, "qwen2.attention.head_count", source)
        kv_heads = _positive_int(raw, "qwen2.attention.head_count_kv", source) if "qwen2.attention.head_count_kv" in raw else heads
        if heads % kv_heads:
            raise ConfigError(f"{source}: qwen2.attention.head_count {heads} is not a multiple of "
                              f"qwen2.attention.head_count_kv {kv_heads}")  # fmt: skip
        head_dim = _gguf_head_dim(raw, hidden_size, heads, source)
        return cls(
            hidden_size=hidden_size,
            intermediate_size=_positive_int(raw, "qwen2.feed_forward_length", source),
            num_hidden_layers=_positive_int(raw, "qwen2.block_count", source),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            vocab_size=_gguf_vocab_size(raw, source),
            max_position_embeddings=_positive_int(raw, "qwen2.context_length", source),
            rope_theta=_positive_float(raw, "qwen2.rope.freq_base", source),
            rms_norm_eps=_positive_float(raw, "qwen2.attention.layer_norm_rms_epsilon", source),
            head_dim=head_dim,
            tie_word_embeddings="output.weight" not in tensor_names,
            eos_token_ids=_gguf_eos_token_ids(raw, source),
        )


def _check_supported_gguf(raw: dict[str, object], source: str) -> None:
    """A GGUF file of the qwen2 architecture, without RoPE scaling (YaRN) or sliding-window attention."""
    architecture = raw.get("general.architecture")
    if architecture != "qwen2":
        raise ConfigError(f"{source}: general.architecture is {architecture!r}; microqwen runs 'qwen2' files")
    scaling = raw.get("qwen2.rope.scaling.type", "none")
    if scaling != "none":
        raise ConfigError(f"{source}: qwen2.rope.scaling.type {scaling!r} is not supported (only 'none')")
    if "qwen2.attention.sliding_window" in raw:
        raise ConfigError(f"{source}: qwen2.attention.sliding_window is set; sliding-window attention is not implemented")


def _gguf_head_dim(raw: dict[str, object], hidden_size: int, heads: int, source: str) -> int:
    """qwen2.attention.key_length if given, else embedding_length / head_count; values and RoPE as wide, even."""
    if "qwen2.attention.key_length" in raw:
        head_dim = _positive_int(raw, "qwen2.attention.key_length", source)
    elif hidden_size % heads:
        raise ConfigError(f"{source}: qwen2.embedding_length {hidden_size} is not a multiple of "
                          f"qwen2.attention.head_count {heads}, and no qwen2.attention.key_length gives the head size")  # fmt: skip
    else:
        head_dim = hidden_size // heads
    for key in ("qwen2.attention.value_length", "qwen2.rope.dimension_count"):
        if key in raw and raw[key] != head_dim:
            raise ConfigError(f"{source}: {key} is {raw[key]!r}, but the head size is {head_dim}; microqwen "
                              "implements keys, values and RoPE all one head wide")  # fmt: skip
    if head_dim % 2:
        raise ConfigError(f"{source}: the head size {head_dim} must be even (RoPE rotates pairs of halves)")
    return head_dim


END_OF_TEXT_TOKENS = ("<|endoftext|>", "<|im_end|>")
"""Qwen2's tokens that end a text or a turn; llama.cpp ends generation at control tokens of these names too."""


def _gguf_eos_token_ids(raw: dict[str, object], source: str) -> tuple[int, ...]:
    """The ids that end generation, as llama.cpp reads them from a GGUF file (its end-of-generation set):
    tokenizer.ggml.eos_token_id, .eot_token_id and .eom_token_id when given, and any control token
    (token type 3) named `<|endoftext|>` or `<|im_end|>`. For Qwen2.5-Instruct that is 151645 and 151643,
    the two ids of its generation_config.json."""
    ids = []
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{source}: {key} must be a token id, got {value!r}")
        ids.append(value)
    tokens, kinds = raw.get("tokenizer.ggml.tokens"), raw.get("tokenizer.ggml.token_type")
    if isinstance(tokens, list) and isinstance(kinds, list) and len(kinds) == len(tokens):
        ids += [tokens.index(name) for name in END_OF_TEXT_TOKENS if name in tokens and kinds[tokens.index(name)] == 3]
    return tuple(dict.fromkeys(ids))


def _gguf_vocab_size(raw: dict[str, object], source: str) -> int:
    """qwen2.vocab_size if given, else the number of tokens (what llama.cpp and transformers do)."""
    if "qwen2.vocab_size" in raw:
        return _positive_int(raw, "qwen2.vocab_size", source)
    tokens = raw.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ConfigError(f"{source}: no qwen2.vocab_size, and no tokenizer.ggml.tokens to count the vocabulary by")
    return len(tokens)


def _check_supported(raw: dict[str, JSON], source: str) -> None:
    """Refuse the variants of the config that microqwen does not implement."""
    if raw.get("model_type", "qwen2") != "qwen2":
        raise ConfigError(f"{source}: model_type {raw['model_type']!r} is not 'qwen2'")
    if raw.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"{source}: hidden_act {raw['hidden_act']!r} is not supported (only 'silu')")
    if raw.get("rope_scaling") is not None:
        raise ConfigError(f"{source}: rope_scaling {raw['rope_scaling']!r} is not supported (only null)")
    layer_types = raw.get("layer_types") or []
    if not isinstance(layer_types, list) or any(kind != "full_attention" for kind in layer_types):
        raise ConfigError(f"{source}: layer_types {raw['layer_types']!r}: only 'full_attention' layers are implemented")
    if raw.get("use_sliding_window", False) is not False:
        raise ConfigError(f"{source}: use_sliding_window must be false (sliding-window attention is not implemented)")


def _rope_theta(raw: dict[str, JSON], source: str) -> float:
    """rope_theta: at the top level (the hub files, transformers 4) or in rope_parameters (transformers 5)."""
    parameters = raw.get("rope_parameters")
    if parameters is None:
        return _positive_float(raw, "rope_theta", source)
    if not isinstance(parameters, dict):
        raise ConfigError(f"{source}: rope_parameters must be an object, got {parameters!r}")
    if parameters.get("rope_type", "default") != "default":
        raise ConfigError(f"{source}: rope_parameters rope_type {parameters['rope_type']!r} is not supported (only 'default')")
    return _positive_float(parameters, "rope_theta", f"{source} rope_parameters")


def _positive_int(raw: Mapping[str, object], key: str, source: str) -> int:
    if key not in raw:
        raise ConfigError(f"{source}: missing key {key!r}")
    value = raw[key]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{source}: {key} must be a positive integer, got {value!r}")
    return value


def _positive_float(raw: Mapping[str, object], key: str, source: str) -> float:
    if key not in raw:
        raise ConfigError(f"{source}: missing key {key!r}")
    value = raw[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
        raise ConfigError(f"{source}: {key} must be a positive number, got {value!r}")
    return float(value)


def _bool(raw: dict[str, JSON], key: str, default: bool, source: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
    return value


def _head_dim(raw: dict[str, JSON], hidden_size: int, heads: int, source: str) -> int:
    """head_dim if config.json gives it, else hidden_size / num_attention_heads; even, for RoPE."""
    if "head_dim" in raw:
        head_dim = _positive_int(raw, "head_dim", source)
    elif hidden_size % heads:
        raise ConfigError(f"{source}: hidden_size {hidden_size} is not a multiple of num_attention_heads {heads}")
    else:
        head_dim = hidden_size // heads
    if head_dim % 2:
        raise ConfigError(f"{source}: head_dim {head_dim} must be even (RoPE rotates pairs of halves)")
    return head_dim


def eos_token_ids(raw: Mapping[str, JSON], source: str) -> tuple[int, ...]:
    """The ids that end generation: `eos_token_id` of config.json or generation_config.json is an id,
    a list of ids, or absent (no ids)."""
    value = raw.get("eos_token_id")
    ids = value if isinstance(value, list) else [] if value is None else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ConfigError(f"{source}: eos_token_id must be a token id or a list of them, got {value!r}")
    return tuple(ids)


def expected_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """Every tensor a Qwen2 checkpoint holds, with its shape ([out, in] for a linear layer)."""
    hidden, inter = config.hidden_size, config.intermediate_size
    shapes = {"model.embed_tokens.weight": (config.vocab_size, hidden), "model.norm.weight": (hidden,)}
    for i in range(config.num_hidden_layers):
        layer = f"model.layers.{i}"
        shapes.update({
            f"{layer}.input_layernorm.weight": (hidden,),
            f"{layer}.self_attn.q_proj.weight": (config.q_size, hidden),
            f"{layer}.self_attn.q_proj.bias": (config.q_size,),
            f"{layer}.self_attn.k_proj.weight": (config.kv_size, hidden),
            f"{layer}.self_attn.k_proj.bias": (config.kv_size,),
            f"{layer}.self_attn.v_proj.weight": (config.kv_size, hidden),
            f"{layer}.self_attn.v_proj.bias": (config.kv_size,),
            f"{layer}.self_attn.o_proj.weight": (hidden, config.q_size),
            f"{layer}.post_attention_layernorm.weight": (hidden,),
            f"{layer}.mlp.gate_proj.weight": (inter, hidden),
            f"{layer}.mlp.up_proj.weight": (inter, hidden),
            f"{layer}.mlp.down_proj.weight": (hidden, inter),
        })  # fmt: skip
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, hidden)
    return shapes


class TensorShape(Protocol):
    """What the checks read of a tensor: a safetensors or a GGUF `TensorInfo`."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> str: ...


def mismatches(config: Config, tensors: Mapping[str, TensorShape], dtypes: Collection[str] = ("BF16",)) -> list[str]:
    """Every way the checkpoint's tensors differ from what the config implies (empty if none).

    `dtypes` are the types microqwen can read the weights in: BF16 from safetensors, more from GGUF.
    """
    expected = expected_shapes(config)
    problems = [f"missing tensor {name} {list(shape)}" for name, shape in expected.items() if name not in tensors]
    problems += [f"unexpected tensor {name}" for name in tensors if name not in expected]
    for name, info in tensors.items():
        if name in expected and info.shape != expected[name]:
            problems.append(f"tensor {name} has shape {list(info.shape)}, the config implies {list(expected[name])}")
        if name in expected and info.dtype not in dtypes:
            problems.append(f"tensor {name} is {info.dtype}; microqwen reads {', '.join(dtypes)} weights")
    return problems


def check_tensors(
    config: Config, tensors: Mapping[str, TensorShape], source: str, dtypes: Collection[str] = ("BF16",),
    against: str = "config.json",
) -> None:
    """Raise a `ConfigError` listing every mismatch between the checkpoint and the config (see `mismatches`).

    For a GGUF file: `dtypes=quant.SUPPORTED, against="its qwen2 metadata"`.
    """
    problems = mismatches(config, tensors, dtypes)
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise ConfigError(f"{source}: the weights do not fit {against}: {shown}")
