"""A tiny Qwen2-layout model directory with zero weights, for tests of the file handling."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from microqwen.config import Config, expected_shapes
from microqwen.safetensors import TensorData, write

TINY_CONFIG: dict[str, Any] = {
    "model_type": "qwen2",
    "hidden_size": 16,
    "intermediate_size": 24,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 32,
    "max_position_embeddings": 64,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def write_tiny_model(directory: pathlib.Path, **overrides: Any) -> pathlib.Path:
    raw = dict(TINY_CONFIG, **overrides)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(raw))
    config = Config.from_dict(raw, "config.json")
    tensors = {}
    for name, shape in expected_shapes(config).items():
        numel = 1
        for dim in shape:
            numel *= dim
        tensors[name] = TensorData("BF16", shape, bytes(2 * numel))
    write(str(directory / "model.safetensors"), tensors)
    return directory
