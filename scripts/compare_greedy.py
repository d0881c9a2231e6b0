"""Greedy generation: microqwen's command line against transformers, token for token, on a real model.

    $REFPYTHON scripts/compare_greedy.py --model DIR --python pypy3 --python python3.12 -n 32

REFPYTHON is a Python with torch and transformers; DIR a real model of Qwen2.5-0.5B's architecture in
the Hugging Face layout (Qwen/Qwen2.5-0.5B-Instruct, or Qwen2.5-Coder-0.5B-Instruct).

For each prompt (a raw completion and a chat question by default), transformers' `generate` (float32,
eager attention, do_sample=False, no repetition penalty) gives the reference ids; then
`<python> -m microqwen generate --print-ids --temp 0 --repeat-penalty 1` runs for each interpreter
given, and the new ids must be the same (microqwen tokenizes and renders the chat template itself,
so a difference there would show here too). Prints a line per prompt and interpreter, exits 1 on
any difference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch
from transformers import AutoTokenizer, Qwen2ForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PROMPTS = [("raw", "def fibonacci(n):"), ("chat", "What is the capital of France?")]


def reference(model_dir: str, tokenizer: AutoTokenizer, kind: str, text: str, n: int) -> tuple[list[int], list[int]]:
    """(prompt ids, greedy ids) from transformers."""
    if kind == "chat":
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)  # fmt: skip
    prompt = tokenizer(text, return_tensors="pt").input_ids
    model = Qwen2ForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model.generate(prompt, do_sample=False, max_new_tokens=n, repetition_penalty=1.0,
                             temperature=None, top_p=None, top_k=None)  # fmt: skip
    generated = out[0, prompt.shape[1] :].tolist()
    eos = set(model.generation_config.eos_token_id or [])
    for i, token in enumerate(generated):
        if token in eos:  # microqwen stops at an eos id without printing it
            generated = generated[:i]
            break
    return prompt[0].tolist(), generated


def ours(python: str, model_dir: str, kind: str, text: str, n: int) -> tuple[list[int], float]:
    """The ids `microqwen generate` prints, and how long it took."""
    command = [python, "-m", "microqwen", "generate", "-m", model_dir, "-p", text, "--print-ids", "--temp", "0",
               "--repeat-penalty", "1", "-n", str(n)] + (["--chat"] if kind == "chat" else [])  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return [int(line) for line in result.stdout.split()], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--python", action="append", required=True, help="an interpreter to run microqwen with")
    parser.add_argument("-n", type=int, default=32)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    same = True
    for kind, text in PROMPTS:
        prompt, expected = reference(args.model, tokenizer, kind, text, args.n)
        print(f"{kind} prompt {text!r}: {len(prompt)} ids; transformers: {tokenizer.decode(expected)!r}")
        for python in args.python:
            got, seconds = ours(python, args.model, kind, text, args.n)
            verdict = "same ids" if got == expected else f"DIFFERENT: {got}"
            same &= got == expected
            print(f"  {python}: {len(got)} tokens in {seconds:.0f} s: {verdict}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
