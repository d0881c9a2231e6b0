"""The lab against the reference: ablation, patching, steering, attribution and planted bugs.

The expected values are transformers' with PyTorch hooks doing the same intervention (recorded by
scripts/make_model_fixtures.py `lab_references` for the models in LAB_MODELS), compared within 1e-4
on the logits.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import pytest

from microqwen.distribution import kl_divergence, log_softmax
from microqwen.errors import UsageError
from microqwen.lab import ablate, ablation_sweep, direct_logit_attribution, patch_heads, patch_residual, steer
from microqwen.lab.ablation import ablation_hook
from microqwen.lab.attribution import attribute
from microqwen.lab.components import parse_component
from microqwen.lab.patching import _Patcher
from microqwen.lab.runs import Runs, to_json, writer
from microqwen.lab.steering import check_vector, difference_vector, steering_hook
from microqwen.model import load

from .reference import (
    FIXTURES, LAB_MODELS, STEER_LAYER, STEER_SCALE, STEER_TOKENS, argmax, load_reference, max_difference, patch_cells,
    rows, token_ids,
)

TOLERANCE = 1e-4
MODELS = [FIXTURES / name for name in LAB_MODELS]
Ref = Any


@pytest.fixture(scope="module", params=MODELS, ids=[m.name for m in MODELS])
def case(request: pytest.FixtureRequest) -> tuple[pathlib.Path, Ref]:
    path: pathlib.Path = request.param
    return path, load_reference(path / "reference.safetensors")


def last_row(ref: Ref, name: str) -> list[float]:
    return [float(v) for v in rows(*ref[name])[-1]]


# ------------------------------------------------------------------ ablation


@pytest.mark.parametrize("component, mode, positions, tensor", [
    ("layers.1.self_attn.head.1", "zero", None, "ablated_logits"),
    ("layers.1.self_attn.head.1", "mean", None, "ablate.mean.layers.1.self_attn.head.1"),
    ("layers.0.self_attn", "zero", None, "ablate.zero.layers.0.self_attn"),
    ("layers.2.mlp", "mean", None, "ablate.mean.layers.2.mlp"),
    ("layers.1.mlp", "zero", (3, 7), "ablate.zero.layers.1.mlp@3,7"),
])  # fmt: skip
def test_ablation_matches_the_reference_with_the_same_hook(case: tuple[pathlib.Path, Ref], component: str, mode: str,
                                                           positions: tuple[int, ...] | None, tensor: str) -> None:  # fmt: skip
    path, ref = case
    ids = token_ids(ref)
    clean, expected = last_row(ref, "logits"), last_row(ref, tensor)
    with load(str(path)) as model:
        hook = ablation_hook(model, ids, [component], mode, positions)
        assert max_difference(Runs(model, ids).logits(hook), expected) < TOLERANCE
        result = ablate(model, ids, [component], mode, positions)
    assert result.kl == pytest.approx(kl_divergence(log_softmax(clean), log_softmax(expected)), abs=TOLERANCE)
    assert [c.id for c in result.after] == sorted(range(len(expected)), key=lambda i: -expected[i])[:5]
    assert all(abs(c.logit - expected[c.id]) < TOLERANCE for c in result.after)
    assert all(abs(c.logit - clean[c.id]) < TOLERANCE for c in result.before)
    a, b = result.answers.a, result.answers.b
    assert [a, b] == sorted(range(len(clean)), key=lambda i: -clean[i])[:2]  # the clean top two
    assert result.logit_diff_after == pytest.approx(expected[a] - expected[b], abs=TOLERANCE)
    assert result.kl > 1e-3  # the component mattered


def test_the_sweep_ranks_every_head_as_ablating_it_alone_does() -> None:
    path = MODELS[1]
    ids = token_ids(load_reference(path / "reference.safetensors"))
    with load(str(path)) as model:
        sweep = ablation_sweep(model, ids, positions=[len(ids) - 1])
        alone = ablate(model, ids, ["layers.1.self_attn.head.1"], positions=[len(ids) - 1])
        config = model.config
    assert len(sweep.kl) == config.num_hidden_layers and {len(r) for r in sweep.kl} == {config.num_attention_heads}
    assert len(sweep.ranked) == config.num_hidden_layers * config.num_attention_heads
    assert [e.kl for e in sweep.ranked] == sorted((e.kl for e in sweep.ranked), reverse=True)
    assert sweep.kl[1][1] == pytest.approx(alone.kl, abs=1e-12)
    assert sweep.logit_diff[1][1] == pytest.approx(alone.logit_diff_after, abs=1e-12)
    assert to_json(sweep)["ranked"][0]["component"] == sweep.ranked[0].component


def test_the_loss_on_the_prompt_is_the_reference_log_probabilities() -> None:
    path, ref = MODELS[0], load_reference(MODELS[0] / "reference.safetensors")
    ids, logits = token_ids(ref), rows(*ref["logits"])
    with load(str(path)) as model:
        result = ablate(model, ids, ["layers.1.self_attn.head.1"], score_from=10)
    expected = -sum(log_softmax([float(v) for v in logits[t - 1]])[ids[t]] for t in range(10, len(ids))) / (len(ids) - 10)
    assert result.loss_before == pytest.approx(expected, abs=TOLERANCE)
    assert result.loss_after is not None and result.loss_after != result.loss_before


# ------------------------------------------------------------------ patching


def restored(ref: Ref, patched: list[float], a: int, b: int) -> float:
    clean, corrupted = last_row(ref, "logits"), last_row(ref, "patch.corrupted_logits")
    return ((patched[a] - patched[b]) - (corrupted[a] - corrupted[b])) / ((clean[a] - clean[b]) - (corrupted[a] - corrupted[b]))


def test_patching_the_residual_stream_matches_the_reference(case: tuple[pathlib.Path, Ref]) -> None:
    path, ref = case
    clean, corrupted = token_ids(ref), token_ids(ref, "patch.corrupted_ids")
    with load(str(path)) as model:
        config = model.config
        cells = patch_cells(config, len(clean))
        patcher = _Patcher(model, clean, corrupted, [f"layers.{i}" for i, _ in cells], None)
        for layer, pos in cells:  # the patched run's logits themselves
            hook = writer({(f"layers.{layer}", pos): [(0, patcher.values[pos][f"layers.{layer}"])]})
            ours = patcher.runs.logits(hook, first=pos)
            assert max_difference(ours, last_row(ref, f"patch.layers.{layer}@{pos}")) < TOLERANCE, (layer, pos)
        table = patch_residual(model, clean, corrupted)
    a, b = table.answers.a, table.answers.b
    assert a == argmax(last_row(ref, "logits")) and b == argmax(last_row(ref, "patch.corrupted_logits"))
    assert table.rows == ["embed_tokens"] + [f"layers.{i}" for i in range(config.num_hidden_layers)]
    for layer, pos in cells:
        expected = restored(ref, last_row(ref, f"patch.layers.{layer}@{pos}"), a, b)
        assert table.restored[layer + 1][pos] == pytest.approx(expected, abs=1e-3), (layer, pos)
    middle = len(clean) // 2
    assert table.restored[0][middle] == pytest.approx(1.0)  # the corrupted token's embedding carries it all
    assert table.restored[-1][-1] == pytest.approx(1.0)  # so does the last layer's output at the last position
    assert all(v == 0.0 for row in table.restored for v in row[:middle])  # before the corruption nothing differs


def test_patching_one_head_matches_the_reference(case: tuple[pathlib.Path, Ref]) -> None:
    path, ref = case
    clean, corrupted = token_ids(ref), token_ids(ref, "patch.corrupted_ids")
    with load(str(path)) as model:
        table = patch_heads(model, clean, corrupted)
        assert len(table.restored) == model.config.num_hidden_layers
    expected = restored(ref, last_row(ref, "patch.layers.1.self_attn.head.1"), table.answers.a, table.answers.b)
    assert table.restored[1][1] == pytest.approx(expected, abs=1e-3)


def test_patching_prompts_of_different_lengths_names_both_counts() -> None:
    with load(str(MODELS[0])) as model:
        with pytest.raises(UsageError, match="the clean prompt has 3 tokens, the corrupted one 2"):
            patch_residual(model, [1, 2, 3], [1, 2])


# ------------------------------------------------------------------ steering


def test_steering_matches_the_reference_at_every_position_and_in_generation(case: tuple[pathlib.Path, Ref]) -> None:
    path, ref = case
    ids = token_ids(ref)
    vector = [float(v) for v in ref["steer.vector"][1]]
    expected = rows(*ref["steer.logits"])
    with load(str(path)) as model:
        hook = steering_hook(STEER_LAYER, vector, STEER_SCALE)
        for pos, token in enumerate(ids):
            assert max_difference(model.forward(token, pos, hook), expected[pos]) < TOLERANCE, pos
        result = steer(model, ids, STEER_LAYER, vector, STEER_SCALE, STEER_TOKENS)
        difference = difference_vector(model, ids[:5], ids[5:9], STEER_LAYER)
    assert result.steered_ids == token_ids(ref, "steer.greedy_ids")
    assert result.plain_ids == token_ids(ref, "greedy_ids")[:STEER_TOKENS]
    assert max_difference(difference, [float(v) for v in ref["steer.difference"][1]]) < TOLERANCE


def test_a_vector_of_the_wrong_size_names_both_sizes() -> None:
    with load(str(MODELS[0])) as model:
        with pytest.raises(UsageError, match="the vector has 3 numbers; this model's residual stream has 64"):
            check_vector(model, [1.0, 2.0, 3.0], "v.json")


# ------------------------------------------------------------------ direct logit attribution


def test_direct_logit_attribution_matches_the_reference_and_adds_up_to_the_logit(case: tuple[pathlib.Path, Ref]) -> None:
    path, ref = case
    ids = token_ids(ref)
    target = token_ids(ref, "dla.target")[0]
    with load(str(path)) as model:
        config = model.config
        terms = direct_logit_attribution(model, ids, target)
        result = attribute(model, ids, target)
    names = ["embed_tokens"]
    for i in range(config.num_hidden_layers):
        names += [f"layers.{i}.self_attn.head.{h}" for h in range(config.num_attention_heads)] + [f"layers.{i}.mlp"]
    assert sorted(terms) == sorted(names)
    assert max_difference([terms[n] for n in names], [float(v) for v in ref["dla.contributions"][1]]) < TOLERANCE
    assert math.fsum(terms.values()) == pytest.approx(result.logit, abs=1e-9)  # exactly, to float64 rounding
    assert result.logit == pytest.approx(last_row(ref, "logits")[target], abs=TOLERANCE)


# ------------------------------------------------------------------ components


@pytest.mark.parametrize("name, message", [
    ("layers.3.mlp", r"layers.3.mlp: this model has layers 0..2"),
    ("layers.0.self_attn.head.4", r"layer 0 has heads 0..3"),
    ("layers.0.attention", r"unknown component 'layers.0.attention': give layers.L.self_attn.head.H"),
])  # fmt: skip
def test_a_bad_component_names_the_valid_range(name: str, message: str) -> None:
    from microqwen.config import Config

    config = Config.from_file(str(MODELS[1] / "config.json"))  # 3 layers of 4 heads
    with pytest.raises(UsageError, match=message):
        parse_component(name, config)
