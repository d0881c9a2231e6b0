"""Chat prompts render to exactly the text transformers renders from Qwen2.5's Jinja template."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from microqwen import chat
from microqwen.errors import UsageError
from microqwen.tokenizer import Tokenizer

from . import qwen_vocab, tokenizer_fixtures

# The published chat example (docs/reference/qwen2.5-0.5b.md): the default system prompt and
# "What is the capital of France?" are 36 tokens.
CHAT_EXAMPLE_IDS = [151644, 8948, 198, 2610, 525, 1207, 16948, 11, 3465, 553, 54364, 14817, 13, 1446, 525, 264, 10950,
                 17847, 13, 151645, 198, 151644, 872, 198, 3838, 374, 279, 6722, 315, 9625, 30, 151645, 198, 151644,
                 77091, 198]  # fmt: skip
DEFAULT_SYSTEM = {
    "instruct": chat.default_system_prompt(qwen_vocab.INSTRUCT_CHAT_TEMPLATE),
    "base": chat.default_system_prompt(qwen_vocab.BASE_CHAT_TEMPLATE),
}
CASES = tokenizer_fixtures.load("chat.json")


def test_the_published_example_is_36_tokens(qwen: Tokenizer) -> None:
    prompt = qwen.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    assert qwen.encode(prompt) == CHAT_EXAMPLE_IDS


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["name"])
def test_renders_as_transformers_does(case: dict[str, Any]) -> None:
    default = DEFAULT_SYSTEM[case.get("template", "instruct")]
    text = chat.render(case["messages"], case.get("add_generation_prompt", True), case.get("tools"), default)
    assert text == case["text"]


@pytest.mark.parametrize("case", [c for c in CASES if c.get("template", "instruct") == "instruct"], ids=lambda c: c["name"])
def test_encodes_as_hugging_face_does(qwen: Tokenizer, case: dict[str, Any]) -> None:
    prompt = qwen.apply_chat_template(case["messages"], case.get("add_generation_prompt", True), case.get("tools"))
    assert qwen.encode(prompt) == case["ids"]


def test_the_default_system_prompt_comes_from_the_template() -> None:
    assert DEFAULT_SYSTEM == {"instruct": qwen_vocab.INSTRUCT_SYSTEM, "base": qwen_vocab.BASE_SYSTEM}
    assert chat.default_system_prompt(None) == qwen_vocab.INSTRUCT_SYSTEM
    assert chat.default_system_prompt("{% for m in messages %}{{ m.content }}{% endfor %}") is None
    assert chat.render([{"role": "user", "content": "hi"}], default_system=None) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_the_base_model_directory_gives_the_base_wording(tmp_path: pathlib.Path) -> None:
    """A directory with the base model's tokenizer_config.json (and a small byte-level tokenizer.json)."""
    config = {"chat_template": qwen_vocab.BASE_CHAT_TEMPLATE, "eos_token": "<|endoftext|>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    byte_vocab = {char: byte for byte, char in qwen_vocab.bytes_to_unicode().items()}
    (tmp_path / "tokenizer.json").write_text(json.dumps(qwen_vocab.tokenizer_json(byte_vocab, [])))
    tokenizer = Tokenizer.from_dir(str(tmp_path))
    assert tokenizer.default_system == qwen_vocab.BASE_SYSTEM and tokenizer.eos_token_id == 151643


@pytest.mark.parametrize(
    ("messages", "tools", "message"),
    [
        ([], None, "messages must be a non-empty list"),
        ("hello", None, "messages must be a non-empty list"),
        (["hello"], None, r"messages\[0\] is a str"),
        ([{"role": "developer", "content": "x"}], None, r"messages\[0\]: role 'developer' is not one of system, user"),
        ([{"content": "x"}], None, r"messages\[0\]: role None is not one of"),
        ([{"role": "user", "content": None}], None, r"messages\[0\]: content must be a string, got NoneType"),
        ([{"role": "user"}], None, r"messages\[0\]: content must be a string"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": 3}], None, r"messages\[1\]: content must be"),
        ([{"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}], None,
         r"messages\[0\].tool_calls\[0\]: a tool call needs a \"name\" string and \"arguments\""),
        ([{"role": "assistant", "tool_calls": "f()"}], None, r"messages\[0\]: tool_calls must be a list"),
        ([{"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": {1j}}]}], None,
         r"tool_calls\[0\].arguments: cannot be written as JSON"),
        ([{"role": "user", "content": "a"}], "tools", "tools must be a list of function definitions, not a str"),
        ([{"role": "user", "content": "a"}], [{"f": object()}], r"tools\[0\]: cannot be written as JSON"),
    ],
)  # fmt: skip
def test_bad_messages_are_refused_with_the_place_named(messages: Any, tools: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        chat.render(messages, tools=tools)
