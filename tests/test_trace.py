"""Tracing: every trace point against the reference, the analyses, `microqwen trace`, --compare, --step, --html.

The expected values are the reference's (transformers, recorded in tests/fixtures/models/*/reference.safetensors
by scripts/make_model_fixtures.py); a bug planted in microqwen (`--mutate`) must be found by --compare
at the very operation that was broken.
"""

from __future__ import annotations

import html.parser
import json
import math
import pathlib
import re
import subprocess
import sys
from typing import Any, Sequence

import pytest

from microqwen import cli
from microqwen.compare import compare_rows, read_reference
from microqwen.errors import FormatError, UsageError
from microqwen.model import load, point_names
from microqwen.trace import Recorder, Selection, TraceSession, matches, parse_layers, parse_points, summarize, top_tokens

from .reference import (
    argmax, layer_count, load_reference, max_difference, model_dirs, rows, token_ids, trace_point_names,
)
from .tiny_model import write_tiny_chat_model

TOLERANCE = 1e-3
MODELS = model_dirs()
Ref = Any


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "microqwen", "trace", *args], input=stdin, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def reference_values(ref: Ref, name: str, pos: int) -> list[float]:
    """The reference's values of a point at one position, as the tracer reports them."""
    shape, values = ref[name]
    if name.endswith("attn_weights"):  # [heads, T, T]: row pos of each head, up to pos
        heads, length = shape[0], shape[1]
        return [values[(h * length + pos) * length + t] for h in range(heads) for t in range(pos + 1)]
    return [float(v) for v in rows(shape, values)[pos]]


def softmax(logits: Sequence[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    return [e / sum(exps) for e in exps]


@pytest.fixture(scope="module", params=MODELS, ids=[m.name for m in MODELS])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Ref, dict[str, Any]]:
    """A fixture model's prompt traced by the command line, every point, exported as JSON."""
    path: pathlib.Path = request.param
    ref = load_reference(path / "reference.safetensors")
    out = tmp_path_factory.mktemp("trace") / "trace.json"
    ids = ",".join(map(str, token_ids(ref)))
    result = run("-m", str(path), "--ids", ids, "--json", str(out), "--workers", "0")
    assert result.returncode == 0, result.stderr
    return ref, json.loads(out.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ values against the reference


def test_every_point_in_the_json_export_equals_the_reference(exported: tuple[Ref, dict[str, Any]]) -> None:
    ref, trace = exported
    ids = token_ids(ref)
    assert [t["id"] for t in trace["tokens"]] == ids and len(trace["positions"]) == len(ids)
    names = trace_point_names(layer_count(ref)) + ["logits"]
    for pos, position in enumerate(trace["positions"]):
        assert position["pos"] == pos and position["token"] == ids[pos]
        assert list(position["points"]) == names  # forward order
        for name in names:
            point = position["points"][name]
            assert math.prod(point["shape"]) == len(point["values"]), name
            expected = reference_values(ref, name, pos)
            assert max_difference(point["values"], expected) < TOLERANCE, f"{name} at position {pos}"


def test_the_json_export_has_top_attention_and_lens_per_position(exported: tuple[Ref, dict[str, Any]]) -> None:
    ref, trace = exported
    logits = rows(*ref["logits"])
    layers = [f"layers.{i}" for i in range(layer_count(ref))]
    for pos, position in enumerate(trace["positions"]):
        assert list(position["attn"]) == layers
        probabilities = softmax(logits[pos])
        ranked = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])[:5]
        assert [c["id"] for c in position["top"]] == ranked
        for candidate in position["top"]:
            assert candidate["probability"] == pytest.approx(probabilities[candidate["id"]], abs=1e-4)
            assert candidate["piece"] is None  # fixture models have no tokenizer
        for layer, heads in position["attn"].items():
            flat = [w for head in heads for w in head]
            assert max_difference(flat, reference_values(ref, f"{layer}.self_attn.attn_weights", pos)) < TOLERANCE
        lens = position["logit_lens"]
        assert [row["point"] for row in lens] == ["embed_tokens"] + layers
        assert lens[-1]["id"] == argmax(logits[pos]) and lens[-1]["final_rank"] == 1


