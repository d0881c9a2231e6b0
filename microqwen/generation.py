"""Generation: from prompt ids to a stream of text, one token at a time.

The loop every language model runs:

    logits = model.prefill(prompt)                  # the whole prompt through the KV cache
    repeat:
        next = sampler.sample(logits, ids so far)   # greedy, or drawn from the filtered softmax
        stop if next is an end-of-sequence id
        print its text                              # held back while a UTF-8 character is incomplete
        logits = model.forward(next, pos)           # one more position in the cache

It stops at an end-of-sequence id (Qwen2.5-Instruct ends its answer with `<|im_end|>`), after
`max_new_tokens`, when a stop string appears in the text, or at the end of the context.

`Conversation` keeps a chat going: each turn renders the whole conversation with the chat
template, keeps the part of the KV cache that still matches it, and runs only the new tokens.
`Timings` adds up where the seconds went, and reports them the way llama.cpp does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Generator, Iterator, Sequence

from .errors import UsageError
from .model import Hook, Qwen2ForCausalLM, check_context
from .sampling import Sampler, SamplingParams
from .tokenizer import StreamDecoder, Tokenizer


@dataclass(frozen=True)
class Token:
    """One generated token: its id, and the text it releases (may be '' while text is held back).

    The last item of a stream may have id None: the text still held back when generation ended
    (the end of a character or of a possible stop string), released without a new token.
    """

    id: int | None
    text: str


@dataclass
class Timings:
    """Seconds spent loading, on the prompt (prefill) and on generated tokens (decode)."""

    load_seconds: float = 0.0
    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    generated_tokens: int = 0
    generate_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def report(self) -> str:
        """The timing block, in llama.cpp's layout (milliseconds, per token, tokens per second)."""
        total = 1000 * (time.perf_counter() - self.started)
        return "\n".join([
            f"load time   = {1000 * self.load_seconds:10.2f} ms",
            _rate_line("prompt eval", self.prompt_seconds, self.prompt_tokens, "tokens"),
            _rate_line("eval time", self.generate_seconds, self.generated_tokens, "runs"),
            f"total time  = {total:10.2f} ms",
        ])  # fmt: skip


def _rate_line(label: str, seconds: float, count: int, unit: str) -> str:
    per_token = 1000 * seconds / count if count else 0.0
    per_second = count / seconds if seconds else 0.0
    return (f"{label:<11} = {1000 * seconds:10.2f} ms / {count:5d} {unit:<6} "
            f"({per_token:8.2f} ms per token, {per_second:8.2f} tokens per second)")  # fmt: skip


