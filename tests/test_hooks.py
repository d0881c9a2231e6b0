"""Hooks: every named point can be read without changing anything, or replaced on purpose.

`forward(token, pos, hook)` and `prefill(ids, hook)` call `hook(name, pos, values, shape)` at every
point of `point_names`; None leaves the value, a same-length sequence replaces it. The reference for
a replacement is transformers with a PyTorch pre-hook on o_proj that zeroes one head's slice of its
input (recorded as `ablated_logits` by scripts/make_model_fixtures.py).
"""

from __future__ import annotations

import math
import pathlib
from typing import Sequence

import pytest

from microqwen.errors import HookError
from microqwen.model import load, point_names

from .reference import load_reference, max_difference, model_dirs, rows, token_ids

MODELS = model_dirs()
ABLATED_LAYER, ABLATED_HEAD = 1, 1
"""The head the fixture script zeroed (its metadata says `layers.1.self_attn.head.1`)."""


def run(path: pathlib.Path, hook: object = None, prefill: bool = False) -> list[list[float]]:
    """The logits at every prompt position, token by token (or the last one, by prefill)."""
    ids = token_ids(load_reference(path / "reference.safetensors"))
    with load(str(path)) as model:
        if prefill:
            return [model.prefill(ids, hook)]  # type: ignore[arg-type]
        return [model.forward(token, pos, hook) for pos, token in enumerate(ids)]  # type: ignore[arg-type]


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_a_hook_that_only_reads_changes_nothing(path: pathlib.Path) -> None:
    seen: dict[str, int] = {}

    def reader(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> None:
        assert isinstance(values, tuple) and math.prod(shape) == len(values), name
        seen[name] = seen.get(name, 0) + 1

    assert run(path, reader) == run(path)  # bit for bit
    positions = len(token_ids(load_reference(path / "reference.safetensors")))
    config_layers = sum(name.endswith(".attn_output") for name in seen)
    assert seen == {name: positions for name in point_names(config_layers)}  # every point, at every position


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_prefill_calls_the_hook_with_the_values_forward_sees(path: pathlib.Path) -> None:
    by_forward: dict[tuple[str, int], tuple[float, ...]] = {}
    by_prefill: dict[tuple[str, int], tuple[float, ...]] = {}

    def recorder(into: dict[tuple[str, int], tuple[float, ...]]) -> object:
        def hook(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> None:
            into[name, pos] = values

        return hook

    run(path, recorder(by_forward))
    run(path, recorder(by_prefill), prefill=True)
    last = max(pos for _, pos in by_forward)
    # prefill runs the final norm and the output head at the last position only
    expected = {key: v for key, v in by_forward.items() if key[0] not in ("norm", "logits") or key[1] == last}
    assert by_prefill.keys() == expected.keys()
    assert max(max_difference(by_prefill[key], expected[key]) for key in expected) < 1e-9


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_replacing_the_residual_stream_changes_the_logits(path: pathlib.Path) -> None:
    def zero_layer_0(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> list[float] | None:
        return [0.0] * len(values) if name == "layers.0" and pos == 2 else None

    clean, changed = run(path), run(path, zero_layer_0)
    assert clean[:2] == changed[:2]  # positions before the change cannot see it
    assert all(max_difference(a, b) > 1e-3 for a, b in zip(clean[2:], changed[2:]))


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
@pytest.mark.parametrize("prefill", [False, True], ids=["forward", "prefill"])
def test_zeroing_one_head_matches_the_reference_with_that_head_zeroed(path: pathlib.Path, prefill: bool) -> None:
    ref = load_reference(path / "reference.safetensors")
    head_dim = ref["layers.0.self_attn.rope_q"][0][1] // ref["layers.0.self_attn.attn_weights"][0][0]
    target = f"layers.{ABLATED_LAYER}.self_attn.attn_output"

    def zero_head(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> list[float] | None:
        if name != target:
            return None
        heads = list(values)
        heads[ABLATED_HEAD * head_dim : (ABLATED_HEAD + 1) * head_dim] = [0.0] * head_dim
        return heads

    expected = rows(*ref["ablated_logits"])
    ours = run(path, zero_head, prefill)
    for pos, logits in enumerate(ours):
        reference = expected[-1] if prefill else expected[pos]
        assert max_difference(logits, reference) < 1e-4, f"position {pos}"
    assert max_difference(ours[-1], rows(*ref["logits"])[-1]) > 0.01  # and the head mattered


@pytest.mark.parametrize("wrong", [[1.0, 2.0], []])
def test_a_replacement_of_the_wrong_length_names_the_point_and_both_lengths(wrong: Sequence[float]) -> None:
    def hook(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> Sequence[float] | None:
        return wrong if name == "layers.1.mlp.up_proj" else None

    with load(str(MODELS[0])) as model:
        width = model.config.intermediate_size
        with pytest.raises(HookError, match=f"replaced layers.1.mlp.up_proj at position 0 with {len(wrong)} values; "
                                            f"it has {width}"):  # fmt: skip
            model.forward(3, 0, hook)


def test_a_replacement_that_is_not_numbers_is_a_clear_error() -> None:
    def hook(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> Sequence[object] | None:
        return ["x"] * len(values) if name == "norm" else None

    with load(str(MODELS[0])) as model:
        with pytest.raises(HookError, match="replaced norm at position 0 with something other than numbers"):
            model.forward(3, 0, hook)  # type: ignore[arg-type]
