"""Measure how close microqwen comes to the reference: the figures of docs/reference/qwen2.5-0.5b.md.

    python scripts/measure_precision.py                  # the committed float32 references (any Python)
    python scripts/measure_precision.py --float64        # also transformers in float64 (a torch venv)

For each forward-pass fixture (tests/fixtures/models/*: what transformers computed in float32 over
the bf16 weights), microqwen runs the prompt one token at a time and the script prints the largest
|ours - reference| of every kind of trace point (over all layers and positions), of the logits, of the
logits after a batched `prefill`, and of the 16 greedy steps, with the largest |reference| beside it
for scale. If models/random-qwen2.5-0.5b is there (scripts/make_random_model.py) and is the model that
tests/fixtures/full-size/reference.json was recorded for, the same for its two recorded steps.

`--float64` needs torch and transformers: it runs the reference's own code (Qwen2ForCausalLM, eager
attention) in float64 on each fixture, with its three float32 steps (RoPE's cos and sin, RMSNorm, the
attention softmax) kept in float64 too, and prints |ours - that| and |float32 reference - that| on the
logits: what is left of the difference when the reference does not round to float32.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from typing import Any, Dict, List, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from microqwen.model import load, point_names  # noqa: E402
from tests.reference import GREEDY_TOKENS, argmax, load_reference, model_dirs, rows, token_ids  # noqa: E402

NOT_POINTS = {"input_ids", "logits", "greedy_ids", "greedy_logits", "rotary_emb.inv_freq", "ablated_logits"}
FULL_SIZE = os.path.join(ROOT, "models", "random-qwen2.5-0.5b")
FULL_SIZE_REFERENCE = os.path.join(ROOT, "tests", "fixtures", "full-size", "reference.json")

Worst = Dict[str, Tuple[float, float]]  # kind of value -> (max |ours - reference|, max |reference|)


def record(worst: Worst, kind: str, ours: Sequence[float], theirs: Sequence[float]) -> None:
    """Keep the largest difference (and the largest reference value) seen for this kind of value."""
    difference = max(abs(a - b) for a, b in zip(ours, theirs))
    scale = max(abs(b) for b in theirs)
    old = worst.get(kind, (0.0, 0.0))
    worst[kind] = (max(old[0], difference), max(old[1], scale))


def expected_row(shape: Tuple[int, ...], values: List[Any], name: str, pos: int) -> List[Any]:
    """The reference's values of point `name` at position `pos` ([heads, T, T] attention: row pos, up to pos)."""
    if name.endswith("attn_weights"):
        heads, length = shape[0], shape[1]
        return [values[(h * length + pos) * length + t] for h in range(heads) for t in range(pos + 1)]
    return rows(shape, values)[pos]


def fixture(path: str) -> Worst:
    """Every kind of trace point, the logits, prefill and greedy steps against one fixture's reference."""
    ref = load_reference(os.path.join(path, "reference.safetensors"))
    ids = token_ids(ref)
    seen: dict[tuple[str, int], list[float]] = {}

    def hook(name: str, pos: int, values: Sequence[float], shape: Tuple[int, ...]) -> None:
        seen[name, pos] = list(values)

    worst: Worst = {}
    with load(path) as model:
        logits = [model.forward(token, pos, hook) for pos, token in enumerate(ids)]
        points = set(point_names(model.config.num_hidden_layers)) - NOT_POINTS  # not the lab's tensors
    for name in sorted(points & set(ref)):
        for pos in range(len(ids)):
            record(worst, re.sub(r"^layers\.\d+", "layers.{i}", name), seen[name, pos], expected_row(*ref[name], name, pos))
    expected = rows(*ref["logits"])
    for ours, theirs in zip(logits, expected):
        record(worst, "logits, one token at a time", ours, theirs)
    greedy = rows(*ref["greedy_logits"])
    with load(path) as model:
        step = model.prefill(ids)
        record(worst, "logits after prefill", step, expected[-1])
        for theirs in greedy[:GREEDY_TOKENS]:
            record(worst, "logits of the greedy steps", step, theirs)
            step = model.forward(argmax(step), model.pos)
    return worst


def full_size() -> Worst | None:
    """The full-size random model's two recorded steps, if it is there and is the recorded one."""
    with open(FULL_SIZE_REFERENCE, encoding="utf-8") as f:
        reference = json.load(f)
    weights = os.path.join(FULL_SIZE, "model.safetensors")
    if not os.path.isfile(weights) or sha256(weights) != reference["model_sha256"]:
        return None
    worst: Worst = {}
    with load(FULL_SIZE) as model:
        first = model.prefill(reference["prompt"])
        second = model.forward(argmax(first), model.pos)
    for label, logits, expected in zip(("after the prompt", "after one step"), (first, second), reference["steps"]):
        record(worst, f"logits {label}, top 10", [logits[i] for i in expected["top_ids"]], expected["top_logits"])
        sampled = logits[:: reference["sample_stride"]]
        record(worst, f"logits {label}, {len(sampled):,} ids across the vocabulary", sampled, expected["sampled_logits"])
    return worst


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def float64_logits(path: str, ids: List[int]) -> List[List[float]]:
    """transformers' Qwen2ForCausalLM in float64, its float32 steps too (RoPE angles stay float32, as ours)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.models.qwen2 import modeling_qwen2

    def rotary(self: Any, x: Any, position_ids: Any) -> Any:
        angles = position_ids[..., None].float() * self.inv_freq.float()  # float32, as in the reference
        angles = torch.cat((angles, angles), dim=-1).double()
        return angles.cos().to(x.dtype), angles.sin().to(x.dtype)

    def rmsnorm(self: Any, h: Any) -> Any:
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    softmax = torch.nn.functional.softmax
    modeling_qwen2.Qwen2RotaryEmbedding.forward = rotary
    modeling_qwen2.Qwen2RMSNorm.forward = rmsnorm
    torch.nn.functional.softmax = lambda x, dim=None, dtype=None, **kw: softmax(x, dim=dim, **kw)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64, attn_implementation="eager")
        with torch.no_grad():
            result: List[List[float]] = model(torch.tensor([ids])).logits[0].tolist()
    finally:
        torch.nn.functional.softmax = softmax
    return result


def print_table(title: str, worst: Worst) -> None:
    print(f"\n{title}\n\n| value | max \\|ours - reference\\| | max \\|reference\\| |\n|---|---|---|")
    for kind, (difference, scale) in worst.items():
        print(f"| `{kind}` | {difference:.1e} | {scale:.3g} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--float64", action="store_true", help="also run transformers in float64 (needs torch)")
    args = parser.parse_args()
    import platform

    print(f"microqwen on {platform.python_implementation()} {platform.python_version()}")
    for path in model_dirs():
        print_table(f"fixture {path.name}", fixture(str(path)))
        if args.float64:
            ref = load_reference(path / "reference.safetensors")
            ids, float32 = token_ids(ref), rows(*ref["logits"])
            exact = float64_logits(str(path), ids)
            with load(str(path)) as model:
                ours = [model.forward(token, pos) for pos, token in enumerate(ids)]
            worst: Worst = {}
            for a, b, c in zip(ours, float32, exact):
                record(worst, "logits: ours - float64 reference", a, c)
                record(worst, "logits: float32 reference - float64 reference", b, c)
            print_table(f"fixture {path.name} against transformers in float64", worst)
    result = full_size()
    if result is None:
        print("\nno full-size model (python scripts/make_random_model.py writes it): skipped")
    else:
        print_table("full-size random model", result)


if __name__ == "__main__":
    main()
