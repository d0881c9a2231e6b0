"""`microqwen inspect`: the tensor table, JSON output, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from microqwen.cli import main

from .tiny_model import write_tiny_model

# embed 32x16 + norm 16 + 2 layers x (2 norms 16, q 16x16+16, k and v 8x16+8, o 16x16, gate/up/down 24x16)
TINY_PARAMETERS = 32 * 16 + 16 + 2 * (2 * 16 + 16 * 16 + 16 + 2 * (8 * 16 + 8) + 16 * 16 + 3 * 24 * 16)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in a fresh interpreter, as a user would run it."""
    return subprocess.run([sys.executable, "-m", "microqwen", *args], capture_output=True, text=True, timeout=120)


def test_inspect_prints_the_table(tmp_path: pathlib.Path) -> None:
    model = write_tiny_model(tmp_path / "tiny")
    result = run("inspect", str(model))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("file ") and "model.safetensors" in lines[0] and "header" in lines[0]
    assert lines[1].split() == ["tensors", "26,", f"{TINY_PARAMETERS:,}", "parameters"]  # 2 x 12 + embed + norm
    assert "hidden 16" in lines[2] and "n_rep 2" in lines[2] and "tied" in lines[2]
    rows = {line.split()[0]: line.split() for line in lines[4:]}
    assert rows["model.embed_tokens.weight"][1:3] == ["BF16", "32x16"]
    assert rows["model.layers.1.self_attn.k_proj.weight"][2] == "8x16"


def test_inspect_json(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_tiny_model(tmp_path / "tiny")
    assert main(["inspect", "--json", str(model)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parameters"] == TINY_PARAMETERS and report["problems"] == []
    assert report["config"]["head_dim"] == 4 and report["config"]["n_rep"] == 2
    offsets = [t["offset"] for t in report["tensors"]]
    assert offsets == sorted(offsets) and offsets[0] == 8 + report["files"][0]["header_bytes"]


def test_inspect_a_single_file(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_tiny_model(tmp_path / "tiny")
    assert main(["inspect", str(model / "model.safetensors")]) == 0
    assert "config" not in capsys.readouterr().out.splitlines()[2]


def test_corrupted_file_is_one_line_and_exit_2(tmp_path: pathlib.Path) -> None:
    model = write_tiny_model(tmp_path / "tiny")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    result = run("inspect", str(model))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("microqwen: error: ") and "is the file truncated?" in result.stderr


def test_weights_that_disagree_with_the_config(tmp_path: pathlib.Path) -> None:
    model = write_tiny_model(tmp_path / "tiny")
    (model / "config.json").write_text((model / "config.json").read_text().replace('"vocab_size": 32', '"vocab_size": 33'))
    result = run("inspect", str(model))
    assert result.returncode == 2
    assert "tensor model.embed_tokens.weight has shape [32, 16], the config implies [33, 16]" in result.stderr


def test_missing_path(tmp_path: pathlib.Path) -> None:
    result = run("inspect", str(tmp_path / "nope"))
    assert result.returncode == 2 and "nope: cannot open" in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = run("fly")
    assert result.returncode == 2 and "invalid choice" in result.stderr


# --- GGUF files ----------------------------------------------------------------------------------

GGUF_FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "gguf"


def test_inspect_a_gguf_file_shows_model_tokenizer_types_and_tensors() -> None:
    result = run("inspect", str(GGUF_FIXTURES / "kquants-gqa2-untied.gguf"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("file ") and "GGUF v3" in lines[0] and "alignment 32" in lines[0]
    assert "architecture qwen2" in lines[1]
    assert "hidden 32, intermediate 256, 5 layers, 2 heads (1 kv, head_dim 16, n_rep 2)" in lines[2] and "untied" in lines[2]
    assert lines[3].startswith("tokenizer   gpt2 (pre qwen2): 256 tokens (256 normal), 0 merges, eos 255")
    assert any(line.split()[:3] == ["metadata", "qwen2.block_count", "uint32"] and line.split()[3] == "5" for line in lines)
    types = {line.split()[0]: line.split()[1] for line in lines if line.startswith("  ")}
    layers = 5  # each: q, k, o, gate, up Q5_0; v Q8_0; down one k-quant; 2 norms and 3 biases F32
    assert types == {"Q5_0": str(5 * layers + 1), "Q8_0": str(layers + 1), "F32": str(5 * layers + 1),
                     "Q2_K": "1", "Q3_K": "1", "Q4_K": "1", "Q5_K": "1", "Q6_K": "1"}  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("blk.", "output", "token_embd"))}
    assert rows["blk.2.ffn_down.weight"][1:4] == ["model.layers.2.mlp.down_proj.weight", "Q4_K", "32x256"]
    assert rows["blk.2.ffn_down.weight"][-1] == "4.5" and rows["output.weight"][1] == "lm_head.weight"


def test_inspect_gguf_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--json", str(GGUF_FIXTURES / "mha-hd16-theta1e4-tied.mixed.gguf")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["file"]["version"] == 3 and report["problems"] == [] and report["config"]["tie_word_embeddings"]
    assert report["metadata"]["qwen2.block_count"] == {"type": "uint32", "offset": report["metadata"]["qwen2.block_count"]["offset"], "value": 4}
    assert report["metadata"]["tokenizer.ggml.tokens"]["length"] == 256 and len(report["metadata"]["tokenizer.ggml.tokens"]["head"]) == 16
    assert set(report["types"]) == {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1"}
    assert sum(entry["weights"] for entry in report["types"].values()) == report["parameters"]
    offsets = [t["offset"] for t in report["tensors"]]
    assert offsets == sorted(offsets) and offsets[0] == report["file"]["header_bytes"]


def test_inspect_a_gguf_file_of_another_architecture_shows_it_without_a_config(tmp_path: pathlib.Path) -> None:
    from . import gguf_bytes

    path = tmp_path / "llama.gguf"
    path.write_bytes(gguf_bytes.gguf_file([("general.architecture", "string", "llama")], [("w", 0, (4,), bytes(16))]))
    result = run("inspect", str(path))
    assert result.returncode == 0 and "architecture llama" in result.stdout and "\nconfig " not in result.stdout


def test_a_gguf_tensor_of_the_wrong_shape_is_named(tmp_path: pathlib.Path) -> None:
    from . import gguf_bytes

    metadata = [("general.architecture", "string", "qwen2"), ("qwen2.embedding_length", "uint32", 16),
                ("qwen2.feed_forward_length", "uint32", 32), ("qwen2.block_count", "uint32", 1),
                ("qwen2.attention.head_count", "uint32", 2), ("qwen2.context_length", "uint32", 64),
                ("qwen2.rope.freq_base", "float32", 1e6), ("qwen2.attention.layer_norm_rms_epsilon", "float32", 1e-6),
                ("qwen2.vocab_size", "uint32", 8)]  # fmt: skip
    path = tmp_path / "bad.gguf"
    path.write_bytes(gguf_bytes.gguf_file(metadata, [("token_embd.weight", 0, (16, 9), bytes(4 * 144))]))
    result = run("inspect", str(path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "the tensors do not fit the qwen2 metadata: missing tensor model.norm.weight" in result.stderr
    assert "tensor model.embed_tokens.weight has shape [9, 16], the config implies [8, 16]" in result.stderr


def test_a_corrupted_gguf_file_is_one_line_and_exit_2(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "cut.gguf"
    path.write_bytes((GGUF_FIXTURES / "kquants-gqa2-untied.gguf").read_bytes()[:3000])
    result = run("inspect", str(path))
    assert result.returncode == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith("microqwen: error: ") and "is it truncated?" in result.stderr
