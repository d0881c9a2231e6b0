"""Sampling: the same surviving tokens and probabilities as transformers' `generate`, checked settings,
greedy tie-breaking, reproducible seeded draws, and draws that follow the distribution.

The fixtures in tests/fixtures/sampling/ are recorded by scripts/make_sampling_fixtures.py, which runs
`generate` in the reference venv on constructed logits (see that script for how and why).
"""

from __future__ import annotations

import array
import hashlib
import json
import math
import pathlib
import random
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microqwen.errors import ConfigError, FormatError, MicroQwenError, UsageError
from microqwen.sampling import (
    Sampler,
    SamplingParams,
    apply_repetition_penalty,
    argmax,
    min_p_filter,
    read_eos_token_ids,
    top_k_ids,
    top_p_filter,
)

HERE = pathlib.Path(__file__).parent
FIXTURES = HERE / "fixtures" / "sampling"
INSTRUCT = str(HERE / "data" / "qwen2.5-0.5b-instruct" / "generation_config.json")
SMALL = json.loads((FIXTURES / "small.json").read_text())
FULL = json.loads((FIXTURES / "full_vocab.json").read_text())
DEFAULTS = json.loads((FIXTURES / "defaults.json").read_text())["defaults"]
VOCAB = 151_936


def full_logits(seed: int, scale: float, peaks: int, peak_low: float, peak_high: float) -> list[float]:
    """The recipe of scripts/make_sampling_fixtures.py (checked below against the recorded sha256)."""
    rng = random.Random(seed)
    logits = [(2.0 * rng.random() - 1.0) * scale for _ in range(VOCAB)]
    for _ in range(peaks):
        logits[rng.randrange(VOCAB)] = peak_low + (peak_high - peak_low) * rng.random()
    return list(array.array("f", logits))


@pytest.fixture(scope="module")
def full_vector() -> list[float]:
    logits = full_logits(**FULL["recipe"])
    assert hashlib.sha256(struct.pack(f"<{VOCAB}f", *logits)).hexdigest() == FULL["sha256_float32_le"]
    return logits


def params_from(config: dict[str, Any], tmp_path: pathlib.Path, **overrides: Any) -> SamplingParams:
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps(config))
    return SamplingParams.from_generation_config(str(path), **overrides)


def check_against_reference(case: dict[str, Any], logits: list[float], tmp_path: pathlib.Path) -> None:
    """Our distribution() against what transformers' generate recorded for this case."""
    params = params_from(case["generation_config"], tmp_path)
    previous = case["previous_ids"]
    distribution = Sampler(params).distribution(logits, previous)
    penalized = apply_repetition_penalty(logits, previous, params.repetition_penalty)
    if "greedy_token" in case:
        assert params.greedy
        assert distribution == [(case["greedy_token"], 1.0)]
        assert Sampler(params).sample(logits, previous) == case["greedy_token"]
        seen = [penalized[i] for i in case["seen_ids"]]
        assert seen == pytest.approx(case["processed_scores_of_seen_ids"], rel=1e-6)
        return
    assert sorted(token for token, _ in distribution) == case["survivors"]
    ours = dict(distribution)
    assert [ours[token] for token in case["survivors"]] == pytest.approx(case["probabilities"], abs=1e-6)
    scaled = [penalized[token] / params.temperature for token in case["survivors"]]
    assert scaled == pytest.approx(case["processed_scores"], rel=1e-6)
    probabilities = [p for _, p in distribution]
    assert probabilities == sorted(probabilities, reverse=True) and math.isclose(sum(probabilities), 1.0)


@pytest.mark.parametrize("case", SMALL["cases"], ids=lambda c: c["name"])
def test_small_vocabularies_match_the_reference(case: dict[str, Any], tmp_path: pathlib.Path) -> None:
    check_against_reference(case, case["logits"], tmp_path)


@pytest.mark.parametrize("case", FULL["cases"], ids=lambda c: c["name"])
def test_the_full_vocabulary_matches_the_reference(case: dict[str, Any], full_vector: list[float],
                                                   tmp_path: pathlib.Path) -> None:
    check_against_reference(case, full_vector, tmp_path)


def test_float32_arrays_work_like_lists(full_vector: list[float]) -> None:
    sampler = Sampler(SamplingParams.from_generation_config(INSTRUCT))
    prompt = FULL["cases"][0]["previous_ids"]
    assert sampler.distribution(array.array("f", full_vector), prompt) == sampler.distribution(full_vector, prompt)


