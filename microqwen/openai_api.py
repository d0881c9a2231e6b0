"""The OpenAI API as `microqwen serve` speaks it: requests checked field by field, responses and chunks.

Tools written for OpenAI's API (the `openai` client, chat front ends, editors) talk to a local
model through the same two requests, as they do with llama.cpp's `llama-server`, vLLM or Ollama:

    POST /v1/chat/completions  {"messages": [{"role": "user", "content": "Hi"}], ...}
        -> {"object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": ...},
            "finish_reason": "stop" | "length", "logprobs": ...}], "usage": {...}}
    POST /v1/completions       {"prompt": "Once upon a time", ...}
        -> {"object": "text_completion", "choices": [{"text": ..., "finish_reason": ...}], "usage": {...}}

With `"stream": true` the answer comes as server-sent events, one `data: {chunk}` per piece of
text, then `data: [DONE]`. A chat request's messages go through the model's chat template
(`microqwen.chat`); a completion's prompt (a text, or token ids) is continued as it is.

Sampling follows the request, field by field; a field the request leaves out takes the model's
generation_config.json value (Qwen2.5-Instruct: temperature 0.7, top_p 0.8, top_k 20), except the
repetition penalty, which is off unless the request asks (`repetition_penalty`, an extension, like
`top_k` and `min_p`, that vLLM accepts too). `temperature: 0` is greedy decoding.

`logprobs` are the model's own: log p = logit - log(sum e^logit) over the whole vocabulary
(`microqwen.model.log_softmax`), before temperature or any filter, as OpenAI and vLLM report them.

A request that cannot be served is a `RequestError`: the HTTP status and a message naming the
field, sent as OpenAI's error object `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import heapq
import json
import math
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from .errors import ContextError, MicroQwenError, UsageError
from .jsonparse import JSON
from .distribution import log_softmax
from .model import check_context
from .sampling import SamplingParams
from .tokenizer import Tokenizer

MAX_TOP_LOGPROBS = {"chat": 20, "text": 5}
"""The most alternatives per token a request may ask for (OpenAI's limits: top_logprobs 20, logprobs 5)."""

COMPLETION_MAX_TOKENS = 16
"""A completion's default max_tokens, as in OpenAI's API; a chat answer runs until it ends (or the context does)."""

NEUTRAL: dict[str, JSON] = {
    "n": 1,
    "best_of": 1,
    "echo": False,
    "suffix": None,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logit_bias": {},
    "tools": [],
    "functions": [],
    "response_format": {"type": "text"},
}
"""Fields of OpenAI's API that this server does not implement: accepted at these values (or null) only."""


class RequestError(MicroQwenError):
    """A request refused: the HTTP status, a message naming what is wrong, and the field (OpenAI's `param`)."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 headers: Mapping[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """OpenAI's error object."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}


@dataclass(frozen=True)
class CompletionRequest:
    """What a chat or completion request asks for, checked.

    Attributes:
        chat: a chat request (the answer is a message) or a completion (the answer continues the text).
        prompt_ids: the prompt, after the chat template for a chat request.
        max_tokens: new tokens at most (None: until the answer ends or the context is full).
        sampling: how to pick each token.
        stop: strings that end the answer (not included in it).
        stream: answer as server-sent events.
        include_usage: with `stream`, end with a chunk that carries `usage` (`stream_options`).
        top_logprobs: None for no logprobs, else how many alternatives to list per token (0 or more).
        model: the model name to put in the answer.
    """

    chat: bool
    prompt_ids: list[int]
    max_tokens: int | None
    sampling: SamplingParams
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    top_logprobs: int | None = None
    model: str = ""


# ------------------------------------------------------------------ reading a request


class Fields:
    """The fields of a JSON request body, each read with its type and range checked.

    ```python
    >>> Fields({"temperature": 0.5}).number("temperature", 0, 2)
    0.5
    >>> Fields({"temperature": "hot"}).number("temperature", 0, 2)
    Traceback (most recent call last):
    ...
    microqwen.openai_api.RequestError: temperature must be a number in [0, 2], got 'hot'

    ```
    """

    def __init__(self, body: JSON) -> None:
        if not isinstance(body, dict):
            raise RequestError(400, f"the request body must be a JSON object, got {_kind(body)}")
        self.body: dict[str, JSON] = body

    def get(self, name: str) -> JSON:
        """The raw value, None when absent or null."""
        return self.body.get(name)

    def number(self, name: str, low: float, high: float, low_open: bool = False) -> float | None:
        """A finite number in [low, high] (or (low, high] when `low_open`); None when absent."""
        value = self.get(name)
        if value is None:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not (low < value if low_open else low <= value) or value > high:
            bracket = "(" if low_open else "["
            raise RequestError(400, f"{name} must be a number in {bracket}{low:g}, {high:g}], got {value!r}", name)
        return float(value)

    def integer(self, name: str, low: int, high: int | None = None) -> int | None:
        """An integer >= low (and <= high); None when absent."""
        value = self.get(name)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
            allowed = f">= {low}" if high is None else f"in {low}..{high}"
            raise RequestError(400, f"{name} must be an integer {allowed}, got {value!r}", name)
        return value

    def boolean(self, name: str) -> bool:
        """true or false; False when absent."""
        value = self.get(name)
        if value is not None and not isinstance(value, bool):
            raise RequestError(400, f"{name} must be true or false, got {value!r}", name)
        return bool(value)

    def string(self, name: str) -> str | None:
        """A string; None when absent."""
        value = self.get(name)
        if value is not None and not isinstance(value, str):
            raise RequestError(400, f"{name} must be a string, got {_kind(value)}", name)
        return value

    def unsupported(self) -> None:
        """Refuse a field of `NEUTRAL` set to anything but its neutral value."""
        for name, neutral in NEUTRAL.items():
            value = self.get(name)
            if value is not None and value != neutral:
                raise RequestError(400, f"{name}: only {_show(neutral)} is supported by this server, got {_show(value)}",
                                   name)  # fmt: skip


def _kind(value: JSON) -> str:
    """The JSON kind of a value, for messages: 'a string', 'an array', 'null', ..."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _show(value: JSON) -> str:
    return json.dumps(value)


def parse_completion(body: JSON, chat: bool, tokenizer: Tokenizer, defaults: SamplingParams | None,
                     max_context: int, model_name: str) -> CompletionRequest:  # fmt: skip
    """A chat (`chat=True`) or completion request body, checked; `defaults` are the model's sampling defaults."""
    fields = Fields(body)
    fields.unsupported()
    fields.string("model")
    where = "messages" if chat else "prompt"
    try:
        if chat:
            prompt_ids = tokenizer.encode(tokenizer.apply_chat_template(_messages(fields), add_generation_prompt=True))
        else:
            prompt_ids = _prompt(fields, tokenizer)
        check_context(0, len(prompt_ids), max_context)
    except UsageError as e:  # the chat template's checks of each message, or text that is not text
        raise RequestError(400, str(e) if str(e).startswith(where) else f"{where}: {e}", where) from None
    except ContextError as e:  # a prompt past the context
        raise RequestError(400, f"{where}: the prompt does not fit: {e}", where) from None
    stream = fields.boolean("stream")
    return CompletionRequest(
        chat=chat,
        prompt_ids=prompt_ids,
        max_tokens=_max_tokens(fields, chat),
        sampling=_sampling(fields, defaults),
        stop=_stop(fields),
        stream=stream,
        include_usage=_include_usage(fields, stream),
        top_logprobs=_top_logprobs(fields, chat),
        model=model_name,
    )


def _messages(fields: Fields) -> list[dict[str, Any]]:
    """The chat messages, each content as one string (a list of text parts is joined)."""
    messages = fields.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty array of {\"role\", \"content\"} objects", "messages")
    checked = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(400, f"{where} must be an object with role and content, got {_kind(message)}", where)
        checked.append(dict(message, content=_content(message.get("content"), f"{where}.content")))
    return checked


def _content(content: JSON, where: str) -> str | None:
    """A message's content: a string, null, or an array of {"type": "text", "text": ...} parts."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(400, f"{where} must be a string or an array of text parts, got {_kind(content)}", where)
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise RequestError(400, f"{where}[{i}]: only {{\"type\": \"text\", \"text\": ...}} parts are supported",
                               f"{where}[{i}]")  # fmt: skip
        texts.append(part["text"])
    return "".join(texts)


def _prompt(fields: Fields, tokenizer: Tokenizer) -> list[int]:
    """A completion's prompt: a string, an array of one string, or an array of token ids."""
    prompt = fields.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # one prompt in an array, as the openai client may send it
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        ids = list(prompt)
        bad = [t for t in ids if not 0 <= t < tokenizer.vocab_size]
        if bad:
            raise RequestError(400, f"prompt: token id {bad[0]} is not in the vocabulary (0..{tokenizer.vocab_size - 1})",
                               "prompt")  # fmt: skip
    elif isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, (str, list)) for p in prompt):
        raise RequestError(400, f"prompt: one prompt per request, got {len(prompt)}", "prompt")
    else:
        raise RequestError(400, f"prompt must be a string or an array of token ids, got {_kind(prompt)}", "prompt")
    if not ids:
        raise RequestError(400, "prompt is empty", "prompt")
    return ids