def test_logit_lens_on_the_last_layer_is_the_final_top_token() -> None:
    path = MODELS[0]
    ref = load_reference(path / "reference.safetensors")
    logits = rows(*ref["logits"])
    with load(str(path)) as model:
        session = TraceSession(model, Selection.every_point(model.config.num_hidden_layers))
        for pos, token in enumerate(token_ids(ref)):
            position = session.feed(token)
            last = position.logit_lens[-1]
            assert last.point == f"layers.{model.config.num_hidden_layers - 1}"
            assert last.id == argmax(logits[pos]) == position.choice
            assert last.final_rank == 1
            assert last.probability == pytest.approx(max(softmax(logits[pos])), abs=1e-4)
            assert all(row.final_rank >= 1 and 0 <= row.final_probability <= 1 for row in position.logit_lens)


# ------------------------------------------------------------------ choosing points


@pytest.mark.parametrize(
    "pattern, name, expected",
    [
        ("q_proj", "layers.3.self_attn.q_proj", True),
        ("self_attn.q_proj", "layers.3.self_attn.q_proj", True),
        ("layers.3.self_attn.q_proj", "layers.3.self_attn.q_proj", True),
        ("proj", "layers.3.self_attn.q_proj", False),  # a whole dotted part, not a substring
        ("*_proj", "layers.3.mlp.down_proj", True),
        ("mlp.*", "layers.3.mlp.up_proj", True),
        ("mlp.*", "layers.3.self_attn.o_proj", False),
        ("residual", "layers.3", True),
        ("residual", "layers.3.mlp.down_proj", False),
        ("norm", "norm", True),
        ("norm", "layers.3.input_layernorm", False),
        ("logits", "logits", True),
    ],
)
def test_point_patterns_match_a_name_or_a_dotted_end_of_it(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


def test_layer_lists_and_ranges() -> None:
    assert parse_layers("0,3,20-23", 24) == (0, 3, 20, 21, 22, 23)
    assert parse_layers("5, 1-2, 2", 24) == (1, 2, 5)
    with pytest.raises(UsageError, match=r"--layers 24: this model has layers 0..23"):
        parse_layers("0,24", 24)
    with pytest.raises(UsageError, match=r"--layers takes numbers and ranges like 0,3,20-23; got 'x'"):
        parse_layers("1,x", 24)
    with pytest.raises(UsageError, match=r"--layers 4-2: this model has layers 0..23"):
        parse_layers("4-2", 24)


def test_point_patterns_must_match_some_point() -> None:
    assert parse_points("q_proj, attn_weights", 2) == ("q_proj", "attn_weights")
    with pytest.raises(UsageError, match=r"--points 'q_porj' matches no trace point; the points are embed_tokens"):
        parse_points("q_proj,q_porj", 2)


def test_the_recorder_keeps_only_the_chosen_points() -> None:
    with load(str(MODELS[0])) as model:
        layers = model.config.num_hidden_layers
        recorder = Recorder(Selection((1,), ("q_proj", "residual", "logits")).chosen)
        model.forward(7, 0, recorder)
        model.forward(9, 1, recorder)
        session = TraceSession(model, Selection((1,), ("q_proj", "residual")), lens=False)
        position = session.feed(7)
    assert list(recorder.points) == [0, 1]
    assert list(recorder.points[1]) == ["layers.1.self_attn.q_proj", "layers.1", "logits"]
    assert recorder.points[1]["layers.1.self_attn.q_proj"].shape == (model.config.q_size,)
    assert list(position.points) == ["layers.1.self_attn.q_proj", "layers.1"]
    assert list(position.attn) == [1] and position.logit_lens == []
    assert len(position.residual_rms) == 1 + layers  # every layer, for the report's chart
    assert point_names(layers)[0] == "embed_tokens" and point_names(layers)[-2:] == ["norm", "logits"]


def test_summary_and_top_tokens() -> None:
    summary = summarize_values([3.0, -4.0, 0.0, 12.0, 1.0])
    assert summary.first == [3.0, -4.0, 0.0] and summary.last == [0.0, 12.0, 1.0]
    assert summary.total == 12.0 and summary.rms == pytest.approx(math.sqrt(170 / 5))
    assert summarize_values([2.0]).last == []  # too short to have separate ends
    ties = top_tokens([0.0, 5.0, 1.0, 5.0], 3)
    assert [c.id for c in ties] == [1, 3, 2]  # on a tie the lower id first, as argmax
    assert sum(c.probability for c in top_tokens([0.0, 5.0, 1.0, 5.0], 4)) == pytest.approx(1.0)


def summarize_values(values: list[float]) -> Any:
    from array import array

    from microqwen.trace import Point

    return summarize(Point((len(values),), array("d", values)))


# ------------------------------------------------------------------ the command's text


def test_text_output_shows_each_chosen_point_then_top_attention_and_lens() -> None:
    path = MODELS[0]
    ref = load_reference(path / "reference.safetensors")
    ids = token_ids(ref)[:4]
    result = run("-m", str(path), "--ids", ",".join(map(str, ids)), "--layers", "1", "--points", "q_proj",
                 "--top-k", "3", "--workers", "0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.strip().split("\n\n")
    assert len(blocks) == len(ids)
    summary = re.compile(r"^(\S+)\s+\[(\d+)\]\s+\[(.*)\]  sum (\S+)  rms (\S+)$")
    logits = rows(*ref["logits"])
    for pos, block in enumerate(blocks):
        lines = block.split("\n")
        assert lines[0] == f"=== position {pos}: token {ids[pos]}"  # no tokenizer: no text
        name, width, shown, total, rms = summary.match(lines[1]).groups()  # type: ignore[union-attr]
        expected = reference_values(ref, "layers.1.self_attn.q_proj", pos)
        assert name == "layers.1.self_attn.q_proj" and int(width) == len(expected)
        numbers = [float(v) for v in shown.replace("...,", "").split(",")]
        assert numbers == pytest.approx(expected[:3] + expected[-3:], abs=1e-4)
        assert float(total) == pytest.approx(math.fsum(expected), abs=1e-3)
        assert float(rms) == pytest.approx(math.sqrt(sum(x * x for x in expected) / len(expected)), rel=1e-4)
        assert lines[2].startswith("top 3 next tokens (softmax of the logits")
        probabilities = softmax(logits[pos])
        for n, line in enumerate(lines[4:7], 1):
            number, token_id, shown_id, logit, p = line.split()
            best = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])[n - 1]
            assert (number, int(token_id), shown_id) == (f"{n}.", best, f"#{best}")
            assert float(logit) == pytest.approx(logits[pos][best], abs=1e-3)
            assert float(p) == pytest.approx(probabilities[best], abs=1e-4)
        assert lines[7].startswith(f"attention of position {pos}: the 3 positions read most")
        assert lines[8].startswith("  layer  1:")
        assert lines[9].startswith("logit lens") and lines[11].startswith("  embed_tokens")
        assert lines[12].startswith("  layers.1") and len(lines) == 13


