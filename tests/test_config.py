"""config.json: the architecture numbers, derived values, and every mismatch with the weights."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from microqwen.config import Config, check_tensors, expected_shapes, mismatches
from microqwen.errors import ConfigError
from microqwen.safetensors import TensorInfo

from .tiny_model import TINY_CONFIG

DATA = pathlib.Path(__file__).parent / "data"
QWEN_CONFIG = str(DATA / "qwen2.5-0.5b-instruct" / "config.json")


def test_reads_the_real_qwen2_5_config() -> None:
    c = Config.from_file(QWEN_CONFIG)
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers) == (896, 4864, 24)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.n_rep) == (14, 2, 64, 7)
    assert (c.q_size, c.kv_size, c.vocab_size) == (896, 128, 151936)
    assert c.rope_theta == 1e6 and c.rms_norm_eps == 1e-6 and c.tie_word_embeddings
    assert c.eos_token_ids == (151645,)


def test_expected_tensors_of_the_real_model_match_the_published_counts() -> None:
    shapes = expected_shapes(Config.from_file(QWEN_CONFIG))
    params = {name: _numel(shape) for name, shape in shapes.items()}
    assert len(shapes) == 290
    assert sum(params.values()) == 494_032_768
    assert sum(params.values()) - params["model.embed_tokens.weight"] == 357_898_112


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def load(tmp_path: pathlib.Path, **changes: Any) -> Config:
    raw = dict(TINY_CONFIG)
    for key, value in changes.items():
        if value is ...:
            del raw[key]
        else:
            raw[key] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    return Config.from_file(str(path))


BAD = [
    ({"hidden_size": ...}, "config.json: missing key 'hidden_size'"),
    ({"rope_theta": ...}, "missing key 'rope_theta'"),
    ({"num_hidden_layers": "24"}, "num_hidden_layers must be a positive integer, got '24'"),
    ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer, got 0"),
    ({"vocab_size": 32.0}, "vocab_size must be a positive integer, got 32.0"),
    ({"max_position_embeddings": True}, "must be a positive integer, got True"),
    ({"rms_norm_eps": "1e-6"}, "rms_norm_eps must be a positive number, got '1e-6'"),
    ({"rope_theta": -1}, "rope_theta must be a positive number"),
    ({"tie_word_embeddings": 1}, "tie_word_embeddings must be true or false, got 1"),
    ({"num_key_value_heads": 3}, "num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
    ({"hidden_size": 18}, "hidden_size 18 is not a multiple of num_attention_heads 4"),
    ({"head_dim": 5}, "head_dim 5 must be even"),
    ({"eos_token_id": [2, "x"]}, "eos_token_id must be a token id or a list of them"),
    ({"model_type": "llama"}, "model_type 'llama' is not 'qwen2'"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
    ({"rope_scaling": {"type": "yarn"}}, "rope_scaling .* is not supported"),
    ({"use_sliding_window": True}, "use_sliding_window must be false"),
    ({"layer_types": ["full_attention", "sliding_attention"]}, "only 'full_attention' layers"),
    ({"rope_theta": ..., "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6}}, "rope_type 'yarn' is not supported"),
    ({"rope_theta": ..., "rope_parameters": {"rope_type": "default"}}, "rope_parameters: missing key 'rope_theta'"),
]


def test_transformers_5_writes_rope_theta_in_rope_parameters(tmp_path: pathlib.Path) -> None:
    config = load(tmp_path, rope_theta=..., rope_parameters={"rope_theta": 10000.0, "rope_type": "default"})
    assert config.rope_theta == 10000.0


@pytest.mark.parametrize("changes, message", BAD)
def test_bad_configs_name_the_key_and_file(tmp_path: pathlib.Path, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        load(tmp_path, **changes)
    assert str(error.value).startswith(str(tmp_path / "config.json"))


def test_not_an_object(tmp_path: pathlib.Path) -> None:
    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        Config.from_file(str(tmp_path / "config.json"))


def test_defaults_and_explicit_head_dim(tmp_path: pathlib.Path) -> None:
    c = load(tmp_path, tie_word_embeddings=..., eos_token_id=[2, 3], head_dim=8)
    assert not c.tie_word_embeddings and c.eos_token_ids == (2, 3) and c.head_dim == 8 and c.q_size == 32
    assert "lm_head.weight" in expected_shapes(c)


def info(name: str, shape: tuple[int, ...], dtype: str = "BF16") -> TensorInfo:
    return TensorInfo(name, dtype, shape, "model.safetensors", 0, 0)


def test_every_mismatch_is_reported(tmp_path: pathlib.Path) -> None:
    config = load(tmp_path)
    tensors = {name: info(name, shape) for name, shape in expected_shapes(config).items()}
    assert mismatches(config, tensors) == []
    del tensors["model.layers.1.mlp.up_proj.weight"]
    tensors["model.layers.0.self_attn.k_proj.weight"] = info("model.layers.0.self_attn.k_proj.weight", (16, 16))
    tensors["model.norm.weight"] = info("model.norm.weight", (16,), "F32")
    tensors["lm_head.weight"] = info("lm_head.weight", (32, 16))
    problems = mismatches(config, tensors)
    assert sorted(problems) == sorted([
        "missing tensor model.layers.1.mlp.up_proj.weight [24, 16]",
        "unexpected tensor lm_head.weight",
        "tensor model.layers.0.self_attn.k_proj.weight has shape [16, 16], the config implies [8, 16]",
        "tensor model.norm.weight is F32; microqwen reads BF16 weights",
    ])
    with pytest.raises(ConfigError, match="the weights do not fit config.json: missing tensor model.layers.1.mlp.up_proj"):
        check_tensors(config, tensors, "tiny")