# --- generation_config.json: defaults, the Instruct file, overrides --------------------------------------


def test_the_instruct_defaults_are_the_published_ones() -> None:
    """The published defaults (docs/reference/qwen2.5-0.5b.md): temperature 0.7, top_p 0.8, top_k 20, penalty 1.1."""
    p = SamplingParams.from_generation_config(INSTRUCT)
    assert (p.temperature, p.top_p, p.top_k, p.repetition_penalty) == (0.7, 0.8, 20, 1.1)
    assert p.min_p == 0.0 and p.seed is None and not p.greedy
    assert read_eos_token_ids(INSTRUCT) == (151645, 151643)


def test_missing_keys_take_transformers_defaults(tmp_path: pathlib.Path) -> None:
    assert DEFAULTS["do_sample"] is False and DEFAULTS["min_p"] is None
    greedy = params_from({}, tmp_path)
    assert greedy.greedy
    sampling = params_from({"do_sample": True}, tmp_path)
    assert sampling.temperature == DEFAULTS["temperature"]
    for p in (greedy, sampling):
        assert (p.top_k, p.top_p, p.repetition_penalty) == (DEFAULTS["top_k"], DEFAULTS["top_p"],
                                                            DEFAULTS["repetition_penalty"])
        assert p.min_p == 0.0  # transformers' None: no min-p step


def test_null_values_take_the_defaults_too(tmp_path: pathlib.Path) -> None:
    p = params_from({"do_sample": True, "top_k": None, "min_p": None}, tmp_path)
    assert (p.top_k, p.min_p) == (DEFAULTS["top_k"], 0.0)


def test_overrides_replace_file_values_and_none_keeps_them(tmp_path: pathlib.Path) -> None:
    p = SamplingParams.from_generation_config(INSTRUCT, top_k=0, min_p=0.05, seed=7, temperature=None)
    assert (p.temperature, p.top_k, p.top_p, p.min_p, p.seed) == (0.7, 0, 0.8, 0.05, 7)
    assert SamplingParams.from_generation_config(INSTRUCT, temperature=0).greedy
    woken = params_from({"do_sample": False, "top_k": 5}, tmp_path, temperature=0.9)
    assert (woken.temperature, woken.top_k) == (0.9, 5)


def test_an_override_out_of_range_names_the_flag() -> None:
    with pytest.raises(UsageError, match=r"top_p \(--top-p\) must be a finite number in \(0, 1\]"):
        SamplingParams.from_generation_config(INSTRUCT, top_p=1.5)


BAD_FILES = [
    ([1, 2], "must be a JSON object"),
    ({"do_sample": "yes"}, "do_sample must be true or false, got 'yes'"),
    ({"do_sample": True, "temperature": "hot"}, "temperature must be a number, got 'hot'"),
    ({"do_sample": True, "top_p": 1.5}, r"top_p \(--top-p\) must be a finite number in \(0, 1\] .*got 1.5"),
    ({"top_k": 2.5}, r"top_k \(--top-k\) must be an integer >= 0"),
    ({"repetition_penalty": 0}, r"repetition_penalty \(--repeat-penalty\) must be a finite number > 0"),
]


@pytest.mark.parametrize("content, message", BAD_FILES)
def test_a_bad_generation_config_names_the_file_and_key(content: Any, message: str, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=message) as error:
        SamplingParams.from_generation_config(str(path))
    assert str(error.value).startswith(str(path))


def test_a_missing_generation_config_is_a_format_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FormatError, match="generation_config.json: cannot read"):
        SamplingParams.from_generation_config(str(tmp_path / "generation_config.json"))


@pytest.mark.parametrize("value, expected", [(151643, (151643,)), ([1, 2], (1, 2)), (None, ())])
def test_eos_token_ids(value: Any, expected: tuple[int, ...], tmp_path: pathlib.Path) -> None:
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps({} if value is None else {"eos_token_id": value}))
    assert read_eos_token_ids(str(path)) == expected


@pytest.mark.parametrize("value", [-1, "2", [3, True], 1.5])
def test_bad_eos_token_ids(value: Any, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps({"eos_token_id": value}))
    with pytest.raises(ConfigError, match="eos_token_id must be a token id or a list of them"):
        read_eos_token_ids(str(path))


