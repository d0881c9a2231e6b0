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
from typing import Callable, Collection, Generator, Sequence

from .errors import UsageError
from .model import Hook, Qwen2ForCausalLM, check_context
from .promptcache import common_prefix
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
    restored_tokens: int = 0
    generated_tokens: int = 0
    generate_seconds: float = 0.0
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    def report(self) -> str:
        """The timing block, in llama.cpp's layout (milliseconds, per token, tokens per second).

        `prompt eval` counts the prompt tokens the model ran; those restored from the prompt cache
        and the drafts of lookup decoding get a line of their own when there are any.
        """
        total = 1000 * (time.perf_counter() - self.started)
        lines = [f"load time   = {1000 * self.load_seconds:10.2f} ms",
                 _rate_line("prompt eval", self.prompt_seconds, self.prompt_tokens, "tokens")]  # fmt: skip
        if self.restored_tokens:
            lines.append(f"prompt cache= {self.restored_tokens:10d} tokens restored from disk, not evaluated")
        lines.append(_rate_line("eval time", self.generate_seconds, self.generated_tokens, "runs"))
        if self.drafted_tokens:
            share = 100 * self.accepted_tokens / self.drafted_tokens
            lines.append(f"lookup      = {self.drafted_tokens:10d} drafted, {self.accepted_tokens} accepted ({share:.0f}%)")
        lines.append(f"total time  = {total:10.2f} ms")
        return "\n".join(lines)


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
    lookup: int = 0,
) -> Generator[Token, None, None]:
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
        lookup: with greedy decoding and no hook, draft up to this many tokens by prompt lookup
            (`lookup_drafts`) and check them in one pass: the same tokens, fewer passes when text repeats.

    The last generated token is not run through the model: nothing would read its logits. A fresh
    sequence (an empty cache) without a hook uses the model's `prompt_cache`, if it has one.

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
    if lookup and not sampler.params.greedy:
        raise UsageError(f"lookup decoding (--lookup {lookup}) checks drafts against greedy decoding: it needs --temp 0")
    if lookup and hook is not None:
        raise UsageError("lookup decoding goes without a hook (a hook sees one pass per token)")
    timings = timings or Timings()
    history = list(cached_ids) + list(prompt_ids)
    decoder = StreamDecoder(tokenizer) if tokenizer else None
    stops = StopStrings(stop)
    logits = _evaluate_prompt(model, prompt_ids, hook, progress, timings)
    emitted, length = 0, lookup  # length: how many tokens the next lookup may draft
    while emitted < max_new_tokens:
        start, pos = time.perf_counter(), model.pos
        room = min(max_new_tokens - emitted - 1, model.max_context - pos - 1)  # tokens that may follow this one
        tokens, after, drafted = _next_tokens(model, sampler, logits, history, min(length, room), timings)
        length = draft_length(length, lookup, drafted, len(tokens) - 1)
        for i, token in enumerate(tokens):  # the sampled token, then the drafts greedy decoding agreed with
            if token in model.eos_token_ids:
                model.truncate(pos + i)  # the tokens before it were run, to choose it
                break
            history.append(token)
            emitted += 1
            text = stops.feed(_piece(decoder, token)) if decoder else ""
            last = emitted == max_new_tokens or stops.stopped or pos + i == model.max_context  # no room left
            if last:
                model.truncate(pos + i)  # as one by one: the last token is not run through the model
            timings.generate_seconds += time.perf_counter() - start
            timings.generated_tokens += 1
            yield Token(token, text)
            start = time.perf_counter()
            if last:
                break
        else:
            logits = after if model.pos > pos else model.forward(tokens[-1], pos, hook)
            timings.generate_seconds += time.perf_counter() - start
            continue
        break
    if decoder:
        tail = stops.feed(decoder.flush()) + stops.flush()
        if tail:
            yield Token(None, tail)


def _evaluate_prompt(model: Qwen2ForCausalLM, ids: list[int], hook: Hook | None,
                     progress: Callable[[int, int], None] | None, timings: Timings) -> list[float]:  # fmt: skip
    """The logits after the prompt. A fresh sequence first restores the longest prefix the prompt cache
    has (never the last token: its logits are needed), and saves the prompt's cache afterwards.

    With a hook the cache is not used: the hook must see (and may change) every position.
    """
    start = time.perf_counter()
    cache = model.prompt_cache if hook is None and model.pos == 0 else None
    restored = cache.restore(model, ids[:-1]) if cache else 0
    logits = model.prefill(ids[restored:], hook, progress)
    if cache:
        cache.save(model, ids)
    timings.prompt_seconds += time.perf_counter() - start
    timings.prompt_tokens += len(ids) - restored
    timings.restored_tokens += restored
    return logits


