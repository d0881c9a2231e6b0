"""The forward pass against the reference (transformers) on the fixture models.

Every fixture is a small random Qwen2 model in the real layout, with what transformers computed
for it (tests/fixtures/models/README.md): logits at every prompt position, every trace point, and
the greedy continuation. microqwen must agree within 1e-3 everywhere, pick the same argmax, and
generate the same 16 greedy tokens.
"""

from __future__ import annotations

import math
import pathlib
from typing import Sequence

import pytest

from microqwen.config import Config
from microqwen.errors import ContextError, UsageError
from microqwen.kernels import KERNELS
from microqwen.model import KVCache, Qwen2ForCausalLM, RotaryEmbedding, load, rmsnorm, silu, softmax

from .reference import (
    GREEDY_TOKENS, argmax, load_reference, max_difference, model_dirs, rows, token_ids, trace_point_names,
)  # fmt: skip

TOLERANCE = 1e-3
MODELS = model_dirs()


@pytest.fixture(scope="module", params=MODELS, ids=[m.name for m in MODELS])
def fixture(request: pytest.FixtureRequest) -> tuple[pathlib.Path, dict]:  # type: ignore[type-arg]
    return request.param, load_reference(request.param / "reference.safetensors")


def test_there_are_fixtures() -> None:
    assert len(MODELS) >= 3


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_logits_at_every_position_match_the_reference(fixture: tuple[pathlib.Path, dict], kernel: str) -> None:  # type: ignore[type-arg]
    path, ref = fixture
    expected = rows(*ref["logits"])
    with load(str(path), kernel=kernel) as model:
        for pos, token in enumerate(token_ids(ref)):
            logits = model.forward(token, pos)
            assert max_difference(logits, expected[pos]) < TOLERANCE, f"position {pos}"
            assert argmax(logits) == argmax(expected[pos]), f"position {pos}"


def test_every_trace_point_matches_the_reference(fixture: tuple[pathlib.Path, dict]) -> None:  # type: ignore[type-arg]
    path, ref = fixture
    seen: dict[tuple[str, int], list[float]] = {}

    def tracer(name: str, pos: int, values: Sequence[float], shape: tuple[int, ...]) -> None:
        assert math.prod(shape) == len(values), name
        seen[name, pos] = list(values)

    with load(str(path)) as model:
        ids = token_ids(ref)
        for pos, token in enumerate(ids):
            model.forward(token, pos, tracer)
    for name in trace_point_names(model.config.num_hidden_layers):
        shape, values = ref[name]
        for pos in range(len(ids)):
            if name.endswith("attn_weights"):  # [heads, T, T]: row pos of each head, up to pos
                heads, length = shape[0], shape[1]
                expected = [values[(h * length + pos) * length + t] for h in range(heads) for t in range(pos + 1)]
            else:
                expected = rows(shape, values)[pos]
            assert max_difference(seen[name, pos], expected) < TOLERANCE, f"{name} at position {pos}"


def test_greedy_continuation_is_identical(fixture: tuple[pathlib.Path, dict]) -> None:  # type: ignore[type-arg]
    path, ref = fixture
    greedy = token_ids(ref, "greedy_ids")
    expected_logits = rows(*ref["greedy_logits"])
    with load(str(path)) as model:
        logits = model.prefill(token_ids(ref))
        generated = []
        for step in range(GREEDY_TOKENS):
            assert max_difference(logits, expected_logits[step]) < TOLERANCE, f"step {step}"
            generated.append(argmax(logits))
            logits = model.forward(generated[-1], model.pos)
    assert generated == greedy


def test_kv_cache_decoding_equals_recomputing_from_scratch(fixture: tuple[pathlib.Path, dict]) -> None:  # type: ignore[type-arg]
    path, ref = fixture
    ids = token_ids(ref)
    with load(str(path)) as model:
        incremental = [model.forward(token, pos) for pos, token in enumerate(ids)]
        for length in (1, 5, len(ids)):
            model.reset()
            recomputed = model.prefill(ids[:length])  # a fresh cache, the whole prefix again
            assert max_difference(recomputed, incremental[length - 1]) < 1e-9


def test_prefill_in_blocks_equals_token_by_token(fixture: tuple[pathlib.Path, dict]) -> None:  # type: ignore[type-arg]
    path, ref = fixture
    ids = token_ids(ref)
    with load(str(path), kernel="unrolled") as model:  # its matmat takes 4 tokens per weight read
        last = model.prefill(ids)
        assert model.pos == len(ids)
        model.reset()
        one_by_one = [model.forward(token, pos) for pos, token in enumerate(ids)][-1]
    assert max_difference(last, one_by_one) < 1e-9


