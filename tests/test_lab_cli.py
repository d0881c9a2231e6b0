"""The lab on the command line, and the scores: perplexity, --target, the richer lens, the precision lab.

Numbers are the reference's (tests/fixtures/models/*/reference.safetensors); a bad argument is one
line on stderr naming what is wrong and the valid range, and exit status 2.
"""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from microqwen.distribution import entropy, kl_divergence, log_softmax
from microqwen.lab import compare_precision, perplexity
from microqwen.model import load
from microqwen.trace import Selection, TraceSession, trace_tokens

from .reference import FIXTURES, LAB_MODELS, layer_count, load_reference, max_difference, rows, token_ids
from .tiny_model import write_tiny_chat_model

MODELS = [FIXTURES / name for name in LAB_MODELS]
TOLERANCE = 1e-4


def microqwen(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "microqwen", *args, "--workers", "0"], input=stdin,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def reference(path: pathlib.Path) -> Any:
    return load_reference(path / "reference.safetensors")


def ids_flag(ids: list[int]) -> str:
    return ",".join(map(str, ids))


# ------------------------------------------------------------------ the commands, --json and --html


def test_ablate_patch_attribute_and_steer_write_what_they_print(tmp_path: pathlib.Path) -> None:
    path = MODELS[0]
    ref = reference(path)
    ids, corrupted = token_ids(ref), token_ids(ref, "patch.corrupted_ids")
    out = tmp_path / "out.json"
    ablated = microqwen("ablate", "-m", str(path), "--ids", ids_flag(ids), "layers.1.self_attn.head.1", "--json", str(out))
    assert ablated.returncode == 0, ablated.stderr
    data = json.loads(out.read_text())
    clean, expected = rows(*ref["logits"])[-1], rows(*ref["ablated_logits"])[-1]
    assert data["kl"] == pytest.approx(kl_divergence(log_softmax(clean), log_softmax(expected)), abs=TOLERANCE)
    assert f"KL(clean || ablated) = {data['kl']:.4f} nats" in ablated.stdout and data["ids"] == ids

    patched = microqwen("patch", "-m", str(path), "--clean-ids", ids_flag(ids), "--corrupted-ids", ids_flag(corrupted),
                        "--json", str(out), "--html", str(tmp_path / "patch.html"))  # fmt: skip
    assert patched.returncode == 0, patched.stderr
    table = json.loads(out.read_text())
    assert len(table["restored"]) == 1 + layer_count(ref) and {len(r) for r in table["restored"]} == {len(ids)}
    page = (tmp_path / "patch.html").read_text()
    assert '"kind":"heatmap"' in page and "http" not in page

    attributed = microqwen("attribute", "-m", str(path), "--ids", ids_flag(ids), "--json", str(out))
    assert attributed.returncode == 0, attributed.stderr
    dla = json.loads(out.read_text())
    assert dla["target"] == token_ids(ref, "dla.target")[0]
    assert math.fsum(dla["contributions"].values()) == pytest.approx(dla["logit"], abs=1e-9)

    vector = tmp_path / "v.json"
    vector.write_text(json.dumps([float(v) for v in ref["steer.vector"][1]]))
    steered = microqwen("steer", "-m", str(path), "--ids", ids_flag(ids), "--layer", "1", "--vector", str(vector),
                        "--scale", "4", "-n", "8", "--json", str(out))  # fmt: skip
    assert steered.returncode == 0, steered.stderr
    assert json.loads(out.read_text())["steered_ids"] == token_ids(ref, "steer.greedy_ids")