def test_a_text_prompt_and_the_chat_template_show_token_text(tmp_path: pathlib.Path) -> None:
    model = write_tiny_chat_model(tmp_path / "chat")
    plain = run("-m", str(model), "-p", "Hi", "--points", "logits", "--no-lens", "--workers", "0")
    assert plain.returncode == 0, plain.stderr
    assert "=== position 0: token 72 'H'" in plain.stdout and "=== position 1: token 105 'i'" in plain.stdout
    assert "logit lens" not in plain.stdout
    chat = run("-m", str(model), "-p", "Hi", "--chat", "--points", "logits", "--top-k", "2", "--workers", "0")
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.startswith("=== position 0: token 257 '<|im_start|>'")
    assert "rank of" in chat.stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--top-k", "0"], "--top-k must be 1 or more"),
        (["--layers", "3"], "--layers 3: this model has layers 0..2"),
        (["--points", "q_porj"], "--points 'q_porj' matches no trace point"),
        (["--step", "--compare", "x.safetensors"], "--compare traces the reference's prompt only"),
        (["--tolerance", "nan"], "--tolerance must be a number >= 0, got nan"),
        (["--json", "/nonexistent-dir/t.json"], "--json /nonexistent-dir/t.json: there is no directory /nonexistent-dir"),
        (["--ids", ","], "--ids is empty"),
        (["--step", "-p", "-"], "--step reads its answers from stdin"),
    ],
)
def test_bad_flags_are_one_line_errors(flags: list[str], message: str) -> None:
    result = run("-m", str(MODELS[0]), "--ids", "1,2", "--workers", "0", *flags)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and result.stdout == ""