class StopStrings:
    """Releases text, holding back any tail that could be the start of a stop string.

    ```python
    >>> stop = StopStrings(["\\nUser:"])
    >>> stop.feed("Hi!\\nUs"), stop.feed("e"), stop.feed("r: next"), stop.stopped
    ('Hi!', '', '', True)

    ```
    """

    def __init__(self, stops: Collection[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The text that can be shown now; after a stop string, nothing more."""
        if self.stopped:
            return ""
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            released, self.pending = self.pending[: min(hits)], ""
            return released
        keep = max([_overlap(self.pending, s) for s in self.stops] + [0])
        released, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep :]
        return released

    def flush(self) -> str:
        """Whatever is still held back (the stream ended without a stop string)."""
        released, self.pending = self.pending, ""
        return released


def _overlap(text: str, stop: str) -> int:
    """The length of the longest end of `text` that is a beginning of `stop`."""
    for length in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:length]):
            return length
    return 0


def generate(
    model: Qwen2ForCausalLM,
    prompt: str | Sequence[int],
    max_new_tokens: int = 256,
    sampler: Sampler | None = None,
    stop: Collection[str] = (),
    timings: Timings | None = None,
    progress: Callable[[int, int], None] | None = None,
    cached_ids: Sequence[int] = (),
    hook: Hook | None = None,
) -> Iterator[Token]:
    """Continue `prompt` after the tokens already in the model's KV cache; yield each new token.

    Args:
        model: the model, with its `tokenizer` (to encode a text prompt and decode the tokens;
            without one every `Token.text` is '') and its `eos_token_ids`.
        prompt: a text, or token ids. They are appended to what the cache holds (call
            `model.reset()` first for a fresh sequence).
        max_new_tokens: stop after this many new tokens.
        sampler: how to pick each token (default: the model's own `sampling` defaults, greedy
            without them).
        stop: stop when one of these strings appears in the text (it is not shown).
        timings: add the prompt and generation times here.
        progress: `progress(done, total)` while the prompt is evaluated.
        cached_ids: the ids the cache already holds, which the repetition penalty counts as part of
            the text, as the reference does with the whole input.
        hook: the model's hook (`microqwen.model.Hook`) at every point of every position.

    The last generated token is not run through the model: nothing would read its logits.

    ```python
    for token in generate(model, "Once upon a time", max_new_tokens=20):
        print(token.text, end="", flush=True)
    ```
    """
    if max_new_tokens < 0:
        raise UsageError(f"the number of new tokens (-n) must be 0 or more, got {max_new_tokens}")
    tokenizer = model.tokenizer
    prompt_ids = _encode(prompt, tokenizer)
    sampler = sampler or Sampler(model.sampling or SamplingParams(temperature=0.0))
    timings = timings or Timings()
    history = list(cached_ids) + list(prompt_ids)
    decoder = StreamDecoder(tokenizer) if tokenizer else None
    stops = StopStrings(stop)
    start = time.perf_counter()
    logits = model.prefill(prompt_ids, hook, progress)
    timings.prompt_seconds += time.perf_counter() - start
    timings.prompt_tokens += len(prompt_ids)
    for count in range(max_new_tokens):
        start = time.perf_counter()
        token = sampler.sample(logits, history)
        if token in model.eos_token_ids:
            break
        history.append(token)
        text = stops.feed(_piece(decoder, token)) if decoder else ""
        last = count + 1 == max_new_tokens or stops.stopped or model.pos == model.max_context
        if not last:
            logits = model.forward(token, model.pos, hook)
        timings.generate_seconds += time.perf_counter() - start
        timings.generated_tokens += 1
        yield Token(token, text)
        if last:
            break
    if decoder:
        tail = stops.feed(decoder.flush()) + stops.flush()
        if tail:
            yield Token(None, tail)


def _encode(prompt: str | Sequence[int], tokenizer: Tokenizer | None) -> list[int]:
    """The prompt's ids: a text through the tokenizer, ids as they are."""
    if not isinstance(prompt, str):
        return list(prompt)
    if tokenizer is None:
        raise UsageError("a text prompt needs a tokenizer, and this model has none: give token ids")
    return tokenizer.encode(prompt)


def _piece(decoder: StreamDecoder, token: int) -> str:
    """The text a generated token completes. Ids past the tokenizer's (151,665..151,935 are padding
    rows of the embedding, which a model should never pick) decode to nothing, as in transformers."""
    return decoder.feed(token) if token < decoder.tokenizer.vocab_size else ""


class Conversation:
    """A chat whose history lives in the model's KV cache, turn after turn.

    Each `ask` renders the whole conversation with the chat template, keeps the cached
    positions that still match its tokens, and prefills only the rest. The model must have a
    tokenizer; `sampler` defaults to the model's own sampling defaults.

    ```python
    chat = Conversation(model)
    print("".join(token.text for token in chat.ask("What is the capital of France?")))
    ```
    """

    def __init__(self, model: Qwen2ForCausalLM, sampler: Sampler | None = None, system: str | None = None,
                 max_new_tokens: int = 512, timings: Timings | None = None) -> None:  # fmt: skip
        if model.tokenizer is None:
            raise UsageError("a conversation needs a tokenizer (with the chat template), and this model has none")
        self.model, self.tokenizer = model, model.tokenizer
        self.sampler = sampler or Sampler(model.sampling or SamplingParams(temperature=0.0))
        self.system = system
        self.max_new_tokens = max_new_tokens
        self.timings = timings or Timings()
        self.messages: list[dict[str, str]] = []
        self.cached: list[int] = []  # the ids whose positions the KV cache holds, in order
        self.reset()

    def reset(self) -> None:
        """Start over: only the system prompt (if any) remains."""
        self.messages = [{"role": "system", "content": self.system}] if self.system is not None else []
        self.cached = []
        self.model.reset()

    def ask(
        self, text: str, progress: Callable[[int, int], None] | None = None
    ) -> Generator[Token, None, None]:
        """Add a user message and stream the assistant's answer (which joins the history).

        A conversation that no longer fits the context is a `ContextError`, and the message is
        not added. If the caller stops early (Ctrl-C), the answer so far is kept, and the cache
        is cut back to the last position that is complete in every layer.
        """
        messages = self.messages + [{"role": "user", "content": text}]
        ids = self.tokenizer.encode(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))
        check_context(0, len(ids), self.model.max_context)  # before the message joins the history
        self.messages = messages
        keep = _common_prefix(self.cached, ids[:-1])  # at least one token must run, for its logits
        self.model.truncate(keep)
        answer: list[Token] = []
        stream = generate(self.model, ids[keep:], self.max_new_tokens, self.sampler, timings=self.timings,
                          progress=progress, cached_ids=ids[:keep])  # fmt: skip
        try:
            for token in stream:
                answer.append(token)
                yield token
        finally:
            self.messages.append({"role": "assistant", "content": "".join(t.text for t in answer)})
            fed = ids + [t.id for t in answer if t.id is not None]  # the cache holds a prefix of these
            self.cached = fed[: self.model.pos]  # pos counts the last layer, the least complete one
            self.model.truncate(len(self.cached))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
