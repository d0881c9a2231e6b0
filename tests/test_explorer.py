"""The explorer's views against the reference: attention, candidates, norms, the lens, ablation, patching.

Each fixture model's reference (tests/fixtures/models/, made with transformers) holds every trace
point at every position, the logits, and the logits with head 1 of layer 1 ablated; the views must
show the same numbers (to the 4 decimals the page gets for attention weights).
"""

from __future__ import annotations

import importlib
import math
import pathlib
import re
import unicodedata
from typing import Iterator, Sequence

import pytest

import microqwen
from microqwen import explorer
from microqwen.model import Hook, Qwen2ForCausalLM
from microqwen.sampling import SamplingParams

from .reference import Reference, argmax, load_reference, model_dirs, rows, token_ids
from .test_hooks import ABLATED_HEAD, ABLATED_LAYER

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def softmax(logits: Sequence[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    return [e / sum(exps) for e in exps]


@pytest.fixture(scope="module", params=model_dirs(), ids=lambda p: p.name)
def fixture(request: pytest.FixtureRequest) -> Iterator[tuple[Qwen2ForCausalLM, Reference]]:
    directory: pathlib.Path = request.param
    with microqwen.load(str(directory), progress=False) as model:
        yield model, load_reference(directory / "reference.safetensors")


def test_run_shows_the_references_attention_candidates_and_norms(fixture: tuple[Qwen2ForCausalLM, Reference]) -> None:
    model, ref = fixture
    ids = token_ids(ref)
    answer, cached = explorer.Explorer(model).run(ids, [])
    assert cached == ids and [t["id"] for t in answer["tokens"]] == ids
    config = model.config
    logits = rows(*ref["logits"])
    for pos, position in enumerate(answer["positions"]):
        assert len(position["attn"]) == config.num_hidden_layers
        for layer in range(config.num_hidden_layers):
            shape, values = ref[f"layers.{layer}.self_attn.attn_weights"]  # [heads, T, T]
            for head in range(config.num_attention_heads):
                start = (head * shape[1] + pos) * shape[2]
                expected = values[start : start + pos + 1]
                assert position["attn"][layer][head] == pytest.approx(expected, abs=1e-4 + 5e-5)
        p = softmax(logits[pos])
        assert position["top"][0]["id"] == max(range(len(p)), key=p.__getitem__)
        assert [c["p"] for c in position["top"]] == pytest.approx([p[c["id"]] for c in position["top"]], abs=1e-5)
        streams = ["embed_tokens"] + [f"layers.{i}" for i in range(config.num_hidden_layers)]
        for name, rms in zip(streams, position["rms"]):
            h = rows(*ref[name])[pos]
            assert rms == pytest.approx(math.sqrt(sum(x * x for x in h) / len(h)), rel=1e-4)


def test_stepping_computes_only_the_new_position(fixture: tuple[Qwen2ForCausalLM, Reference]) -> None:
    model, ref = fixture
    ids = token_ids(ref)
    view = explorer.Explorer(model)
    _, cached = view.run(ids[:-1], [])
    seen: list[int] = []
    forward = model.forward

    def counted(token: int, pos: int, hook: Hook | None = None) -> list[float]:
        seen.append(pos)
        return forward(token, pos, hook)

    model.forward = counted  # type: ignore[method-assign]
    try:
        stepped, cached = view.run(ids, cached, start=len(ids) - 1)
    finally:
        del model.forward
    assert seen == [len(ids) - 1] and cached == ids
    whole, _ = explorer.Explorer(model).run(ids, [])
    assert stepped["positions"] == whole["positions"][-1:]


def test_the_lens_at_the_last_layer_is_the_models_prediction(fixture: tuple[Qwen2ForCausalLM, Reference]) -> None:
    model, ref = fixture
    ids = token_ids(ref)
    pos = len(ids) // 2
    answer, _ = explorer.Explorer(model).lens(ids, pos, [])
    assert [row["point"] for row in answer["rows"]] == ["embed_tokens"] + [f"layers.{i}" for i in
                                                                           range(model.config.num_hidden_layers)]  # fmt: skip
    p = softmax(rows(*ref["logits"])[pos])
    last = answer["rows"][-1]
    assert last["id"] == answer["final"]["id"] == max(range(len(p)), key=p.__getitem__)
    assert last["rank"] == 1 and last["p"] == pytest.approx(max(p), abs=1e-5)


def test_the_distribution_is_the_softmax_at_the_temperature(fixture: tuple[Qwen2ForCausalLM, Reference]) -> None:
    model, ref = fixture
    ids = token_ids(ref)
    answer, _ = explorer.Explorer(model).distribution(ids, SamplingParams(temperature=0.5, seed=1), True, [])
    expected = softmax([x / 0.5 for x in rows(*ref["logits"])[-1]])
    assert answer["survivors"] == model.config.vocab_size
    assert [c["p"] for c in answer["reshaped"]] == pytest.approx([expected[c["id"]] for c in answer["reshaped"]], abs=1e-5)
    assert answer["drawn"]["id"] in range(model.config.vocab_size)
    greedy, _ = explorer.Explorer(model).distribution(ids, SamplingParams(temperature=0.0), False, [])
    assert greedy["survivors"] == 1 and greedy["reshaped"][0]["p"] == 1.0


def test_ablating_a_head_matches_the_reference(fixture: tuple[Qwen2ForCausalLM, Reference]) -> None:
    model, ref = fixture
    ids = token_ids(ref)
    answer = explorer.ablate_head(model, ids, ABLATED_LAYER, ABLATED_HEAD)
    before, after = softmax(rows(*ref["logits"])[-1]), softmax(rows(*ref["ablated_logits"])[-1])
    for token in answer["tokens"]:
        assert token["p_before"] == pytest.approx(before[token["id"]], abs=1e-5)
        assert token["p_after"] == pytest.approx(after[token["id"]], abs=1e-5)
    kl = sum(p * math.log(p / q) for p, q in zip(before, after))
    assert answer["kl"] == pytest.approx(kl, rel=1e-3, abs=1e-6)
    head_dim = model.config.head_dim
    assert answer["slice"] == [ABLATED_HEAD * head_dim, (ABLATED_HEAD + 1) * head_dim]


def test_patching_restores_what_it_should(fixture: tuple[Qwen2ForCausalLM, Reference]) -> None:
    """Properties that follow from the definition: patching a position before the prompts differ changes
    nothing (0); the last layer at the last position is the clean run (1); the last layer at an earlier
    position is read by nothing after it (0). And one cell equals a full rerun without cache reuse."""
    model, ref = fixture
    clean = token_ids(ref)[:8]  # L x 8 x 9 / 2 token passes
    differs = 4
    model.reset()
    clean_choice = argmax(model.prefill(clean))
    for replacement in range(model.config.vocab_size):  # a corrupted prompt that predicts another token
        corrupt = clean[:differs] + [replacement] + clean[differs + 1 :]
        model.reset()
        if replacement != clean[differs] and argmax(model.prefill(corrupt)) != clean_choice:
            break
    answer = explorer.patch_residual(model, clean, corrupt)
    layers = model.config.num_hidden_layers
    assert answer["rows"] == ["embed_tokens"] + [f"layers.{i}" for i in range(layers)]
    effect = dict(zip(answer["rows"], answer["effect"]))
    last = f"layers.{layers - 1}"
    assert effect[last][-1] == pytest.approx(1.0, abs=1e-9)
    for row in effect.values():
        assert row[:differs] == pytest.approx([0.0] * differs, abs=1e-9)
    assert effect[last][:-1] == pytest.approx([0.0] * (len(clean) - 1), abs=1e-9)
    layer, pos = 0, differs
    recorder = microqwen.trace.Recorder(lambda name: name == f"layers.{layer}")
    model.reset()
    model.prefill(clean, recorder)
    value = list(recorder.points[pos][f"layers.{layer}"].values)
    model.reset()
    patched = model.prefill(corrupt, lambda name, at, v, shape: value if (name, at) == (f"layers.{layer}", pos) else None)
    good, bad = answer["clean_answer"], answer["corrupt_answer"]
    restored = (patched[good] - patched[bad] - answer["ld_corrupt"]) / (answer["ld_clean"] - answer["ld_corrupt"])
    assert effect[f"layers.{layer}"][pos] == pytest.approx(restored, abs=1e-9)


def slugs(page: pathlib.Path) -> set[str]:
    """The anchors of a docs page's headings, as Python-Markdown's toc makes them."""
    found = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = unicodedata.normalize("NFKD", line.lstrip("#").strip()).encode("ascii", "ignore").decode()
            found.add(re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", title).strip().lower()))
    return found


def test_every_value_names_a_real_line_and_docs_page() -> None:
    package = pathlib.Path(microqwen.__file__).parent
    for kind, source in explorer.sources().items():
        where = source["source"]
        module = importlib.import_module(where["module"])
        assert package / where["file"] == pathlib.Path(module.__file__ or "")
        assert 1 <= where["line"] <= len((package / where["file"]).read_text().splitlines()), kind
        page, _, anchor = source["docs"].partition("#")
        assert page.endswith(".html"), page  # the offline plugin builds pages as .html files
        assert not anchor or anchor in slugs(DOCS / (page[: -len(".html")] + ".md")), (kind, anchor)
        api_page, _, api_object = source["api"].partition("#")
        assert (DOCS / (api_page[: -len(".html")] + ".md")).is_file(), kind
        first, second, *attributes = api_object.split(".")
        obj: object = importlib.import_module(f"{first}.{second}")
        for name in attributes:
            obj = getattr(obj, name)
