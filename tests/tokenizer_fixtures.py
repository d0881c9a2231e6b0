"""The committed answers of Hugging Face `tokenizers`, recorded by scripts/make_tokenizer_fixtures.py."""

from __future__ import annotations

import functools
import gzip
import json
import pathlib
from typing import Any

DIRECTORY = pathlib.Path(__file__).resolve().parent / "fixtures" / "tokenizer"


@functools.lru_cache(maxsize=None)
def load(name: str) -> Any:
    """hard_strings.json, corpus.json.gz, unicode.json, decode.json or chat.json, parsed."""
    data = (DIRECTORY / name).read_bytes()
    return json.loads(gzip.decompress(data) if name.endswith(".gz") else data)


def hard_strings() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = load("hard_strings.json")["cases"]
    return cases


def hard_string(text: str) -> dict[str, Any]:
    """The recorded case of one hard string: its `ids`, `ids_special_as_text` and `pre_tokens`."""
    return next(case for case in hard_strings() if case["text"] == text)


def corpus_documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = load("corpus.json.gz")["documents"]
    return documents


def hf_classes() -> list[str]:
    """Hugging Face's class of every code point: 'L', 'N', 'S' (white space), 'O' or 'surrogate'."""
    runs = load("unicode.json")["class_runs"] + [[0x110000, None]]
    classes: list[str] = []
    for (start, kind), (end, _) in zip(runs, runs[1:]):
        classes += [kind] * (end - start)
    return classes