# --- SamplingParams: every field is checked, and the message names the flag and the range ----------------

BAD_PARAMS = [
    ("temperature", -0.1, r"temperature \(--temp\) must be a finite number >= 0 \(0 = greedy\), got -0.1"),
    ("temperature", math.inf, r"temperature \(--temp\) must be a finite number >= 0 .*got inf"),
    ("temperature", math.nan, r"temperature \(--temp\) .*got nan"),
    ("temperature", True, r"temperature \(--temp\) .*got True"),
    ("top_k", -1, r"top_k \(--top-k\) must be an integer >= 0 \(0 = off\), got -1"),
    ("top_k", 2.0, r"top_k \(--top-k\) must be an integer >= 0 \(0 = off\), got 2.0"),
    ("top_p", 0.0, r"top_p \(--top-p\) must be a finite number in \(0, 1\] \(1 = off\), got 0.0"),
    ("top_p", 1.01, r"top_p \(--top-p\) .*got 1.01"),
    ("top_p", math.nan, r"top_p \(--top-p\) .*got nan"),
    ("min_p", -0.01, r"min_p \(--min-p\) must be a finite number in \[0, 1\] \(0 = off\), got -0.01"),
    ("min_p", 1.5, r"min_p \(--min-p\) .*got 1.5"),
    ("repetition_penalty", 0.0, r"repetition_penalty \(--repeat-penalty\) must be a finite number > 0 \(1 = off\)"),
    ("repetition_penalty", -1.1, r"repetition_penalty \(--repeat-penalty\) .*got -1.1"),
    ("repetition_penalty", math.inf, r"repetition_penalty \(--repeat-penalty\) .*got inf"),
    ("seed", 1.5, r"seed \(--seed\) must be an integer or absent, got 1.5"),
    ("seed", "42", r"seed \(--seed\) must be an integer or absent, got '42'"),
]