# ------------------------------------------------------------------ --step and -n


def test_step_takes_enter_for_the_top_token_and_a_number_for_a_candidate(tmp_path: pathlib.Path) -> None:
    path = MODELS[0]
    ref = load_reference(path / "reference.safetensors")
    ids = token_ids(ref)
    out = tmp_path / "step.json"
    result = run("-m", str(path), "--ids", ",".join(map(str, ids)), "--step", "--points", "logits", "--no-lens",
                 "--json", str(out), "--workers", "0", stdin="\nnope\n2\nq\nnever read\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "answer Enter (candidate 1), a number 1..5, or q to stop; got 'nope'" in result.stderr
    positions = json.loads(out.read_text(encoding="utf-8"))["positions"]
    assert len(positions) == len(ids) + 2
    assert positions[len(ids)]["token"] == token_ids(ref, "greedy_ids")[0]  # Enter: the model's choice
    assert positions[len(ids) + 1]["token"] == positions[len(ids)]["top"][1]["id"]  # 2: the second candidate
    assert result.stdout.count("=== position") == len(ids) + 2


def test_step_stops_at_the_end_of_input() -> None:
    result = run("-m", str(MODELS[0]), "--ids", "5,6", "--step", "--points", "logits", "--workers", "0", stdin="\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("=== position") == 3


def test_n_continues_greedily_as_the_reference_does() -> None:
    path = MODELS[1]
    ref = load_reference(path / "reference.safetensors")
    ids = token_ids(ref)
    result = run("-m", str(path), "--ids", ",".join(map(str, ids)), "-n", "3", "--points", "logits", "--no-lens",
                 "--workers", "0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    headers = re.findall(r"=== position (\d+): token (\d+)", result.stdout)
    assert [int(t) for _, t in headers] == ids + token_ids(ref, "greedy_ids")[:3]


# ------------------------------------------------------------------ --compare


def compare_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("[")]


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_compare_with_the_reference_is_all_ok(model: pathlib.Path) -> None:
    result = run("-m", str(model), "--compare", str(model / "reference.safetensors"), "--workers", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = compare_lines(result.stdout)
    layers = layer_count(load_reference(model / "reference.safetensors"))
    assert [line.split()[1] for line in lines] == trace_point_names(layers) + ["logits"]
    assert all(line.startswith("[OK]") for line in lines)
    assert "0 differ" in result.stdout and "first difference" not in result.stdout


@pytest.mark.parametrize(
    "mutation, first",
    [
        ("interleaved-rope", "layers.0.self_attn.rope_q"),
        ("scores-times-sqrt-d", "layers.0.self_attn.attn_weights"),
        ("offset-8", "embed_tokens"),
    ],
)
@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_compare_names_the_first_broken_operation(model: pathlib.Path, mutation: str, first: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    status = cli.main(["trace", "-m", str(model), "--compare", str(model / "reference.safetensors"), "--workers", "0",
                       "--mutate", mutation])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 1, out
    lines = compare_lines(out)
    names = [line.split()[1] for line in lines]
    broken = names.index(first)
    assert all(line.startswith("[OK]") for line in lines[:broken])
    assert lines[broken].startswith("[DIFF]") and lines[-1].startswith("[DIFF] logits")
    assert f"first difference: {first} (" in out
    if first.endswith("rope_q"):  # a rotation by angle 0 is no rotation: position 0 still agrees
        assert "from position 1)" in lines[broken]


def test_compare_refuses_another_prompt_and_a_file_that_is_not_a_trace(tmp_path: pathlib.Path) -> None:
    model = MODELS[0]
    ref = str(model / "reference.safetensors")
    other = run("-m", str(model), "--ids", "1,2,3", "--compare", ref, "--workers", "0")
    assert other.returncode == 2 and "but " + ref + " traced input_ids [" in other.stderr
    weights = run("-m", str(model), "--compare", str(model / "model.safetensors"), "--workers", "0")
    assert weights.returncode == 2 and weights.stderr.count("\n") == 1
    assert "a reference trace holds F32 and I64" in weights.stderr
    with pytest.raises(FormatError, match="no input_ids tensor"):
        from microqwen.safetensors import TensorData, write

        write(str(tmp_path / "x.safetensors"), {"logits": TensorData("F32", (1, 1), bytes(4))})
        read_reference(str(tmp_path / "x.safetensors"))


def test_a_nan_is_never_within_the_tolerance() -> None:
    diff = compare_rows("x", [[0.0, math.nan]], [[0.0, 1.0]], tolerance=1e-3)
    assert not diff.ok and diff.first_position == 0 and math.isnan(diff.max_abs)
    assert compare_rows("x", [[1.0], [2.0]], [[1.0], [2.0005]], tolerance=1e-3).ok


# ------------------------------------------------------------------ --html


class PageParser(html.parser.HTMLParser):
    """Collects tags, attributes and the text of each script element; checks that elements nest."""

    VOID = {"meta", "input", "br", "img", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.scripts: dict[str | None, str] = {}
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(tag, name, value) for name, value in attrs]
        if tag not in self.VOID:
            self.open.append(tag)
        if tag == "script":
            self.scripts[dict(attrs).get("id")] = ""

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, f"</{tag}> does not close the open element"

    def handle_data(self, data: str) -> None:
        if self.open and self.open[-1] == "script":
            key = list(self.scripts)[-1]
            self.scripts[key] += data


def test_the_html_report_is_one_self_contained_page(tmp_path: pathlib.Path) -> None:
    model = MODELS[0]
    ref = load_reference(model / "reference.safetensors")
    ids = token_ids(ref)[:6]
    page = tmp_path / "report.html"
    result = run("-m", str(model), "--ids", ",".join(map(str, ids)), "--points", "logits", "--html", str(page),
                 "--workers", "0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"https?:|file:|url\(|@import", text)  # nothing to fetch, from anywhere
    parser = PageParser()
    parser.feed(text)
    parser.close()
    assert parser.open == []  # every element closed, in order
    assert not [a for a in parser.attributes if a[1] in ("src", "href", "srcset", "action")]
    assert {"svg", "canvas", "select"} <= set(parser.tags)  # the rest is drawn by the inline script
    data = json.loads(parser.scripts["trace-data"])
    assert [t["id"] for t in data["tokens"]] == ids and [t["text"] for t in data["tokens"]] == [f"#{i}" for i in ids]
    logits = rows(*ref["logits"])
    for pos in range(len(ids)):
        assert data["top"][pos][0]["id"] == argmax(logits[pos])
        assert data["lens"][pos][-1]["rank"] == 1
        heads = data["attn"]["0"]
        assert all(len(heads[h][pos]) == pos + 1 for h in range(len(heads)))
    assert len(data["residual_rms"][0]) == 1 + len(data["layers"])


def test_token_text_cannot_break_out_of_the_page(tmp_path: pathlib.Path) -> None:
    from microqwen.report import render_html

    page = render_html({"title": "</script><script>alert(1)</script>", "tokens": [{"id": 1, "text": "</script>"}]})
    parser = PageParser()
    parser.feed(page)
    assert parser.open == [] and set(parser.scripts) == {"trace-data", None}
    assert json.loads(parser.scripts["trace-data"])["tokens"][0]["text"] == "</script>"
