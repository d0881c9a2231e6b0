"""A tiny Qwen2-layout model directory (zero or random weights), for tests of files and plumbing.

Numbers are checked against the reference on the fixture models in tests/fixtures/models;
these tiny models only test what does not depend on the values being the reference's.
"""

from __future__ import annotations

import json
import pathlib
import random
from typing import Any

from microqwen import bf16

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


def write_tiny_model(directory: pathlib.Path, seed: int | None = None, **overrides: Any) -> pathlib.Path:
    """Write config.json and model.safetensors; weights are zeros, or N(0, 0.5) draws if seed is given."""
    raw = dict(TINY_CONFIG, **overrides)
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(raw))
    config = Config.from_dict(raw, "config.json")
    tensors = {}
    for name, shape in expected_shapes(config).items():
        numel = 1
        for dim in shape:
            numel *= dim
        data = bytes(2 * numel) if seed is None else bf16.from_floats(rng.gauss(0.0, 0.5) for _ in range(numel))
        tensors[name] = TensorData("BF16", shape, data)
    write(str(directory / "model.safetensors"), tensors)
    return directory


CHAT_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}...{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
)
"""Enough of the Qwen2.5 template's text for the default system prompt to be found in it."""


def write_byte_tokenizer(directory: pathlib.Path) -> None:
    """A tokenizer of the 256 bytes (no merges) plus <|endoftext|> 256, <|im_start|> 257, <|im_end|> 258."""
    from microqwen.tokenizer import bytes_to_unicode

    vocab = {char: byte for byte, char in enumerate(bytes_to_unicode())}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("", encoding="utf-8")
    decoder = {str(256 + i): {"content": token, "special": True} for i, token in enumerate(CHAT_TOKENS)}
    config = {"added_tokens_decoder": decoder, "eos_token": "<|im_end|>", "chat_template": CHAT_TEMPLATE}
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def write_tiny_chat_model(directory: pathlib.Path, seed: int = 1) -> pathlib.Path:
    """A tiny random model with the byte tokenizer: it talks gibberish, but through every real step."""
    write_tiny_model(directory, seed=seed, vocab_size=260, eos_token_id=258, max_position_embeddings=512)
    write_byte_tokenizer(directory)
    return directory