@pytest.mark.parametrize("field, value, message", BAD_PARAMS)
def test_out_of_range_settings_are_refused(field: str, value: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        SamplingParams(**{field: value})


@pytest.mark.parametrize("field, value", [("temperature", 0), ("top_p", 1), ("min_p", 0), ("min_p", 1),
                                          ("top_k", 0), ("repetition_penalty", 0.5), ("seed", -3)])
def test_the_edges_of_each_range_are_allowed(field: str, value: Any) -> None:
    assert getattr(SamplingParams(**{field: value}), field) == value


# --- the steps one by one ----------------------------------------------------------------------------------


def test_the_penalty_counts_each_seen_id_once_and_leaves_the_input_alone() -> None:
    logits = [2.0, -2.0, 0.0, 1.0]
    assert apply_repetition_penalty(logits, [0, 0, 0, 1, 2], 2.0) == [1.0, -4.0, 0.0, 1.0]
    assert logits == [2.0, -2.0, 0.0, 1.0]


@pytest.mark.parametrize("token", [-1, 4])
def test_a_seen_id_outside_the_vocabulary_is_refused(token: int) -> None:
    with pytest.raises(UsageError, match=f"previous token id {token} is outside the vocabulary of 4 logits"):
        Sampler(SamplingParams(repetition_penalty=1.1)).sample([0.0, 1.0, 2.0, 3.0], [token])


def test_no_logits_or_a_non_finite_maximum_is_refused() -> None:
    with pytest.raises(UsageError, match="no logits"):
        Sampler(SamplingParams()).sample([])
    with pytest.raises(MicroQwenError, match="the largest logit is inf"):
        Sampler(SamplingParams()).sample([0.0, math.inf])


@given(st.lists(st.integers(-3, 3), min_size=1, max_size=50))
def test_greedy_takes_the_first_of_tied_maxima(values: list[int]) -> None:
    scores = [float(v) for v in values]
    assert argmax(scores) == min(i for i, s in enumerate(scores) if s == max(scores))


@given(st.lists(st.integers(-4, 4), min_size=1, max_size=200), st.integers(1, 250))
def test_top_k_keeps_every_score_tied_with_the_kth(values: list[int], k: int) -> None:
    scores = [float(v) for v in values]
    kth = sorted(scores, reverse=True)[min(k, len(scores)) - 1]
    assert list(top_k_ids(scores, k)) == [i for i, s in enumerate(scores) if s >= kth]


def reference_top_p(weights: list[int], top_p: float) -> set[int]:
    """transformers' TopPLogitsWarper in exact arithmetic: a stable ascending sort, then remove the tokens
    whose cumulative mass is <= (1 - top_p) of the total, keeping the last (most probable) one."""
    order = sorted(range(len(weights)), key=lambda i: weights[i])
    limit = (1 - top_p) * sum(weights)
    removed, cumulative = set(), 0
    for i in order[:-1]:
        cumulative += weights[i]
        if cumulative <= limit:
            removed.add(i)
    return set(range(len(weights))) - removed


@settings(max_examples=300)
@given(st.lists(st.integers(0, 8), min_size=1, max_size=700).filter(any), st.integers(1, 64))
def test_top_p_matches_the_reference_rule_exactly(weights: list[int], sixty_fourths: int) -> None:
    """Small integer weights and top_p = k/64 keep every sum exact, so boundaries that land exactly on a
    cumulative sum and ties are tested, and vocabularies past 64 make the partial selection grow."""
    top_p = sixty_fourths / 64
    ids, kept = top_p_filter(range(len(weights)), [float(w) for w in weights], top_p)
    assert set(ids) == reference_top_p(weights, top_p)
    assert list(zip(kept, ids)) == sorted(zip(kept, ids), reverse=True)  # most probable first
    assert kept == [weights[i] for i in ids]


@pytest.mark.parametrize("n, top_p", [(1000, 0.9), (5000, 0.5), (5000, 1.0), (300, 0.015625)])
def test_top_p_grows_its_partial_selection_past_64_tokens(n: int, top_p: float) -> None:
    weights = [1 + (i * 5) % 7 for i in range(n)]  # 1..7, many ties
    ids, _ = top_p_filter(range(n), [float(w) for w in weights], top_p)
    assert set(ids) == reference_top_p(weights, top_p)


def test_min_p_keeps_ties_at_the_threshold() -> None:
    assert min_p_filter([5, 6, 7, 8], [0.25, 1.0, 0.5, 0.2], 0.25) == ([5, 6, 7], [0.25, 1.0, 0.5])


# --- drawing: reproducible, and distributed as distribution() says -----------------------------------------


LOGITS = [2.0, 1.5, 1.25, 1.0, 0.5, 0.25, 0.0, -1.0, -3.0, -6.0]


def draws(params: SamplingParams, logits: list[float], count: int) -> list[int]:
    sampler = Sampler(params)
    return [sampler.sample(logits, [0, 1]) for _ in range(count)]


def test_a_seed_makes_the_draws_reproducible() -> None:
    params = SamplingParams(temperature=1.5, top_p=0.95, seed=1234)
    first = draws(params, LOGITS, 300)
    assert first == draws(params, LOGITS, 300)
    assert len(set(first)) > 5  # really random: many different tokens


def test_greedy_draws_nothing_from_the_generator() -> None:
    sampler = Sampler(SamplingParams(temperature=0, seed=5))
    state = sampler.rng.getstate()
    assert sampler.sample([0.0, 2.0, 2.0]) == 1
    assert sampler.rng.getstate() == state


# The 0.999 quantiles of the chi-square distribution with df degrees of freedom (published tables).
CHI_SQUARE_999 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458, 7: 24.322, 8: 26.124, 9: 27.877}


@pytest.mark.parametrize("params, previous", [
    (SamplingParams(temperature=0.7, top_k=4, seed=1), [0]),
    (SamplingParams(temperature=1.3, top_p=0.9, repetition_penalty=1.3, seed=2), [1, 2]),
    (SamplingParams(temperature=1.0, min_p=0.1, seed=3), []),
])
def test_draws_follow_the_distribution(params: SamplingParams, previous: list[int]) -> None:
    """Pearson's chi-square over 20,000 draws stays under the 0.999 quantile for the survivors."""
    sampler = Sampler(params)
    distribution = sampler.distribution(LOGITS, previous)
    df = len(distribution) - 1
    assert df in CHI_SQUARE_999
    n = 20_000
    counts = {token: 0 for token, _ in distribution}
    for _ in range(n):
        counts[sampler.sample(LOGITS, previous)] += 1  # a KeyError would be a token that did not survive
    chi_square = sum((counts[token] - n * p) ** 2 / (n * p) for token, p in distribution)
    assert chi_square < CHI_SQUARE_999[df]
