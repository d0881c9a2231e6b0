"""Record what transformers computes on the full-size random model, for the slow tests.

    python scripts/make_random_model.py                                  # models/random-qwen2.5-0.5b
    $REFPYTHON scripts/make_full_size_reference.py                       # a Python with torch + transformers

The small fixtures (tests/fixtures/models) check every step against the reference; this checks the
real sizes: a vocabulary of 151,936, 24 layers, 14 query and 2 key/value heads of 64, all 290 tensors
of Qwen2.5-0.5B. The random model is deterministic (its sha256 is recorded, and the test checks it),
so the reference needs no 1 GB file in the repository, only what it computed, in
`tests/fixtures/full-size/reference.json`:

    prompt          [9707, 1879, 13] ("Hello world.")
    steps           two: the logits after the prompt, and after it and the greedy next token;
                    for each the argmax, the 10 largest logits with their ids, and the logits of every
                    SAMPLE_STRIDE-th id (1,007 of them, spread over the whole vocabulary)

Float32 compute over the bf16 weights, eager attention, one thread (the reduction order of every run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform

import torch
import transformers
from transformers import Qwen2ForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = [9707, 1879, 13]
SAMPLE_STRIDE = 151
TOP = 10


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def step(logits: torch.Tensor) -> dict[str, object]:
    """What the test compares of one position's logits [V]."""
    top = torch.topk(logits, TOP)
    return {
        "argmax": int(logits.argmax()),
        "top_ids": top.indices.tolist(),
        "top_logits": top.values.tolist(),
        "sampled_logits": logits[::SAMPLE_STRIDE].tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "random-qwen2.5-0.5b"))
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "full-size", "reference.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = Qwen2ForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        first = model(torch.tensor([PROMPT]), use_cache=False).logits[0, -1]
        following = int(first.argmax())
        second = model(torch.tensor([PROMPT + [following]]), use_cache=False).logits[0, -1]
    reference = {
        "model_sha256": sha256(os.path.join(args.model, "model.safetensors")),
        "made_with": {"torch": torch.__version__, "transformers": transformers.__version__,
                      "python": platform.python_version(),
                      "compute": "float32 over bfloat16 weights, attn_implementation=eager, one thread"},
        "prompt": PROMPT,
        "sample_stride": SAMPLE_STRIDE,
        "steps": [step(first), step(second)],
    }  # fmt: skip
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(args.out, ROOT)}: next tokens {following}, {reference['steps'][1]['argmax']}")


if __name__ == "__main__":
    main()