def _next_tokens(model: Qwen2ForCausalLM, sampler: Sampler, logits: list[float], history: list[int], lookup: int,
                 timings: Timings) -> tuple[list[int], list[float], int]:  # fmt: skip
    """The next token, sampled from `logits`; with lookup, also the drafts that greedy decoding agrees with.

    With drafts, the token and its drafts run through the layers in one pass (`final_states`), and the
    output head runs position by position while the drafts are right: the returned logits are those after
    the last token kept, and the cache then holds every token returned. Without, nothing is run: the
    caller runs the token when (and if) it needs its logits. The last value is how many were drafted.
    """
    token = sampler.sample(logits, history)
    drafts = lookup_drafts(history + [token], lookup) if token not in model.eos_token_ids else []
    if not drafts:
        return [token], logits, 0
    states = model.final_states([token] + drafts)  # states[i]: after the token and drafts[:i]
    kept = [token]
    after = model.lm_head(states[0])
    for draft, state in zip(drafts, states[1:]):
        if sampler.sample(after, history + kept) != draft:
            break
        kept.append(draft)
        after = model.lm_head(state)
    timings.drafted_tokens += len(drafts)
    timings.accepted_tokens += len(kept) - 1
    model.truncate(model.pos - len(drafts) - 1 + len(kept))  # the drafts that were not kept
    return kept, after, len(drafts)


def draft_length(length: int, limit: int, drafted: int, accepted: int) -> int:
    """How many tokens the next lookup may draft: 2 more after a pass whose drafts were all right, 1 fewer
    after a miss, within 1..limit (the schedule of transformers' assisted generation, "heuristic").

    Checking a draft costs a batched pass over all of it, right or wrong; so where the text stops
    repeating, the drafts shrink to one token, which costs little more than the step itself.

    ```python
    >>> draft_length(8, 8, 8, 3), draft_length(3, 8, 3, 3), draft_length(8, 8, 0, 0)
    (7, 5, 8)

    ```
    """
    if not drafted:
        return length
    return min(limit, length + 2) if accepted == drafted else max(1, length - 1)


def lookup_drafts(history: Sequence[int], count: int) -> list[int]:
    """Prompt lookup: the tokens that followed the latest earlier occurrence of the last few tokens.

    The last `n` ids (n = 3, else 2) are searched for earlier in `history`, most recent first; the up to
    `count` ids after that occurrence are the draft. Text that repeats (code being edited, a quoted
    passage, a list) makes good drafts.

    ```python
    >>> lookup_drafts([5, 6, 7, 8, 9, 1, 6, 7], 3)    # 6, 7 was followed by 8, 9, 1
    [8, 9, 1]

    ```
    """
    if count <= 0:
        return []
    for n in LOOKUP_NGRAMS:
        if len(history) <= n:
            continue
        tail = list(history[-n:])
        for start in range(len(history) - n - 1, -1, -1):
            if list(history[start : start + n]) == tail:
                return list(history[start + n : start + n + count])
    return []


LOOKUP_NGRAMS = (3, 2)
"""The lengths of the tail that prompt lookup matches, longest first."""


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
                 max_new_tokens: int = 512, timings: Timings | None = None, lookup: int = 0) -> None:  # fmt: skip
        if model.tokenizer is None:
            raise UsageError("a conversation needs a tokenizer (with the chat template), and this model has none")
        self.model, self.tokenizer = model, model.tokenizer
        self.sampler = sampler or Sampler(model.sampling or SamplingParams(temperature=0.0))
        self.system = system
        self.max_new_tokens = max_new_tokens
        self.timings = timings or Timings()
        self.lookup = lookup
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
        keep = common_prefix(self.cached, ids[:-1])  # at least one token must run, for its logits
        self.model.truncate(keep)
        answer: list[Token] = []
        stream = generate(self.model, ids[keep:], self.max_new_tokens, self.sampler, timings=self.timings,
                          progress=progress, cached_ids=ids[:keep], lookup=self.lookup)  # fmt: skip
        try:
            for token in stream:
                answer.append(token)
                yield token
        finally:
            self.messages.append({"role": "assistant", "content": "".join(t.text for t in answer)})
            fed = ids + [t.id for t in answer if t.id is not None]  # the cache holds a prefix of these
            self.cached = fed[: self.model.pos]  # pos counts the last layer, the least complete one
            self.model.truncate(len(self.cached))
