"""The forward-pass fixtures are complete, fit their configs, and are sharp enough to catch bugs.

The model tests compare microqwen with these files at a tolerance of about 1e-3. That only means
something if the reference is far from degenerate: attention peaked rather than uniform, logits
spread rather than tied. These tests recompute the statistics from the recorded tensors, check
them against the thresholds below and against what the generating script recorded, so that a
regenerated fixture cannot silently become uniform. (scripts/make_model_fixtures.py enforces the
same thresholds when it writes them.)
"""

from __future__ import annotations

import math
import pathlib
import statistics
from typing import Dict, Tuple

import pytest

from microqwen import bf16
from microqwen.config import Config, check_tensors
from microqwen.safetensors import SafetensorsFile

from .reference import (
    GREEDY_TOKENS, LAB_MODELS, Reference, lab_shapes, load_metadata, load_reference, model_dirs, rows, token_ids,
    trace_shapes,
)

ATTN_ENTROPY_MEAN_MAX = 0.75  # mean of entropy / log(visible positions); uniform attention gives 1
ATTN_ENTROPY_MIN_MAX = 0.25  # some row is close to one-hot
PEAKED_HEADS_MIN = 0.5  # at least half the heads put more than 0.5 on one position somewhere
MARGIN_MEDIAN_MIN = 0.1  # top-1 minus top-2 logit, median over positions
MARGIN_MIN_MIN = 1e-3  # ... at every position: the argmax cannot flip within the tolerance
LOGIT_ABS_MAX = 100.0
BUG_EFFECT_MIN = 1.0  # a planted bug (wrong RoPE, no causal mask, wrong GQA mapping) moves a logit this much

MODELS = model_dirs()


def names(directory: pathlib.Path) -> str:
    return directory.name


def config_of(directory: pathlib.Path) -> Config:
    return Config.from_file(str(directory / "config.json"))


