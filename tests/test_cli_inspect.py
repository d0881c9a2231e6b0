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
