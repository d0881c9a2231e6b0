"""Sampling: turning the 151,936 logits of one step into the next token id.

The model ends every step with one score (a *logit*) per vocabulary entry. The softmax turns
scores into probabilities, p_i = exp(s_i) / sum_j exp(s_j), and the next token is drawn from them.
Hugging Face transformers' `generate` first reshapes the scores, in this order:

    1. repetition penalty  each id seen so far: s / r if s > 0, else s * r
    2. temperature         s / T: T < 1 sharpens, T > 1 flattens
    3. top-k               keep the k highest scores (ties at the k-th survive)
    4. top-p               keep the most probable tokens until their mass reaches p
    5. min-p               keep p >= min_p x the largest probability

and then samples from the softmax of what is left. Greedy decoding (temperature 0 here,
`do_sample: false` there) skips 2-5 and takes the highest score, the lowest id on a tie.

A worked example with four tokens, the scores 2.0, 1.0, 0.5, -1.0 and top-k 2:
exp(2.0) = 7.39 and exp(1.0) = 2.72 survive, and 7.39 / (7.39 + 2.72) = 0.731.

    >>> sampler = Sampler(SamplingParams(temperature=1.0, top_k=2, seed=0))
    >>> [(i, round(p, 3)) for i, p in sampler.distribution([2.0, 1.0, 0.5, -1.0])]
    [(0, 0.731), (1, 0.269)]
    >>> sampler.sample([2.0, 1.0, 0.5, -1.0]) in (0, 1)
    True

Throughout, a filter works on *weights*: the softmax of the candidates' scores (`microqwen.model.softmax`,
the same function attention uses), and drops the tokens it removes; `p_i = w_i / sum(w)` over the
survivors. That is the reference's softmax over scores set to -inf, without carrying 151,936 entries
through every step.

Sums of weights use `math.fsum`, which is correctly rounded and so gives the same bits on every
Python (the builtin `sum` compensates for rounding on CPython 3.12 but not on 3.9 or PyPy), and the
draws use only `random.Random.random()`, whose sequence for a given seed Python guarantees: a seed
gives the same tokens on CPython and PyPy.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import os
import random
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

from .config import Config, eos_token_ids
from .errors import ConfigError, MicroQwenError, UsageError
from .jsonparse import JSON, parse_file
from .model import softmax

Candidates = tuple[Sequence[int], list[float]]
"""Surviving token ids and their weights (probabilities before the filters removed any), in matching order."""

FLAGS = {
    "temperature": "--temp",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "min_p": "--min-p",
    "repetition_penalty": "--repeat-penalty",
    "seed": "--seed",
}
"""The command-line flag that sets each field, named in error messages."""

TRANSFORMERS_DEFAULTS = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0}
"""What transformers' `generate` uses for a key that generation_config.json leaves out (min_p: none)."""


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token; each field at its "off" value disables that step.

    Attributes:
        temperature: divide the scores by this; 0 means greedy (argmax), as `do_sample: false`.
        top_k: keep the k highest scores; 0 keeps all.
        top_p: keep the most probable tokens until their probability mass reaches top_p; 1.0 keeps all.
        min_p: keep tokens with probability >= min_p x the top probability; 0.0 keeps all.
        repetition_penalty: r for the ids seen so far (s / r if s > 0 else s * r); 1.0 is none.
        seed: seeds the sampler's random.Random; None draws a fresh seed from the OS.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a `UsageError` naming the first field (and its flag) that is out of range."""
        _check_number(self, "temperature", lambda t: t >= 0, ">= 0 (0 = greedy)")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise UsageError(f"top_k ({FLAGS['top_k']}) must be an integer >= 0 (0 = off), got {self.top_k!r}")
        _check_number(self, "top_p", lambda p: 0 < p <= 1, "in (0, 1] (1 = off)")
        _check_number(self, "min_p", lambda p: 0 <= p <= 1, "in [0, 1] (0 = off)")
        _check_number(self, "repetition_penalty", lambda r: r > 0, "> 0 (1 = off)")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise UsageError(f"seed ({FLAGS['seed']}) must be an integer or absent, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax (temperature 0)."""
        return self.temperature == 0

    @classmethod
    def from_generation_config(
        cls,
        path: str,
        *,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repetition_penalty: float | None = None,
        seed: int | None = None,
    ) -> SamplingParams:
        """The model's defaults from generation_config.json, then the given overrides (None keeps).

        A key the file leaves out takes transformers' default (`TRANSFORMERS_DEFAULTS`); `do_sample`
        false or absent means greedy, which an explicit `temperature` override turns back into sampling.

        Examples:
            >>> p = SamplingParams.from_generation_config("tests/data/qwen2.5-0.5b-instruct/generation_config.json")
            >>> p.temperature, p.top_k, p.top_p, p.min_p, p.repetition_penalty
            (0.7, 20, 0.8, 0.0, 1.1)
            >>> SamplingParams.from_generation_config("tests/data/qwen2.5-0.5b-instruct/generation_config.json",
            ...                                       top_k=0, seed=42).top_k
            0
        """
        raw = _read_object(path)
        do_sample = raw.get("do_sample", TRANSFORMERS_DEFAULTS["do_sample"])
        if not isinstance(do_sample, bool):
            raise ConfigError(f"{path}: do_sample must be true or false, got {do_sample!r}")
        values = {key: _number(raw, key, default, path) for key, default in TRANSFORMERS_DEFAULTS.items()}
        try:
            from_file = cls(
                temperature=values["temperature"] if do_sample else 0.0,
                top_k=values["top_k"],
                top_p=values["top_p"],
                min_p=_number(raw, "min_p", 0.0, path),
                repetition_penalty=values["repetition_penalty"],
            )
        except UsageError as e:
            raise ConfigError(f"{path}: {e}") from None
        overrides = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "min_p": min_p,
                     "repetition_penalty": repetition_penalty, "seed": seed}
        changes: dict[str, Any] = {key: value for key, value in overrides.items() if value is not None}
        return replace(from_file, **changes)