def _max_tokens(fields: Fields, chat: bool) -> int | None:
    """max_completion_tokens (OpenAI's newer name) or max_tokens; the default is `COMPLETION_MAX_TOKENS`
    for a completion, none for a chat."""
    newer, older = fields.integer("max_completion_tokens", 1), fields.integer("max_tokens", 1)
    given = newer if newer is not None else older
    if given is None and not chat:
        return COMPLETION_MAX_TOKENS
    return given


def _sampling(fields: Fields, defaults: SamplingParams | None) -> SamplingParams:
    """The model's defaults for what the request leaves out, with the repetition penalty off unless asked."""
    base = replace(defaults or SamplingParams(temperature=0.0), repetition_penalty=1.0, seed=None)
    top_k = fields.integer("top_k", -1)
    given = {
        "temperature": fields.number("temperature", 0, 2),
        "top_p": fields.number("top_p", 0, 1, low_open=True),
        "top_k": 0 if top_k == -1 else top_k,  # vLLM's -1, like 0, turns top-k off
        "min_p": fields.number("min_p", 0, 1),
        "repetition_penalty": fields.number("repetition_penalty", 0, 10, low_open=True),
        "seed": fields.integer("seed", -(2**63), 2**64 - 1),
    }
    changes: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
    return replace(base, **changes)


