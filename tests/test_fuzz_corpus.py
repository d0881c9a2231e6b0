"""Replaying the fuzz corpus: every input that once crashed a reader now gives its one error (or loads)."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
from typing import Any, Callable

import pytest

from microqwen.config import Config
from microqwen.errors import MicroQwenError
from microqwen.gguf import GGUFFile
from microqwen.safetensors import SafetensorsFile
from microqwen.tokenizer import Tokenizer

from . import qwen_vocab

CORPUS = pathlib.Path(__file__).resolve().parent / "fuzz_corpus"
EXPECTED: dict[str, str | None] = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))


def read_tokenizer_json(path: pathlib.Path, scratch: pathlib.Path) -> Tokenizer:
    shutil.copy(path, scratch / "tokenizer.json")
    return Tokenizer.from_dir(str(scratch))


def read_tokenizer_config(path: pathlib.Path, scratch: pathlib.Path) -> Tokenizer:
    (scratch / "vocab.json").write_text(json.dumps(qwen_vocab.small_vocab("tricky")), encoding="utf-8")
    (scratch / "merges.txt").write_text("\n".join(qwen_vocab.SMALL_TOKENIZERS["tricky"][1]), encoding="utf-8")
    shutil.copy(path, scratch / "tokenizer_config.json")
    return Tokenizer.from_dir(str(scratch))


READERS: dict[str, Callable[[pathlib.Path, pathlib.Path], Any]] = {
    "safetensors": lambda path, scratch: SafetensorsFile(str(path)).close(),
    "gguf": lambda path, scratch: GGUFFile(str(path)).close(),
    "config": lambda path, scratch: Config.from_file(str(path)),
    "tokenizer_json": read_tokenizer_json,
    "tokenizer_config": read_tokenizer_config,
}


def test_every_corpus_file_has_an_expectation() -> None:
    files = sorted(str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*"))
    assert files == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_input(name: str, tmp_path: pathlib.Path) -> None:
    read = READERS[name.split("/")[0]]
    expected = EXPECTED[name]
    if expected is None:
        read(CORPUS / name, tmp_path)
        return
    with pytest.raises(MicroQwenError) as error:
        read(CORPUS / name, tmp_path)
    assert re.search(expected, str(error.value)), str(error.value)