def _check_number(params: SamplingParams, name: str, in_range: Callable[[float], bool], allowed: str) -> None:
    value = getattr(params, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and in_range(value)
    if not ok:
        raise UsageError(f"{name} ({FLAGS[name]}) must be a finite number {allowed}, got {value!r}")


def read_eos_token_ids(path: str) -> tuple[int, ...]:
    """The ids that end generation, from generation_config.json (empty if it names none).

    Generation stops at any of them. The Instruct model's file lists two, <|im_end|> and
    <|endoftext|>, while its config.json names only the first; transformers uses this list.

    Examples:
        >>> read_eos_token_ids("tests/data/qwen2.5-0.5b-instruct/generation_config.json")
        (151645, 151643)
    """
    return eos_token_ids(_read_object(path), path)


GGUF_SAMPLING = {"temperature": "general.sampling.temp", "top_k": "general.sampling.top_k",
                 "top_p": "general.sampling.top_p", "min_p": "general.sampling.min_p"}
"""The keys of a GGUF file for sampling defaults, which llama.cpp's converter copies from generation_config.json."""


def gguf_sampling(metadata: Mapping[str, object], source: str) -> SamplingParams:
    """A GGUF file's sampling defaults: the `general.sampling.*` keys, if the file has them.

    A file converted from a model with a generation_config.json may carry its temperature, top_k,
    top_p and min_p (gguf-py copies them); a key left out takes transformers' default, as for that
    file. A file with none of them (Qwen's own Q4_K_M files have none) means greedy decoding, as a
    model directory without generation_config.json does: the same text on every run, which
    `--temp` changes.
    """
    if not any(key in metadata for key in GGUF_SAMPLING.values()):
        return SamplingParams(temperature=0.0)
    values: dict[str, Any] = {field: metadata.get(key, TRANSFORMERS_DEFAULTS.get(field, 0.0))
                              for field, key in GGUF_SAMPLING.items()}  # fmt: skip
    try:
        return SamplingParams(**values)
    except UsageError as e:
        raise ConfigError(f"{source}: general.sampling: {e}") from None


def generation_defaults(path: str, config: Config, metadata: Mapping[str, object] | None = None,
                        ) -> tuple[SamplingParams, tuple[int, ...]]:  # fmt: skip
    """How the model's authors want it sampled, and the ids that end generation.

    A directory: both from generation_config.json; without that file, greedy decoding and config.json's
    eos ids. A GGUF file (`metadata`, its key/value pairs): `gguf_sampling`, and the eos ids of its
    config (`Config.from_gguf`).
    """
    if metadata:
        return gguf_sampling(metadata, path), config.eos_token_ids
    file = os.path.join(path, "generation_config.json")
    if not os.path.exists(file):
        return SamplingParams(temperature=0.0), config.eos_token_ids
    return SamplingParams.from_generation_config(file), read_eos_token_ids(file) or config.eos_token_ids


def _read_object(path: str) -> dict[str, JSON]:
    raw = parse_file(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a JSON object")
    return raw


def _number(raw: dict[str, JSON], key: str, default: JSON, path: str) -> JSON:
    """raw[key], or `default` when the key is absent or null; a string, list or object is refused."""
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, (str, list, dict)):
        raise ConfigError(f"{path}: {key} must be a number, got {value!r}")
    return value


def apply_repetition_penalty(logits: Sequence[float], previous_ids: Sequence[int], penalty: float) -> list[float]:
    """A copy of `logits` with every distinct id of `previous_ids` penalised (transformers'
    `RepetitionPenaltyLogitsProcessor`): s * r if s < 0, else s / r. With r > 1 both make the
    token less likely; a token counts once however often it appeared.

    Examples:
        >>> apply_repetition_penalty([2.0, -2.0, 1.0], [0, 1, 1], 2.0)
        [1.0, -4.0, 1.0]
    """
    scores = list(logits)  # [151936]
    if penalty == 1.0:
        return scores
    for token in set(previous_ids):
        if not 0 <= token < len(scores):
            raise UsageError(f"previous token id {token} is outside the vocabulary of {len(scores)} logits")
        score = scores[token]
        scores[token] = score * penalty if score < 0 else score / penalty
    return scores


def argmax(scores: Sequence[float]) -> int:
    """The id of the highest score; on a tie the lowest id, as `torch.argmax` does.

    Examples:
        >>> argmax([0.5, 3.0, -1.0, 3.0])
        1
    """
    return scores.index(max(scores))


def top_k_ids(scores: Sequence[float], top_k: int) -> Sequence[int]:
    """The ids whose score is at least the k-th highest (so ties at the k-th value survive), in id
    order. `heapq.nlargest` finds the k-th value in one pass, with no sort of the vocabulary.

    Examples:
        >>> top_k_ids([1.0, 5.0, 3.0, 3.0, 0.0], 2)
        [1, 2, 3]
    """
    if top_k == 0 or top_k >= len(scores):
        return range(len(scores))
    kth = heapq.nlargest(top_k, scores)[-1]
    return [token for token, score in enumerate(scores) if score >= kth]


def ranked(ids: Sequence[int], weights: Sequence[float]) -> list[tuple[float, int]]:
    """(weight, id) pairs, most probable first; among equal weights the higher id first, which is
    the reverse of the stable ascending sort that transformers' top-p starts from.

    Examples:
        >>> ranked([4, 7, 9], [0.5, 1.0, 0.5])
        [(1.0, 7), (0.5, 9), (0.5, 4)]
    """
    return sorted(zip(weights, ids), reverse=True)


def top_p_filter(ids: Sequence[int], weights: Sequence[float], top_p: float) -> Candidates:
    """Keep the most probable tokens while the mass *before* each one is below top_p (nucleus).

    transformers sorts ascending and removes the tokens whose cumulative probability is
    <= 1 - top_p; that is the same as keeping a token while the mass of the tokens ranked
    above it is < top_p, so the first token always stays and a boundary that lands exactly on a
    cumulative sum removes the next token. The survivors come back most probable first.

    Examples:
        >>> top_p_filter([0, 1, 2, 3], [1.0, 1.0, 1.0, 1.0], 0.5)   # mass before: 0, 1/4, then 2/4: stop
        ([3, 2], [1.0, 1.0])
    """
    need = top_p * math.fsum(weights)  # the mass to reach, in weight units: top_p x the normaliser
    cutoff = _weight_reaching(weights, need)
    kept_ids: list[int] = []
    kept_weights: list[float] = []
    before = 0.0
    contenders = [(weight, token) for token, weight in zip(ids, weights) if weight >= cutoff]
    for weight, token in sorted(contenders, reverse=True):  # the order of `ranked`
        if before >= need:
            break
        kept_ids.append(token)
        kept_weights.append(weight)
        before += weight
    return kept_ids, kept_weights


def _weight_reaching(weights: Sequence[float], need: float) -> float:
    """The weight of the last token top-p keeps: grow a partial selection of the largest weights
    (64, 512, 4096, ...) until its running mass reaches `need`, instead of sorting them all."""
    count = 64
    while True:
        largest = heapq.nlargest(count, weights)  # most probable first
        mass = 0.0
        for weight in largest:
            mass += weight
            if mass >= need:
                return weight
        if count >= len(weights):
            return largest[-1]
        count *= 8


def min_p_filter(ids: Sequence[int], weights: Sequence[float], min_p: float) -> Candidates:
    """Keep the tokens whose probability is at least min_p x the largest probability. Both sides
    share the softmax normaliser, so the test is on weights: w_i >= min_p x max(w).

    Examples:
        >>> min_p_filter([0, 1, 2], [1.0, 0.5, 0.05], 0.1)
        ([0, 1], [1.0, 0.5])
    """
    threshold = min_p * max(weights)
    kept = [(token, weight) for token, weight in zip(ids, weights) if weight >= threshold]
    return [token for token, _ in kept], [weight for _, weight in kept]


class Sampler:
    """Picks next tokens with one `SamplingParams` and its own seeded `random.Random`.

    Args:
        params: the sampling settings; `params.seed` seeds the generator (None: from the OS).
    """

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.rng = random.Random(params.seed)

    def candidates(self, logits: Sequence[float], previous_ids: Sequence[int] = ()) -> Candidates:
        """The tokens that survive every step, with their weights (not yet normalised).

        Args:
            logits: one score per vocabulary entry, [151936].
            previous_ids: every id of the prompt and of the output so far (for the penalty).
        """
        p = self.params
        if not logits:
            raise UsageError("there are no logits to sample from (an empty list)")
        if not math.isfinite(max(logits)):
            raise MicroQwenError(f"the largest logit is {max(logits)}; the model's output is not a number")
        scores = apply_repetition_penalty(logits, previous_ids, p.repetition_penalty)  # [151936]
        if p.greedy:
            return [argmax(scores)], [1.0]
        # s / T keeps the order of the scores, so top-k may look at the unscaled ones, and only
        # the (at most) k survivors are divided by T and exponentiated.
        ids = top_k_ids(scores, p.top_k)
        candidate_scores = scores if len(ids) == len(scores) else [scores[token] for token in ids]  # [151936] or ~[k]
        weights = softmax(candidate_scores, p.temperature)
        if p.top_p < 1.0:
            ids, weights = top_p_filter(ids, weights, p.top_p)
        if p.min_p > 0.0:
            ids, weights = min_p_filter(ids, weights, p.min_p)
        return ids, weights

    def distribution(self, logits: Sequence[float], previous_ids: Sequence[int] = ()) -> list[tuple[int, float]]:
        """The surviving (id, probability) pairs, most probable first; the probabilities sum to 1.

        Greedy decoding gives one pair, (argmax, 1.0).
        """
        ids, weights = self.candidates(logits, previous_ids)
        total = math.fsum(weights)
        return [(token, weight / total) for weight, token in ranked(ids, weights)]

    def sample(self, logits: Sequence[float], previous_ids: Sequence[int] = ()) -> int:
        """Draw the next token id from `distribution(logits, previous_ids)`.

        Inverse transform sampling: u uniform in [0, total), and the token whose slice of the
        running sum of weights contains u. When one token is left (greedy decoding, or a filter
        that kept one), nothing is drawn and the generator does not advance.
        """
        ids, weights = self.candidates(logits, previous_ids)
        if len(ids) == 1:
            return ids[0]
        cumulative = list(itertools.accumulate(weights))
        u = self.rng.random() * cumulative[-1]
        return ids[bisect.bisect(cumulative, u, 0, len(ids) - 1)]