def _stop(fields: Fields) -> tuple[str, ...]:
    """stop: a string or an array of strings."""
    stop = fields.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise RequestError(400, f"stop must be a string or an array of strings, got {_kind(stop)}", "stop")


def _include_usage(fields: Fields, stream: bool) -> bool:
    options = fields.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise RequestError(400, "stream_options goes with stream: true", "stream_options")
    if not isinstance(options, dict):
        raise RequestError(400, f"stream_options must be an object, got {_kind(options)}", "stream_options")
    return Fields(options).boolean("include_usage")


def _top_logprobs(fields: Fields, chat: bool) -> int | None:
    """Chat: logprobs true/false and top_logprobs 0..20; completions: logprobs 0..5 (the alternatives)."""
    if not chat:
        return fields.integer("logprobs", 0, MAX_TOP_LOGPROBS["text"])
    top = fields.integer("top_logprobs", 0, MAX_TOP_LOGPROBS["chat"])
    if not fields.boolean("logprobs"):
        if top is not None:
            raise RequestError(400, "top_logprobs needs logprobs: true", "top_logprobs")
        return None
    return top or 0


# ------------------------------------------------------------------ log-probabilities


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of a generated token, and the `top` most likely tokens at its step: (id, logprob)."""

    id: int
    logprob: float
    top: list[tuple[int, float]]


def token_logprob(logits: Sequence[float], token: int, top: int) -> TokenLogprob:
    """log p of `token` under the softmax of `logits`, and the `top` most likely ids with theirs."""
    logprobs = log_softmax(logits)  # [151936]
    best = heapq.nlargest(top, range(len(logits)), key=logits.__getitem__) if top else []
    return TokenLogprob(token, logprobs[token], [(t, logprobs[t]) for t in best])


def token_string(tokenizer: Tokenizer, token: int) -> str:
    """A token as the logprobs name it: its text, or OpenAI's `bytes:\\xe4\\xb8` for bytes that are only
    part of a character (so that no two tokens share a name).

    ```python
    >>> from microqwen.tokenizer import BYTES_TO_UNICODE
    >>> tokenizer = Tokenizer({char: byte for byte, char in enumerate(BYTES_TO_UNICODE)}, [])
    >>> token_string(tokenizer, ord("a")), token_string(tokenizer, 0xE4)
    ('a', 'bytes:\\\\xe4')

    ```
    """
    data = tokenizer.token_bytes(token)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{byte:02x}" for byte in data)


def _chat_logprob(entry: TokenLogprob, tokenizer: Tokenizer) -> dict[str, Any]:
    def one(token: int, logprob: float) -> dict[str, Any]:
        return {"token": token_string(tokenizer, token), "logprob": logprob, "bytes": list(tokenizer.token_bytes(token))}

    return dict(one(entry.id, entry.logprob), top_logprobs=[one(t, lp) for t, lp in entry.top])


def _text_logprobs(entries: Sequence[tuple[TokenLogprob, int]], tokenizer: Tokenizer) -> dict[str, Any]:
    """A completion's logprobs object: parallel lists, each token with the offset (in characters of the
    answer) of the text it released."""
    return {
        "tokens": [token_string(tokenizer, e.id) for e, _ in entries],
        "token_logprobs": [e.logprob for e, _ in entries],
        "top_logprobs": [{token_string(tokenizer, t): lp for t, lp in e.top} for e, _ in entries],
        "text_offset": [offset for _, offset in entries],
    }


# ------------------------------------------------------------------ answers


def new_id(request: CompletionRequest) -> str:
    """A fresh id: chatcmpl-... for a chat answer, cmpl-... for a completion, as OpenAI's."""
    return ("chatcmpl-" if request.chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The token counts every answer carries."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip


class Answer:
    """Builds the response to one request from its pieces (`add`): chunk by chunk, or whole (`response`).

    `tokenizer` writes the logprobs entries; `created` and `id` are shared by all chunks of a stream.
    """

    def __init__(self, request: CompletionRequest, tokenizer: Tokenizer) -> None:
        self.request, self.tokenizer = request, tokenizer
        self.id, self.created = new_id(request), int(time.time())
        self.object = "chat.completion" if request.chat else "text_completion"
        self.text: list[str] = []
        self.length = 0  # characters of text so far
        self.entries: list[tuple[TokenLogprob, int]] = []  # each with the offset of its text

    def add(self, text: str, logprob: TokenLogprob | None) -> dict[str, Any] | None:
        """The next piece: the text a token released (maybe '', maybe more than its own), and its logprob.
        The chunk that streams it, or None when the piece carries nothing to send."""
        entries = [] if logprob is None else [(logprob, self.length)]
        self.text.append(text)
        self.length += len(text)
        self.entries += entries
        if not text and not entries:
            return None
        return self._chunk({"content": text} if self.request.chat else text, self._logprobs(entries), None)

    def response(self, finish: str, counts: dict[str, int]) -> dict[str, Any]:
        """The whole answer: one choice, its finish_reason, and usage."""
        choice: dict[str, Any] = {"index": 0}
        if self.request.chat:
            choice["message"] = {"role": "assistant", "content": "".join(self.text)}
        else:
            choice["text"] = "".join(self.text)
        choice.update(logprobs=self._logprobs(self.entries), finish_reason=finish)
        return dict(self._head(chunk=False), choices=[choice], usage=counts)

    def first_chunk(self) -> dict[str, Any] | None:
        """A chat stream opens with the assistant's role and no text; a completion stream has no opening."""
        if not self.request.chat:
            return None
        return self._chunk({"role": "assistant", "content": ""}, None, None)

    def final_chunks(self, finish: str, counts: dict[str, int]) -> list[dict[str, Any]]:
        """The chunk with finish_reason, then (with include_usage) one with usage and no choice."""
        chunks = [self._chunk({} if self.request.chat else "", None, finish)]
        if self.request.include_usage:
            chunks.append(dict(self._head(chunk=True), choices=[], usage=counts))
        return chunks

    def _head(self, chunk: bool) -> dict[str, Any]:
        kind = self.object + (".chunk" if chunk and self.request.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.request.model}

    def _logprobs(self, entries: Sequence[tuple[TokenLogprob, int]]) -> dict[str, Any] | None:
        if self.request.top_logprobs is None:
            return None
        if self.request.chat:
            return {"content": [_chat_logprob(e, self.tokenizer) for e, _ in entries]}
        return _text_logprobs(entries, self.tokenizer)

    def _chunk(self, delta: Any, logprobs: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if self.request.chat:
            choice["delta"] = delta
        else:
            choice["text"] = delta
        choice.update(logprobs=logprobs, finish_reason=finish)
        return dict(self._head(chunk=True), choices=[choice])


def finish_reason(tokenizer: Tokenizer, generated: Sequence[int], request: CompletionRequest, context_full: bool) -> str:
    """"stop" when the answer ended itself (an end-of-sequence id) or met a stop string; "length" when
    it ran into max_tokens or the end of the context."""
    if request.stop:
        text = tokenizer.decode(generated)
        if any(stop and stop in text for stop in request.stop):
            return "stop"
    if context_full or (request.max_tokens is not None and len(generated) >= request.max_tokens):
        return "length"
    return "stop"


def models_list(model_name: str, created: int) -> dict[str, Any]:
    """GET /v1/models: the one model this server holds."""
    return {"object": "list", "data": [model_card(model_name, created)]}


def model_card(model_name: str, created: int) -> dict[str, Any]:
    """GET /v1/models/{id}: OpenAI's model object."""
    return {"id": model_name, "object": "model", "created": created, "owned_by": "microqwen"}
