"""Planted bugs (`--mutate NAME`): each breaks what it should, where it should, and nothing else does.

Five are checked against the reference with the same bug planted in transformers (recorded by
scripts/make_model_fixtures.py as `mutated.<name>`); `offset-8` against microqwen reading a file whose
tensors were moved by 8 bytes; the two bfloat16 ones against the bfloat16 rounding of `microqwen.bf16`.
Every one must first show at its own point (`trace --compare` against the unmutated model).
"""

from __future__ import annotations

import math
import pathlib
import struct
import subprocess
import sys
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microqwen import bf16
from microqwen.errors import UsageError
from microqwen.kernels import NaiveMatrix
from microqwen.lab.mutations import MUTATIONS, Bf16AccumulatingMatrix, round_to_bf16
from microqwen.model import load
from microqwen.safetensors import SafetensorsFile, TensorData, write
from microqwen.trace import prefill_logits

from .reference import FIXTURES, LAB_MODELS, MUTATED, NO_MASK_TOKENS, load_reference, max_difference, rows, token_ids

TOLERANCE = 1e-4
MODELS = [FIXTURES / name for name in LAB_MODELS]


def logits_token_by_token(path: pathlib.Path, ids: list[int], mutation: str | None, workers: int = 0) -> list[list[float]]:
    with load(str(path), workers=workers, mutation=mutation) as model:
        return [model.forward(token, pos) for pos, token in enumerate(ids)]


SHARPENED = 1e-2
"""The logits' tolerance for `scores-times-sqrt-d`: the bug makes attention 64 times sharper in the exponent,
so the reference's own float32 rounding grows (its logits move by 1.7e-3 when torch runs on more threads);
the attention where the bug starts is checked at TOLERANCE."""


