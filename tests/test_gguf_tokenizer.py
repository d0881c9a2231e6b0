"""The tokenizer and chat template of a GGUF file: the same ids as tokenizer.json, the same tokens as transformers.

Two references: transformers' own GGUF tokenizer on tests/fixtures/gguf/tokenizer.gguf (a small
vocabulary written by gguf-py, with Qwen2.5's added tokens typed as llama.cpp types them), and, for
the real 151,665-token vocabulary, Hugging Face's ids in the tokenizer fixtures: a GGUF file holding
it (built here as llama.cpp's converter writes one) must give them too.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import pytest

from microqwen import chat
from microqwen.errors import FormatError
from microqwen.gguf import GGUFFile
from microqwen.tokenizer import Tokenizer

from . import gguf_bytes, qwen_vocab, tokenizer_fixtures

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "gguf"
REFERENCE = json.loads((FIXTURES / "tokenizer.json").read_text(encoding="utf-8"))
LOOKS_SPECIAL = re.compile(r"<\|.*\|>")


@pytest.fixture(scope="module")
def small() -> Tokenizer:
    with GGUFFile(str(FIXTURES / "tokenizer.gguf")) as f:
        return Tokenizer.from_gguf(f.metadata, f.path)


@pytest.mark.parametrize("case", REFERENCE["cases"], ids=lambda case: repr(case["text"]))
def test_small_vocabulary_encodes_and_decodes_as_transformers(small: Tokenizer, case: dict[str, Any]) -> None:
    assert small.encode(case["text"]) == case["ids"]
    assert small.decode(case["ids"]) == case["decoded"]
    assert small.decode(case["ids"], skip_special_tokens=True) == case["decoded_skip_special"]


@pytest.mark.parametrize("case", REFERENCE["decodes"], ids=lambda case: str(case["ids"]))
def test_control_user_defined_and_unused_tokens_decode_as_transformers(small: Tokenizer, case: dict[str, Any]) -> None:
    assert small.decode(case["ids"]) == case["decoded"]
    assert small.decode(case["ids"], skip_special_tokens=True) == case["decoded_skip_special"]


def test_size_eos_and_chat_template(small: Tokenizer) -> None:
    assert small.vocab_size == REFERENCE["vocab_size"]
    assert small.eos_token_id == small.token_to_id(REFERENCE["eos_token"])
    assert small.default_system == chat.INSTRUCT_SYSTEM_PROMPT


def real_vocabulary_gguf(qwen_dir: pathlib.Path, vocab_size: int = 151936) -> bytes:
    """The tokenizer metadata of a Qwen2.5 GGUF file, from the Hugging Face files, as llama.cpp's
    convert_hf_to_gguf.py writes it: every id up to the embedding size (the unused ones [PAD151665] ...),
    added tokens typed control when they look like <|...|> and user-defined otherwise."""
    vocab = json.loads((qwen_dir / "vocab.json").read_text(encoding="utf-8"))
    tokens = [""] * vocab_size
    types = [5] * vocab_size
    for token, token_id in vocab.items():
        tokens[token_id], types[token_id] = token, 1
    for token_id, content, _ in qwen_vocab.ADDED_TOKENS:
        tokens[token_id], types[token_id] = content, 3 if LOOKS_SPECIAL.fullmatch(content) else 4
    for token_id, token in enumerate(tokens):
        tokens[token_id] = token or f"[PAD{token_id}]"
    merges = [line for line in (qwen_dir / "merges.txt").read_text(encoding="utf-8").split("\n") if line]
    metadata = [("general.architecture", "string", "qwen2"), ("tokenizer.ggml.model", "string", "gpt2"),
                ("tokenizer.ggml.pre", "string", "qwen2"), ("tokenizer.ggml.tokens", "array[string]", tokens),
                ("tokenizer.ggml.token_type", "array[int32]", types), ("tokenizer.ggml.merges", "array[string]", merges),
                ("tokenizer.ggml.eos_token_id", "uint32", 151645), ("tokenizer.ggml.padding_token_id", "uint32", 151643),
                ("tokenizer.ggml.bos_token_id", "uint32", 151643), ("tokenizer.ggml.add_bos_token", "bool", False),
                ("tokenizer.chat_template", "string", qwen_vocab.INSTRUCT_CHAT_TEMPLATE)]  # fmt: skip
    return gguf_bytes.gguf_file(metadata)


@pytest.fixture(scope="module")
def qwen_gguf(qwen_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    path = tmp_path_factory.mktemp("gguf") / "qwen2.5-tokenizer.gguf"
    path.write_bytes(real_vocabulary_gguf(qwen_dir))
    with GGUFFile(str(path)) as f:
        return Tokenizer.from_gguf(f.metadata, f.path)


def test_the_real_vocabulary_gives_hugging_faces_ids(qwen_gguf: Tokenizer, qwen: Tokenizer) -> None:
    cases = tokenizer_fixtures.hard_strings()
    assert [qwen_gguf.encode(case["text"]) for case in cases] == [case["ids"] for case in cases]
    documents = tokenizer_fixtures.corpus_documents()
    assert [qwen_gguf.encode(doc["text"]) for doc in documents] == [qwen.encode(doc["text"]) for doc in documents]
    assert [qwen_gguf.encode(doc["text"]) for doc in documents] == [doc["ids"] for doc in documents]


def test_the_real_vocabulary_has_the_same_tokens_and_eos(qwen_gguf: Tokenizer, qwen: Tokenizer) -> None:
    assert [qwen_gguf.id_to_token(i) for i in range(qwen.vocab_size)] == [qwen.id_to_token(i) for i in range(qwen.vocab_size)]
    assert qwen_gguf.vocab_size == 151936 and qwen_gguf.id_to_token(151935) == "[PAD151935]"  # the unused ids decode
    assert qwen_gguf.eos_token_id == qwen.eos_token_id == 151645
    assert qwen_gguf.default_system == qwen.default_system


def test_special_flags_follow_the_token_types(qwen_gguf: Tokenizer, qwen: Tokenizer) -> None:
    """<|fim_prefix|> is control in a GGUF file (llama.cpp's converter) but not special in tokenizer.json."""
    for token_id, content, special in qwen_vocab.ADDED_TOKENS:
        assert qwen.is_special(token_id) == special
        assert qwen_gguf.is_special(token_id) == bool(LOOKS_SPECIAL.fullmatch(content))


def small_metadata(**changes: Any) -> dict[str, Any]:
    with GGUFFile(str(FIXTURES / "tokenizer.gguf")) as f:
        metadata = f.metadata
    metadata.update(changes)
    return {key: value for key, value in metadata.items() if value is not None}


@pytest.mark.parametrize("changes,message", [
    ({"tokenizer.ggml.model": "llama"}, "tokenizer.ggml.model is 'llama'; microqwen implements Qwen2's byte-level BPE"),
    ({"tokenizer.ggml.pre": "llama-bpe"}, "tokenizer.ggml.pre is 'llama-bpe'; .* tokenizer.ggml.pre 'qwen2'"),
    ({"tokenizer.ggml.pre": None}, "tokenizer.ggml.pre is None"),
    ({"tokenizer.ggml.add_bos_token": True}, "add_bos_token is set; Qwen2 starts a text with no BOS token"),
    ({"tokenizer.ggml.tokens": None}, "tokenizer.ggml.tokens must be an array of str, got NoneType"),
    ({"tokenizer.ggml.token_type": [1] * 10}, "272 tokenizer.ggml.tokens but 10 tokenizer.ggml.token_type"),
    ({"tokenizer.ggml.token_type": [6] + [1] * 271}, "token_type\\[0\\] is 6 \\(byte\\) for token 'Ā'"),
    ({"tokenizer.ggml.merges": ["a b c"]}, "tokenizer.ggml.merges\\[0\\]: a merge must be"),
    ({"tokenizer.ggml.merges": ["a zz"]}, "tokenizer.ggml.merges\\[0\\]: merge 'a' 'zz' names 'zz'"),
    ({"tokenizer.ggml.eos_token_id": 272}, "tokenizer.ggml.eos_token_id 272 is not one of the 272 token ids"),
    ({"tokenizer.chat_template": "{{ messages }}"}, "tokenizer.chat_template is not Qwen2.5's chat template"),
])  # fmt: skip
def test_what_microqwen_cannot_tokenize_is_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(FormatError, match="^tok.gguf: .*" + message):
        Tokenizer.from_gguf(small_metadata(**changes), "tok.gguf")


def test_the_base_models_template_and_none_are_accepted() -> None:
    base = Tokenizer.from_gguf(small_metadata(**{"tokenizer.chat_template": qwen_vocab.BASE_CHAT_TEMPLATE}), "tok.gguf")
    assert base.default_system == qwen_vocab.BASE_SYSTEM
    none = Tokenizer.from_gguf(small_metadata(**{"tokenizer.chat_template": None}), "tok.gguf")
    assert none.default_system == chat.INSTRUCT_SYSTEM_PROMPT


def test_microqwens_template_is_qwen25_instructs() -> None:
    assert chat.QWEN25_TEMPLATE == qwen_vocab.INSTRUCT_CHAT_TEMPLATE
