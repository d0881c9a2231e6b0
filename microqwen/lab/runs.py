"""Running one prompt again and again, each time with another hook: what every experiment is made of.

An experiment compares runs of the same prompt: a clean run, and runs in which a hook changes some
values (`writer`). A hook that changes nothing before position p leaves the KV cache of positions
0..p-1 as the clean run made it, so `Runs` keeps that part of the cache and runs only the rest:

    runs = Runs(model, ids)                            # ids: the prompt, T tokens
    clean = runs.logits()                              # prefill of all T tokens
    changed = runs.logits(writer({...}), first=3)      # the cache keeps 0..2; prefill of 3..T-1 with the hook

The results of the experiments are plain data (dataclasses of lists, numbers and strings: `to_json`
turns them into JSON), so a program such as a web page can call the lab and draw what comes back.
"""

from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..errors import UsageError
from ..model import Hook, Qwen2ForCausalLM, compose_hooks
from ..trace import Recorder, prefill_logits, token_label, token_pieces, top_tokens

Change = Tuple[int, Sequence[float]]
"""(start, values): write `values` over elements start.. of a point (a head's slice, or all of it)."""


def writer(changes: Mapping[tuple[str, int], Sequence[Change]]) -> Hook:
    """A hook that writes values into points: `changes[(point, pos)]` lists the (start, values) to write there.

    ```python
    >>> hook = writer({("layers.0.mlp.down_proj", 1): [(2, [0.0, 0.0])]})
    >>> hook("layers.0.mlp.down_proj", 1, (1.0, 2.0, 3.0, 4.0), (4,)), hook("layers.0.mlp.down_proj", 0, (1.0,), (1,))
    ([1.0, 2.0, 0.0, 0.0], None)

    ```
    """

    def hook(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> list[float] | None:
        todo = changes.get((name, pos))
        if todo is None:
            return None
        out = list(values)
        for start, new in todo:
            out[start : start + len(new)] = new
        return out

    return hook


@dataclass
class Run:
    """What one run left: `logits[pos]` after the chosen positions, `points[pos][name]` the kept values."""

    logits: Dict[int, List[float]]
    points: Dict[int, Dict[str, List[float]]]


class Runs:
    """Runs of one prompt with different hooks, reusing the KV cache of the positions no hook changes.

    `clean` counts the positions at the start of the cache that a run without a hook computed.
    """

    def __init__(self, model: Qwen2ForCausalLM, ids: Sequence[int]) -> None:
        if not ids:
            raise UsageError("the prompt is empty")
        self.model, self.ids = model, list(ids)
        self.last = len(self.ids) - 1
        self.clean = 0
        model.reset()

    def logits(self, hook: Hook | None = None, first: int = 0) -> list[float]:
        """The logits after the last token, with `hook` on; the hook must change nothing before position `first`."""
        return self.run(hook, first).logits[self.last]

    def run(self, hook: Hook | None = None, first: int = 0, at: Iterable[int] | None = None,
            keep: Iterable[str] = ()) -> Run:  # fmt: skip
        """One run with `hook` on (changing nothing before position `first`): the logits after each
        position of `at` (default: the last), and the values of the points `keep` at every position it ran.

        The cache is made to hold the clean positions 0..first-1, then the rest is prefilled with the hook.
        """
        model = self.model
        first = min(max(first, 0), self.last)  # at least one token runs, for its logits
        wanted = sorted(set([self.last] if at is None else at))
        if any(p < first for p in wanted):
            raise ValueError(f"the logits before position {first} are not computed in a run from there")
        if self.clean < first:
            model.truncate(self.clean)
            model.prefill(self.ids[self.clean : first])
            self.clean = first
        model.truncate(first)
        recorder = Recorder(set(keep).__contains__)
        logits = prefill_logits(model, self.ids[first:], compose_hooks(hook, recorder), wanted)
        self.clean = len(self.ids) if hook is None else first
        points = {pos: {name: point.values.tolist() for name, point in seen.items()}
                  for pos, seen in sorted(recorder.points.items())}  # fmt: skip
        return Run(logits, points)


@dataclass
class TokenChoice:
    """A next token: its id, its text (None without a tokenizer), its logit and probability."""

    id: int
    text: Optional[str]
    logit: float
    probability: float


def top_choices(model: Qwen2ForCausalLM, logits: Sequence[float], k: int) -> List[TokenChoice]:
    """The k most likely next tokens under the softmax of `logits` (`microqwen.trace.top_tokens`)."""
    pieces = token_pieces(model.tokenizer)
    return [TokenChoice(c.id, pieces(c.id), c.logit, c.probability) for c in top_tokens(logits, k)]


@dataclass
class Answers:
    """The two tokens whose logit difference l_a - l_b an experiment follows, with their texts."""

    a: int
    b: int
    a_text: Optional[str]
    b_text: Optional[str]


def answers_of(model: Qwen2ForCausalLM, answers: tuple[int, int]) -> Answers:
    """The pair (a, b) with the tokens' texts."""
    a, b = answers
    return Answers(a, b, token_text(model, a), token_text(model, b))


def top_two(logits: Sequence[float]) -> tuple[int, int]:
    """The two most likely tokens: the default pair of a logit difference."""
    first, second = heapq.nlargest(2, range(len(logits)), key=logits.__getitem__)
    return first, second


def token_text(model: Qwen2ForCausalLM, token: int) -> Optional[str]:
    """A token's text with the model's tokenizer (None without one)."""
    return token_pieces(model.tokenizer)(token)


def shown(model: Qwen2ForCausalLM, token: int) -> str:
    """A token for a message: its text quoted, or `#id` without a tokenizer."""
    return token_label(token, token_text(model, token))


def to_json(result: Any) -> Dict[str, Any]:
    """A lab result (a dataclass) as JSON-ready data: dicts, lists, numbers, strings and None."""
    data: Dict[str, Any] = dataclasses.asdict(result)
    return data