def test_context_limit_is_a_clear_error() -> None:
    with load(str(MODELS[0]), max_context=4) as model:
        model.prefill([1, 2, 3])
        model.forward(4, 3)
        with pytest.raises(ContextError, match="position 4 is past the context limit of 4 tokens"):
            model.forward(5, 4)
        model.reset()
        with pytest.raises(ContextError, match="20 tokens from position 0 go past the context limit of 4 tokens"):
            model.prefill(list(range(20)))  # longer than a prefill block: refused before any block runs
        assert model.pos == 0


def test_bad_arguments_are_clear_errors() -> None:
    with load(str(MODELS[0])) as model:
        vocab = model.config.vocab_size
        with pytest.raises(UsageError, match=f"token id {vocab} is outside the vocabulary \\(0..{vocab - 1}\\)"):
            model.forward(vocab, 0)
        with pytest.raises(UsageError, match="position 3 does not follow the cache, which holds 0 positions"):
            model.forward(1, 3)
        with pytest.raises(UsageError, match="prefill needs at least one token"):
            model.prefill([])
        with pytest.raises(UsageError, match=f"token id {vocab} is outside the vocabulary"):
            model.prefill([1] * 20 + [vocab])  # the bad id is in the second block: refused before the first
        assert model.pos == 0
        limit = model.config.max_position_embeddings
    with pytest.raises(UsageError, match="the model is closed"):
        model.forward(1, 0)
    with pytest.raises(UsageError, match=f"max_context must be in 1..{limit} \\(max_position_embeddings\\), got 100000"):
        load(str(MODELS[0]), max_context=100_000)
    with pytest.raises(UsageError, match="unknown kernel 'fast': the kernels are naive, rows, unrolled"):
        load(str(MODELS[0]), kernel="fast")


def test_a_position_counts_once_every_layer_holds_it() -> None:
    cache = KVCache(n_layers=2, kv_heads=2, head_dim=2)
    for layer in range(2):
        cache.append(layer, [1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0])
    cache.keys[1][0].append([1.0, 2.0])  # a step interrupted halfway through the last layer's append
    cache.values_t[1][0][0].append(5.0)
    assert len(cache) == 1
    cache.truncate(len(cache))
    assert [len(keys) for layer in cache.keys for keys in layer] == [1] * 4
    assert [len(column) for layer in cache.values_t for head in layer for column in head] == [1] * 8


def test_rmsnorm_formula() -> None:
    x, w = [3.0, -4.0], [2.0, 0.5]  # mean of squares 12.5
    assert rmsnorm(x, w, 0.0) == pytest.approx([2 * 3 / math.sqrt(12.5), 0.5 * -4 / math.sqrt(12.5)])


def test_silu_is_stable_for_large_inputs() -> None:
    assert silu(0.0) == 0.0 and silu(1000.0) == 1000.0 and silu(-1000.0) == 0.0
    assert silu(1.0) == pytest.approx(1 / (1 + math.exp(-1)))


def test_softmax_subtracts_the_max() -> None:
    assert softmax([1000.0, 1000.0]) == [0.5, 0.5]


def test_rope_rotates_dimension_i_with_i_plus_half() -> None:
    rope = RotaryEmbedding(head_dim=4, theta=10000.0)  # inv_freq = [1, 1/100]
    x = [1.0, 0.0, 0.0, 0.0]  # only dimension 0: it rotates into dimension 2, not 1
    out = rope.rotate(x, pos=1, n_heads=1)
    assert out == pytest.approx([math.cos(1.0), 0.0, math.sin(1.0), 0.0], abs=1e-7)
    assert rope.rotate(x, pos=0, n_heads=1) == x


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_rope_frequencies_are_the_references_bit_for_bit(path: pathlib.Path) -> None:
    """One float32 step in inv_freq is a thousandth of a radian at position 30,000: no tolerance here."""
    config = Config.from_file(str(path / "config.json"))
    _, expected = load_reference(path / "reference.safetensors")["rotary_emb.inv_freq"]
    assert RotaryEmbedding(config.head_dim, config.rope_theta).inv_freq == list(expected)


def test_model_is_a_context_manager_and_resets() -> None:
    with load(str(MODELS[0])) as model:
        assert isinstance(model, Qwen2ForCausalLM)
        first = model.forward(5, 0)
        model.reset()
        assert model.pos == 0 and model.forward(5, 0) == first