@pytest.mark.parametrize("mutation", MUTATED)
@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_a_planted_bug_matches_the_reference_with_the_same_bug(path: pathlib.Path, mutation: str) -> None:
    ref = load_reference(path / "reference.safetensors")
    ids = token_ids(ref)
    ours = logits_token_by_token(path, ids, mutation)
    expected = rows(*ref[f"mutated.{mutation}"])
    tolerance = SHARPENED if mutation == "scores-times-sqrt-d" else TOLERANCE
    assert max(max_difference(a, b) for a, b in zip(ours, expected)) < tolerance
    effect = max(max_difference(a, b) for a, b in zip(ours, rows(*ref["logits"])))
    assert effect > 5 * tolerance  # it is a bug, well outside the agreement (rmsnorm-no-eps: 7e-4 to 1e-3, the others > 1)


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_scores_times_sqrt_d_gives_the_reference_attention(path: pathlib.Path) -> None:
    ref = load_reference(path / "reference.safetensors")
    ids = token_ids(ref)
    (heads, length, _), weights = ref["mutated.scores-times-sqrt-d.layer_0_attention"]
    seen: dict[int, tuple[float, ...]] = {}

    def keep(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> None:
        if name == "layers.0.self_attn.attn_weights":
            seen[pos] = values

    with load(str(path), mutation="scores-times-sqrt-d") as model:
        for pos, token in enumerate(ids):
            model.forward(token, pos, keep)
    for pos in range(length):
        expected = [weights[(h * length + pos) * length + t] for h in range(heads) for t in range(pos + 1)]
        assert max_difference(seen[pos], expected) < TOLERANCE, pos


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_no_causal_mask_breaks_prefill_only(path: pathlib.Path) -> None:
    ref = load_reference(path / "reference.safetensors")
    ids = token_ids(ref)[:NO_MASK_TOKENS]
    with load(str(path), mutation="no-causal-mask") as model:
        unmasked = prefill_logits(model, ids)  # one block: every token sees all of them
    expected = rows(*ref["mutated.no-causal-mask"])
    assert max(max_difference(unmasked[pos], expected[pos]) for pos in range(len(ids))) < TOLERANCE
    assert logits_token_by_token(path, ids, "no-causal-mask") == logits_token_by_token(path, ids, None)


def test_offset_8_reads_what_a_file_with_every_tensor_moved_by_8_bytes_holds(tmp_path: pathlib.Path) -> None:
    """The same model directory, but each tensor's bytes are those 8 bytes after its start (zeros past the end)."""
    source = MODELS[0]
    with SafetensorsFile(str(source / "model.safetensors")) as f:
        raw = pathlib.Path(f.path).read_bytes() + bytes(8)
        moved = {name: TensorData(info.dtype, info.shape, raw[info.begin + 8 : info.end + 8])
                 for name, info in f.tensors.items()}  # fmt: skip
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    (shifted / "config.json").write_bytes((source / "config.json").read_bytes())
    write(str(shifted / "model.safetensors"), moved)
    ids = token_ids(load_reference(source / "reference.safetensors"))[:6]
    assert logits_token_by_token(source, ids, "offset-8") == logits_token_by_token(shifted, ids, None)


def first_queries(path: pathlib.Path, ids: list[int], mutation: str | None, workers: int = 0) -> list[tuple[float, ...]]:
    """Layer 0's q_proj at every position: each depends on its own token only, and a worker computes
    some of its rows whole, so any number of processes gives the same bits (unlike o_proj's partial sums)."""
    seen = []

    def keep(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> None:
        if name == "layers.0.self_attn.q_proj":
            seen.append(values)

    with load(str(path), workers=workers, mutation=mutation) as model:
        for pos, token in enumerate(ids):
            model.forward(token, pos, keep)
    return seen


@pytest.mark.parametrize("mutation", ["offset-8", "bf16-accumulate"])
def test_the_worker_processes_plant_the_bug_too(mutation: str) -> None:
    ids = token_ids(load_reference(MODELS[0] / "reference.safetensors"))[:3]
    alone = first_queries(MODELS[0], ids, mutation)
    assert first_queries(MODELS[0], ids, mutation, workers=1) == alone  # bit for bit, the worker's rows too
    assert alone != first_queries(MODELS[0], ids, None)


def test_without_a_mutation_nothing_is_planted() -> None:
    with load(str(MODELS[0])) as model:
        assert model.mutation is None and model.planted is None and model.causal
        assert all(n.eps == model.config.rms_norm_eps for layer in model.layers
                   for n in (layer.input_layernorm, layer.post_attention_layernorm))  # fmt: skip
        assert type(model.rope).__name__ == "RotaryEmbedding"


def test_an_unknown_mutation_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown mutation 'rope-theta-1e3': the mutations are rope-theta-1e4, "):
        load(str(MODELS[0]), mutation="rope-theta-1e3")


# ------------------------------------------------------------------ fingerprints


def trace_compare(path: pathlib.Path, ids: list[int], *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "microqwen", "trace", "-m", str(path), "--ids", ",".join(map(str, ids)),
                           "--workers", "0", "--compare", *flags], capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_compare_with_the_unmutated_model_names_the_bugs_first_point(name: str) -> None:
    mutation = MUTATIONS[name]
    ids = token_ids(load_reference(MODELS[0] / "reference.safetensors"))[:5]
    flags = ["--mutate", name] + (["--prefill"] if mutation.prefill_only else [])
    result = trace_compare(MODELS[0], ids, *flags)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    names = [line.split()[1] for line in lines]
    first = names.index(mutation.first_point)
    assert all(line.startswith("[OK]") for line in lines[:first])
    assert lines[first].startswith("[DIFF]") and f"(from position {mutation.first_position})" in lines[first]
    assert f"first difference: {mutation.first_point} (" in result.stdout
    assert "max |difference| of the residual stream after each layer: embed_tokens " in result.stdout


def test_a_bug_in_prefill_hides_from_a_token_by_token_trace() -> None:
    ids = token_ids(load_reference(MODELS[0] / "reference.safetensors"))[:5]
    result = trace_compare(MODELS[0], ids, "--mutate", "no-causal-mask")
    assert result.returncode == 0 and " 0 differ" in result.stdout, result.stdout + result.stderr


def test_compare_without_a_reference_needs_a_mutation() -> None:
    result = trace_compare(MODELS[0], [1, 2])
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "it needs --mutate NAME" in result.stderr


# ------------------------------------------------------------------ the bfloat16 bugs


@settings(max_examples=500, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_round_to_bf16_is_the_bf16_rounding_of_a_float32(x: float) -> None:
    expected = bf16.TABLE[bf16.float_to_bits(x)]
    assert round_to_bf16(x) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=20))
def test_truncation_drops_the_low_16_bits_and_pulls_toward_zero(values: list[float]) -> None:
    truncated = bf16.narrow(values, truncate=True)
    for x, t in zip(values, truncated):
        bits = struct.unpack("<I", struct.pack("<f", x))[0]
        assert struct.unpack("<I", struct.pack("<f", t))[0] == bits & 0xFFFF0000
        assert abs(t) <= abs(x)


def test_the_bf16_accumulator_rounds_after_every_addition() -> None:
    bits = array("H", [bf16.float_to_bits(v) for v in (1.0, 2**-9, 2**-9, 2**-9, 0.5, -0.25)])
    matrix = Bf16AccumulatingMatrix(bits, 2, 3)
    # bfloat16 keeps 8 significant bits: next to 1 its step is 2^-7, next to 0.5 it is 2^-8.
    # row 0: 1 + 2^-9 is below half a step: back to 1, twice; the exact sum is 1 + 2^-8.
    # row 1: 2^-9 + 0.5 is exactly half a step: ties to even give 0.5; then - 0.25: 0.25 (exact: 0.25 + 2^-9).
    assert matrix.matvec([1.0, 1.0, 1.0]) == [1.0, 0.25]
    assert matrix.matvec([1.0, 1.0, 1.0]) != NaiveMatrix(bits, 2, 3).matvec([1.0, 1.0, 1.0]) == [1.0 + 2**-8, 0.25 + 2**-9]
