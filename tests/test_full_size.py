"""The full-size model: exactly Qwen2.5-0.5B's config, 290 tensors and 494 million random weights.

Its logits after a prompt and after one decode step are checked against transformers'
(tests/fixtures/full-size/reference.json, made by scripts/make_full_size_reference.py).

Marked slow (run with `python -m pytest -m slow`; CI does): the session fixture writes the 1 GB model
with scripts/make_random_model.py if models/random-qwen2.5-0.5b is not there yet (about 11 s).
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
import subprocess
import sys

import pytest

from microqwen.inspect_model import inspect
from microqwen.model import load

from .reference import argmax, max_difference

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "random-qwen2.5-0.5b"
REFERENCE = ROOT / "tests" / "fixtures" / "full-size" / "reference.json"
TOLERANCE = 1e-3

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir() -> pathlib.Path:
    if not (MODEL / "model.safetensors").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_random_model.py"), "--out", str(MODEL)],
                       check=True, timeout=1200)  # fmt: skip
    return MODEL


def test_the_random_model_has_qwen2_5_0_5b_shapes(model_dir: pathlib.Path) -> None:
    report = inspect(str(model_dir))
    assert report.problems == []
    assert len(report.tensors) == 290 and report.parameters == 494_032_768  # docs/reference/qwen2.5-0.5b.md
    assert report.config is not None and report.config.head_dim == 64 and report.config.n_rep == 7


def test_it_computes_the_references_logits_in_one_process_and_with_a_worker(model_dir: pathlib.Path) -> None:
    """Prefill, then one decode step, against transformers (scripts/make_full_size_reference.py)."""
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    assert sha256(model_dir / "model.safetensors") == reference["model_sha256"], (
        "the random model is not the one the reference was recorded for: rerun the two scripts"
    )
    results = []
    for workers in (0, 1):
        with load(str(model_dir), workers=workers) as model:
            first = model.prefill(reference["prompt"])
            second = model.forward(argmax(first), model.pos)
        for logits, expected in zip((first, second), reference["steps"]):
            assert len(logits) == 151936 and all(math.isfinite(v) for v in logits)
            assert argmax(logits) == expected["argmax"]
            assert max_difference([logits[i] for i in expected["top_ids"]], expected["top_logits"]) < TOLERANCE
            assert max_difference(logits[:: reference["sample_stride"]], expected["sampled_logits"]) < TOLERANCE
        results.append((first, second))
    (alone, after_alone), (shared, after_shared) = results  # with a worker, o_proj's and down_proj's
    assert max_difference(alone, shared) < 1e-9 and max_difference(after_alone, after_shared) < 1e-9  # partial sums
    # add up in another order: the same numbers, to rounding


def sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