def test_the_sweep_and_induction_draw_heatmaps(tmp_path: pathlib.Path) -> None:
    path = MODELS[1]
    ids = token_ids(reference(path))
    page = tmp_path / "sweep.html"
    swept = microqwen("ablate", "-m", str(path), "--ids", ids_flag(ids), "--sweep", "--positions", str(len(ids) - 1),
                      "--html", str(page))  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    assert "KL(clean || ablated), layers x heads:" in swept.stdout and '"kind":"heatmap"' in page.read_text()
    found = microqwen("induction", "-m", str(path), "--length", "6", "--low", "0", "--ablate", "2")
    assert found.returncode == 0, found.stderr
    assert found.stdout.count("loss on the repeat:") == 2 and "ablating a control of 2 heads" in found.stdout


@pytest.mark.parametrize("args, message", [
    (["ablate", "--ids", "1,2", "layers.3.mlp"], "layers.3.mlp: this model has layers 0..2"),
    (["ablate", "--ids", "1,2", "layers.0.self_attn.head.9"], "layers.0.self_attn.head.9: layer 0 has heads 0..3"),
    (["ablate", "--ids", "1,2", "layers.0.mlp", "--positions", "2"], "--positions 2: the prompt has 2 tokens, positions 0..1"),
    (["ablate", "--ids", "1,2"], "give the components to ablate"),
    (["patch", "--clean-ids", "1,2,3", "--corrupted-ids", "1,2"], "the clean prompt has 3 tokens, the corrupted one 2"),
    (["patch", "--clean-ids", "1,2", "--corrupted-ids", "1,3", "--point", "q"], "unknown point 'q' to patch: the points are residual"),
    (["steer", "--ids", "1", "--layer", "3", "--plus-ids", "1", "--minus-ids", "2"], "--layer 3: this model has layers 0..2"),
    (["trace", "--ids", "1,2", "--mutate", "rope"], "argument --mutate: invalid choice: 'rope' (choose from 'rope-theta-1e4'"),
    (["perplexity", "-"], "perplexity reads text, and this model has no tokenizer"),
])  # fmt: skip
def test_a_bad_argument_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = microqwen(*args[:1], "-m", str(MODELS[1]), *args[1:], stdin="")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


def test_a_steering_vector_of_the_wrong_size_is_named(tmp_path: pathlib.Path) -> None:
    vector = tmp_path / "v.json"
    vector.write_text("[1.0, 2.0]")
    result = microqwen("steer", "-m", str(MODELS[1]), "--ids", "1", "--layer", "1", "--vector", str(vector))
    assert result.returncode == 2 and f"{vector}: the vector has 2 numbers; this model's residual stream has 128" in result.stderr


# ------------------------------------------------------------------ perplexity


def test_perplexity_scores_the_second_half_of_each_chunk_as_llama_perplexity() -> None:
    """Two chunks of the prompt's first 10 tokens: each is scored on tokens 6..9, from the reference's logits."""
    path = MODELS[0]
    ref = reference(path)
    ids, logits = token_ids(ref)[:10], rows(*ref["logits"])
    nll = [-log_softmax([float(v) for v in logits[t]])[ids[t + 1]] for t in range(5, 9)]
    with load(str(path)) as model:
        result = perplexity(model, ids + ids, ctx=10)
    assert result.chunks == 2 and [s.pos for s in result.scores] == [6, 7, 8, 9, 16, 17, 18, 19]
    assert max_difference([-s.logprob for s in result.scores], nll + nll) < TOLERANCE
    mean = sum(nll) / 4
    assert result.ppl == pytest.approx(math.exp(mean), rel=TOLERANCE)
    variance = sum(x * x for x in nll + nll) / 8 - mean * mean
    assert result.stderr == pytest.approx(result.ppl * math.sqrt(variance / 7), rel=1e-3)
    assert result.running[0] == pytest.approx(result.ppl, rel=1e-9)  # the second chunk is the first again


def test_perplexity_needs_a_chunk() -> None:
    from microqwen.errors import UsageError

    with load(str(MODELS[0])) as model:
        with pytest.raises(UsageError, match="the text has 5 tokens, fewer than one chunk of 8"):
            perplexity(model, [1, 2, 3, 4, 5], ctx=8)


# ------------------------------------------------------------------ the lens and --target


