"""`microqwen serve` driven by the real `openai` Python client, as any OpenAI tool would drive it.

The client parses every answer into its own types (pydantic models), so a field of the wrong shape
fails here even where raw JSON would pass. The `openai` package is a test dependency of CPython
only; under PyPy these tests are skipped (the raw-HTTP tests of test_serve.py run there).
"""

from __future__ import annotations

import pathlib
from typing import Any, Iterator

import pytest

openai = pytest.importorskip("openai")

from .server_process import ServerProcess  # noqa: E402
from .test_serve import PROMPT, generate_cli, log_softmax  # noqa: E402
from .tiny_model import write_tiny_chat_model  # noqa: E402

import microqwen  # noqa: E402


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_chat_model(tmp_path_factory.mktemp("openai") / "chat")


@pytest.fixture(scope="module")
def client(chat_model: pathlib.Path) -> Iterator[Any]:
    with ServerProcess(str(chat_model), "--workers", "0") as server:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=60)


def test_models_list(client: Any, chat_model: pathlib.Path) -> None:
    assert [m.id for m in client.models.list()] == [chat_model.name]
    assert client.models.retrieve(chat_model.name).owned_by == "microqwen"


def test_chat_completion_equals_microqwen_generate(client: Any, chat_model: pathlib.Path) -> None:
    answer = client.chat.completions.create(model=chat_model.name, messages=[{"role": "user", "content": PROMPT}],
                                            max_tokens=10, temperature=0)  # fmt: skip
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "length"
    assert choice.message.content == generate_cli(chat_model, "--chat", "-p", PROMPT, "-n", "10")
    assert answer.usage.completion_tokens == 10 and answer.usage.total_tokens == answer.usage.prompt_tokens + 10


def test_completion_equals_microqwen_generate(client: Any, chat_model: pathlib.Path) -> None:
    answer = client.completions.create(model=chat_model.name, prompt=PROMPT, max_tokens=12, temperature=0)
    assert answer.choices[0].text == generate_cli(chat_model, "-p", PROMPT, "-n", "12")


def test_chat_stream_equals_the_whole_answer(client: Any, chat_model: pathlib.Path) -> None:
    request: dict[str, Any] = {"model": chat_model.name, "messages": [{"role": "user", "content": "Go on"}],
                               "max_completion_tokens": 15, "temperature": 0.7, "seed": 9}  # fmt: skip
    whole = client.chat.completions.create(**request)
    stream = client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 15


def test_chat_logprobs_are_the_models_log_softmax(client: Any, chat_model: pathlib.Path) -> None:
    messages = [{"role": "user", "content": "Hi"}]
    answer = client.chat.completions.create(model=chat_model.name, messages=messages, max_tokens=5, temperature=0,
                                            logprobs=True, top_logprobs=4)  # fmt: skip
    content = answer.choices[0].logprobs.content
    with microqwen.load(str(chat_model), progress=False) as model:
        assert model.tokenizer is not None
        logits = model.prefill(model.tokenizer.encode(model.tokenizer.apply_chat_template(messages)))
        for entry in content:
            expected = log_softmax(logits)
            token = byte_token(entry.bytes, model.tokenizer)
            assert entry.logprob == pytest.approx(expected[token], abs=1e-9)
            best = sorted(range(len(logits)), key=lambda t: -logits[t])[:4]
            assert [alt.logprob for alt in entry.top_logprobs] == pytest.approx([expected[t] for t in best], abs=1e-9)
            assert entry.top_logprobs[0].logprob == entry.logprob  # greedy: the chosen token is the top one
            logits = model.forward(token, model.pos)


def byte_token(data: list[int], tokenizer: microqwen.Tokenizer) -> int:
    """The id of a token from its bytes, with the byte tokenizer: the byte, or one of the special tokens."""
    if len(data) == 1:
        return data[0]
    (token,) = tokenizer.encode(bytes(data).decode())
    return token


def test_errors_are_the_clients_exceptions(client: Any, chat_model: pathlib.Path) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=chat_model.name, messages=[{"role": "user", "content": "Hi"}],
                                       temperature=7)  # fmt: skip
    assert bad.value.status_code == 400 and bad.value.param == "temperature"
    assert "temperature must be a number in [0, 2], got 7" in bad.value.message
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    answer = client.completions.create(model=chat_model.name, prompt="still", max_tokens=2)
    assert answer.usage.completion_tokens == 2