def test_the_fixtures_cover_what_the_forward_pass_must_get_right() -> None:
    configs = [config_of(d) for d in MODELS]
    assert {c.n_rep for c in configs} >= {1, 2, 7}, "GQA group sizes 1, 2 and 7 (Qwen2.5-0.5B: 14 / 2)"
    assert any(c.n_rep == 7 and c.num_key_value_heads >= 2 for c in configs), "n_rep 7 with 2+ kv heads"
    assert {c.tie_word_embeddings for c in configs} == {True, False}, "tied and untied output heads"
    assert any(c.head_dim == 64 and c.rope_theta == 1e6 for c in configs), "head_dim 64, rope_theta 1e6"
    assert any(c.head_dim != 64 and c.rope_theta != 1e6 for c in configs), "another head_dim and rope_theta"
    assert any(c.head_dim != c.hidden_size // c.num_attention_heads for c in configs), "an explicit head_dim"
    assert all(c.num_hidden_layers >= 3 for c in configs)


@pytest.mark.parametrize("directory", MODELS, ids=names)
def test_weights_fit_the_config_in_bf16(directory: pathlib.Path) -> None:
    config = config_of(directory)
    with SafetensorsFile(str(directory / "model.safetensors")) as f:
        check_tensors(config, f.tensors, str(directory))
        assert {info.dtype for info in f.tensors.values()} == {"BF16"}
        assert ("lm_head.weight" in f.tensors) != config.tie_word_embeddings


Case = Tuple[pathlib.Path, Config, Reference, Dict[str, str]]


@pytest.fixture(scope="module", params=MODELS, ids=names)
def case(request: pytest.FixtureRequest) -> Case:
    """One fixture model: its directory, config, reference tensors and reference metadata."""
    directory: pathlib.Path = request.param
    path = directory / "reference.safetensors"
    return directory, config_of(directory), load_reference(path), load_metadata(path)


def test_reference_has_every_trace_point_at_every_position(case: Case) -> None:
    directory, config, ref, _ = case
    length = len(ref["input_ids"][1])
    expected = dict(trace_shapes(config, length))
    expected.update({
        "input_ids": (length,),
        "logits": (length, config.vocab_size),
        "greedy_ids": (GREEDY_TOKENS,),
        "greedy_logits": (GREEDY_TOKENS, config.vocab_size),
        "rotary_emb.inv_freq": (config.head_dim // 2,),
        "ablated_logits": (length, config.vocab_size),
    })  # fmt: skip
    if directory.name in LAB_MODELS:
        expected.update(lab_shapes(config, length))
    assert {name: shape for name, (shape, _) in ref.items()} == expected
    assert all(len(values) == math.prod(shape) for shape, values in ref.values())
    assert all(math.isfinite(v) for _, values in ref.values() for v in values)


def test_prompt_and_greedy_continuation(case: Case) -> None:
    _, config, ref, _ = case
    prompt, greedy = token_ids(ref, "input_ids"), token_ids(ref, "greedy_ids")
    assert len(prompt) >= 16 and all(0 <= i < config.vocab_size for i in prompt + greedy)
    assert not set(greedy) & set(config.eos_token_ids), "an eos would stop generation before 16 tokens"
    logits = rows(*ref["greedy_logits"])
    assert [max(range(len(row)), key=row.__getitem__) for row in logits] == greedy  # argmax


def test_embed_tokens_trace_is_the_prompts_rows_of_the_bf16_embedding(case: Case) -> None:
    directory, config, ref, _ = case
    with SafetensorsFile(str(directory / "model.safetensors")) as f:
        with f.data("model.embed_tokens.weight") as view:
            embedding = rows((config.vocab_size, config.hidden_size), bf16.to_floats(view).tolist())
    assert rows(*ref["embed_tokens"]) == [embedding[i] for i in token_ids(ref)]


def test_attention_weights_are_causal_probabilities(case: Case) -> None:
    _, config, ref, _ = case
    for i in range(config.num_hidden_layers):
        for t, row in enumerate(rows(*ref[f"layers.{i}.self_attn.attn_weights"])):
            query = t % len(row)  # rows run over [heads, T]; query position t sees keys 0..t
            assert all(p == 0.0 for p in row[query + 1 :]), f"layer {i}: a query sees a later position"
            assert sum(row) == pytest.approx(1.0, abs=1e-5)


def attention_statistics(config: Config, ref: Reference) -> dict[str, float]:
    """Entropy / log(n) over rows with n >= 4 visible positions; fraction of heads with a weight > 0.5."""
    entropies, peaked = [], 0
    for i in range(config.num_hidden_layers):
        shape, values = ref[f"layers.{i}.self_attn.attn_weights"]
        heads, length = shape[0], shape[1]
        all_rows = rows(shape, values)
        for head in range(heads):
            head_rows = all_rows[head * length : (head + 1) * length][3:]  # query t sees t + 1 keys
            for t, row in enumerate(head_rows, start=3):
                entropies.append(-sum(p * math.log(p) for p in row if p > 0) / math.log(t + 1))
            peaked += any(p > 0.5 for row in head_rows for p in row)
    return {
        "attn_entropy_mean": statistics.fmean(entropies),
        "attn_entropy_min": min(entropies),
        "peaked_heads": peaked / (config.num_hidden_layers * config.num_attention_heads),
    }


def margin_statistics(ref: Reference, name: str) -> dict[str, float]:
    """Top-1 minus top-2 logit per position (min, median) and the largest |logit|."""
    margins = []
    for row in rows(*ref[name]):
        top = sorted(row, reverse=True)
        margins.append(top[0] - top[1])
    return {
        f"{name}_margin_min": min(margins),
        f"{name}_margin_median": statistics.median(margins),
        f"{name}_abs_max": max(abs(v) for v in ref[name][1]),
    }


def test_attention_is_peaked_and_logits_are_spread(case: Case) -> None:
    _, config, ref, metadata = case
    stats = attention_statistics(config, ref)
    stats.update(margin_statistics(ref, "logits"))
    stats.update(margin_statistics(ref, "greedy_logits"))
    assert stats["attn_entropy_mean"] < ATTN_ENTROPY_MEAN_MAX
    assert stats["attn_entropy_min"] < ATTN_ENTROPY_MIN_MAX
    assert stats["peaked_heads"] >= PEAKED_HEADS_MIN
    assert stats["logits_margin_median"] > MARGIN_MEDIAN_MIN
    assert stats["logits_margin_min"] > MARGIN_MIN_MIN and stats["greedy_logits_margin_min"] > MARGIN_MIN_MIN
    assert stats["logits_abs_max"] < LOGIT_ABS_MAX and stats["greedy_logits_abs_max"] < LOGIT_ABS_MAX
    assert stats == {key: pytest.approx(float(metadata[key]), rel=1e-6) for key in stats}, "as recorded"


def test_reference_is_consistent_and_planted_bugs_show(case: Case) -> None:
    _, config, _, metadata = case
    assert float(metadata["check_rope_vs_attn_max_abs_diff"]) < 1e-5  # rope_q/rope_k are what attention used
    assert float(metadata["check_cache_vs_full_max_abs_diff"]) < 1e-4  # KV-cache greedy == batched pass
    bugs = ["rope_theta_swapped", "rope_interleaved", "no_causal_mask"]
    bugs += ["kv_heads_tiled"] if config.num_key_value_heads not in (1, config.num_attention_heads) else []  # one kv head or n_rep 1: every mapping is the same
    effects = {name: float(metadata[f"bug_{name}_max_abs_logit_diff"]) for name in bugs}
    assert {name: effect > BUG_EFFECT_MIN for name, effect in effects.items()} == dict.fromkeys(bugs, True), effects