def test_the_lens_has_entropy_kl_and_the_stream_after_attention(capsys: pytest.CaptureFixture[str]) -> None:
    path = MODELS[0]
    ref = reference(path)
    ids, logits = token_ids(ref), rows(*ref["logits"])
    target = token_ids(ref, "greedy_ids")[0]
    with load(str(path)) as model:
        layers = model.config.num_hidden_layers
        session = TraceSession(model, Selection.every_point(layers), lens_mid=True)
        positions: list[Any] = []
        trace_tokens(session, ids, 0, lambda p: p.choice, positions.append, targets=[target])
    last = positions[-1]
    expected = log_softmax([float(v) for v in logits[-1]])
    assert [row.point for row in last.logit_lens][:3] == ["embed_tokens", "layers.0.resid_mid", "layers.0"]
    final = last.logit_lens[-1]
    assert final.kl == pytest.approx(0.0, abs=1e-9) and final.entropy == pytest.approx(entropy(expected), abs=TOLERANCE)
    assert last.target_logprob == pytest.approx(expected[target], abs=TOLERANCE) and final.target_rank == 1
    mid_ref = [a - b for a, b in zip(rows(*ref["layers.1"])[-1], rows(*ref["layers.1.mlp.down_proj"])[-1])]
    seen = last.points
    mid_ours = [a - b for a, b in zip(seen["layers.1"].values, seen["layers.1.mlp.down_proj"].values)]
    assert max_difference(mid_ours, mid_ref) < 1e-3  # the stream after attention, as the reference has it


def test_trace_target_feeds_the_target_and_scores_each_of_its_tokens(tmp_path: pathlib.Path) -> None:
    model = write_tiny_chat_model(tmp_path / "tiny")  # a byte tokenizer: "cd" is two tokens
    out = tmp_path / "trace.json"
    result = microqwen("trace", "-m", str(model), "-p", "ab", "--target", "cd", "--points", "logits", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("=== position") == 3  # a, b, then c; d is only scored
    assert "target: log p (rank) of each target token" in result.stdout and "log p(target | prompt) = " in result.stdout
    positions = json.loads(out.read_text())["positions"]
    scored = [p["target"] for p in positions]
    assert scored[0] is None and [t["piece"] for t in scored[1:]] == ["c", "d"]
    for position, target in zip(positions[1:], scored[1:]):
        logits = position["points"]["logits"]["values"]
        assert target["logprob"] == pytest.approx(log_softmax(logits)[target["id"]], abs=1e-12)
        assert position["logit_lens"][-1]["target_logprob"] == pytest.approx(target["logprob"], abs=1e-9)


def test_a_prefill_trace_has_the_reference_logits_at_every_position() -> None:
    path = MODELS[1]
    ref = reference(path)
    ids, logits = token_ids(ref), rows(*ref["logits"])
    with load(str(path)) as model:
        session = TraceSession(model, Selection((0,), ("logits",)), lens=False)
        positions = session.prefill(ids)
    for pos, position in enumerate(positions):
        assert max_difference(position.points["logits"].values, logits[pos]) < TOLERANCE, pos


# ------------------------------------------------------------------ precision


def test_float32_drifts_by_rounding_and_bfloat16_by_its_8_bits() -> None:
    path = MODELS[0]
    ids = token_ids(reference(path))[:6]
    with load(str(path)) as model:
        single = compare_precision(model, ids, "float32", max_new_tokens=2)
        half = compare_precision(model, ids, "bfloat16", max_new_tokens=2)
    assert single.points[0].name == "embed_tokens" and single.points[0].relative == 0.0  # bf16 weights are exact
    assert max(p.relative for p in single.points) < 1e-6
    assert 1e-4 < max(p.relative for p in half.points) < 1e-1
    assert [c.pos for c in half.choices] == list(range(len(ids)))
    assert all(c.float64_id == c.rounded_id for c in single.choices)
