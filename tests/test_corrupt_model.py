"""The corrupted-model suite: every broken copy of a good model is refused on one line, exit 2.

`scripts/corrupt_model.py` writes the broken copies of a tiny chat model (config, weights, byte
tokenizer, generation_config.json), one fault each, and says which commands must refuse each one
and what the error must name. Here `inspect`, `generate` and `chat` run on every copy: in this
process through `cli.main` (what the command line runs, with its streams captured), and for a
sample through a real `python -m microqwen` process, with worker processes.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest

from .fuzzing import LONG
from .test_fuzz_cli import check_outcome, run_main
from .tiny_model import write_tiny_chat_model

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("corrupt_model", ROOT / "scripts" / "corrupt_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["corrupt_model"] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


corrupt_model = load_script()
FLIPS = 200 if LONG else 12


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("corrupt")
    good = write_tiny_chat_model(root / "good")
    (good / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 0.7, "top_p": 0.8,
                                                             "eos_token_id": [258, 256]}))  # fmt: skip
    corrupt_model.write_variants(str(good), str(root / "variants"), flips=FLIPS, seed=7)
    return root


def manifest(root: pathlib.Path) -> list[dict[str, Any]]:
    return list(json.loads((root / "variants" / "variants.json").read_text()))




def argv_for(command: str, directory: pathlib.Path, workers: str = "0") -> list[str]:
    if command == "inspect":
        return ["inspect", str(directory)]
    extra = ["-p", "Hello"] if command == "generate" else []
    return [command, "-m", str(directory), "--workers", workers, "-n", "2", "--temp", "0", *extra]


def test_the_good_model_runs(broken: pathlib.Path) -> None:
    for command in corrupt_model.ALL:
        status, out, err = run_main(argv_for(command, broken / "good"), b"Hello\n")
        assert status == 0 and out, (command, err)


@pytest.mark.parametrize("command", ["inspect", "generate", "chat"])
def test_every_variant_is_refused_on_one_line_naming_the_fault(broken: pathlib.Path, command: str) -> None:
    checked = 0
    for variant in manifest(broken):
        argv = argv_for(command, broken / "variants" / variant["name"])
        status, _, stderr = run_main(argv, b"Hello\n")
        check_outcome(argv, status, stderr)
        if variant["expect"] is None:  # a random flip: a result or an error, never a crash
            continue
        must_fail = command in variant["commands"]
        assert status == (2 if must_fail else 0), f"{variant['name']}: exit {status}, {stderr!r}"
        if must_fail:
            assert re.search(variant["expect"], stderr.splitlines()[-1]), f"{variant['name']}: {stderr!r}"
            checked += 1
    assert checked >= 20


def run_cli(argv: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "microqwen", *argv], input=stdin, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


SAMPLE = ["truncated-at-4", "flip-dtype", "header-length-huge", "wrong-shape", "config-not-json", "pickle-only"]


@pytest.mark.parametrize("name", SAMPLE)
def test_the_real_command_line_with_workers(broken: pathlib.Path, name: str) -> None:
    """A sample through real processes (all of them in the long profile), generate with 2 workers."""
    variant = next(v for v in manifest(broken) if v["name"] == name)
    for command in corrupt_model.ALL:
        result = run_cli(argv_for(command, broken / "variants" / name, workers="2"), "Hello\n")
        check_outcome([command], result.returncode, result.stderr)
        if command in variant["commands"]:
            assert result.returncode == 2 and re.search(variant["expect"], result.stderr), result.stderr


@pytest.mark.skipif(not LONG, reason="long profile only: MICROQWEN_FUZZ=long")
def test_every_variant_through_the_real_command_line(broken: pathlib.Path) -> None:
    for variant in manifest(broken):
        for command in corrupt_model.ALL:
            result = run_cli(argv_for(command, broken / "variants" / variant["name"], workers="2"), "Hello\n")
            check_outcome([command], result.returncode, result.stderr)
            if variant["expect"] is not None and command in variant["commands"]:
                assert result.returncode == 2 and re.search(variant["expect"], result.stderr), result.stderr


# --- GGUF files ----------------------------------------------------------------------------------

GOOD_GGUF = ROOT / "tests" / "fixtures" / "gguf" / "kquants-gqa2-untied.gguf"


@pytest.fixture(scope="module")
def broken_gguf(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("corrupt-gguf")
    corrupt_model.write_gguf_variants(str(GOOD_GGUF), str(out), flips=FLIPS, seed=7)
    return out


def test_the_good_gguf_runs() -> None:
    for command in corrupt_model.ALL:
        status, out, err = run_main(argv_for(command, GOOD_GGUF), b"Hello\n")
        assert status == 0 and out, (command, err)


@pytest.mark.parametrize("command", ["inspect", "generate", "chat"])
def test_every_gguf_variant_is_refused_on_one_line_naming_the_fault(broken_gguf: pathlib.Path, command: str) -> None:
    checked = 0
    for variant in json.loads((broken_gguf / "variants.json").read_text()):
        argv = argv_for(command, broken_gguf / variant["file"])
        status, _, stderr = run_main(argv, b"Hello\n")
        check_outcome(argv, status, stderr)
        if variant["expect"] is None:  # a random flip: a result or an error, never a crash
            continue
        must_fail = command in variant["commands"]
        assert status == (2 if must_fail else 0), f"{variant['name']}: exit {status}, {stderr!r}"
        if must_fail:
            assert stderr.count("\n") == 1, f"{variant['name']}: {stderr!r}"
            assert re.search(variant["expect"], stderr), f"{variant['name']}: {stderr!r}"
            checked += 1
    assert checked >= 30


@pytest.mark.parametrize("name", ["bad-magic", "truncated-in-data", "vocabulary-count-huge", "offset-overlaps",
                                  "undecodable-type", "not-qwen2"])  # fmt: skip
def test_gguf_variants_through_the_real_command_line(broken_gguf: pathlib.Path, name: str) -> None:
    """A sample through real processes, generate and chat with 2 workers (inspect may show the file, then refuse)."""
    variant = next(v for v in json.loads((broken_gguf / "variants.json").read_text()) if v["name"] == name)
    for command in variant["commands"]:
        result = run_cli(argv_for(command, broken_gguf / variant["file"], workers="2"), "Hello\n")
        assert result.returncode == 2 and re.search(variant["expect"], result.stderr), result.stderr
        assert result.stdout == "" or command == "inspect", result.stdout
