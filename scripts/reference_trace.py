"""Record what the reference computes at every trace point, for `microqwen trace --compare`.

    $REFPYTHON scripts/reference_trace.py --model DIR -p "The capital of France is" -o ref.safetensors
    $REFPYTHON scripts/reference_trace.py --model DIR --ids 785,6722,315 -o ref.safetensors
    microqwen trace --model DIR --compare ref.safetensors

Runs in the reference venv (torch + transformers). The model directory is loaded as the fixtures'
reference is (`make_model_fixtures.load_model`: float32 compute over the saved weights, eager
attention), and one batched causal pass over the prompt is recorded with forward hooks
(`make_model_fixtures.record_trace`). A text prompt is encoded with the model's own tokenizer
through transformers (`--chat` wraps it in the chat template first).

The output has the layout of tests/fixtures/models/*/reference.safetensors, which microqwen reads
with its own safetensors reader:

    input_ids                          I64 [T]
    logits                             F32 [T, vocab]
    <every trace point>                F32 [T, width]     embed_tokens, layers.{i}.<point>, layers.{i}, norm
    layers.{i}.self_attn.attn_weights  F32 [heads, T, T]

and a __metadata__ of versions, the model directory and the prompt. For Qwen2.5-0.5B it is about
1.2 MB per prompt token (0.6 MB of it logits).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import torch
import transformers
from transformers import AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_fixtures import load_model, record_trace, trace_shapes, write_reference  # noqa: E402


def prompt_ids(args: argparse.Namespace) -> list[int]:
    """--ids as given, or -p TEXT encoded by the model's tokenizer (after the chat template with --chat)."""
    if args.ids is not None:
        return [int(part) for part in args.ids.split(",") if part.strip()]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    text = args.prompt
    if args.chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)  # fmt: skip
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, metavar="DIR", help="a Qwen2 model directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-p", "--prompt", metavar="TEXT", help="the prompt, encoded by the model's tokenizer")
    source.add_argument("--ids", metavar="1,2,3", help="the prompt as token ids")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument("-o", "--out", required=True, metavar="FILE", help="the .safetensors file to write")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the same reduction order on every run
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    ids = prompt_ids(args)
    model = load_model(args.model)
    input_ids = torch.tensor(ids, dtype=torch.int64)
    logits, trace = record_trace(model, input_ids)
    tensors = {"input_ids": input_ids, "logits": logits, **trace}
    for name, shape in trace_shapes(model.config, len(ids)).items():
        assert tuple(tensors[name].shape) == shape, (name, tuple(tensors[name].shape), shape)
    metadata = {
        "generator": "scripts/reference_trace.py",
        "model": os.path.abspath(args.model),
        "prompt": args.prompt if args.ids is None else "",
        "chat": str(args.chat),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": platform.python_version(),
        "compute": "float32 over the saved weights, attn_implementation=eager, torch.set_num_threads(1)",
    }
    write_reference(args.out, tensors, metadata)
    print(f"{args.out}: {len(ids)} positions, {len(tensors)} tensors; input_ids {ids}", file=sys.stderr)


if __name__ == "__main__":
    main()
