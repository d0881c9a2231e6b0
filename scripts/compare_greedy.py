"""Greedy generation: microqwen's command line against transformers, token for token, on a real model.

    $REFPYTHON scripts/compare_greedy.py --model MODEL --python pypy3 --python python3.12 -n 32

REFPYTHON is a Python with torch and transformers (and gguf and accelerate, for a .gguf file); MODEL
(default: $MICROQWEN_REAL_MODEL) is a real model of Qwen2.5-0.5B's architecture, either a directory in
the Hugging Face layout (Qwen/Qwen2.5-0.5B-Instruct, or Qwen2.5-Coder-0.5B-Instruct) or one .gguf file
(llama.cpp's, e.g. a Q4_K_M), which transformers reads with `from_pretrained(dir, gguf_file=...)`,
dequantising every tensor to float32 with gguf-py.

For each prompt (a raw completion and a chat question by default), transformers' `generate` (float32,
eager attention, do_sample=False, no repetition penalty) gives the reference ids; then
`<python> -m microqwen generate --print-ids --temp 0 --repeat-penalty 1` runs for each interpreter
given, and the new ids must be the same (microqwen tokenizes and renders the chat template itself,
so a difference there would show here too). Prints a line per prompt and interpreter, with the
wall time and the peak resident memory of the run (GNU time's maximum resident set size; with
`--workers 0`, the one process that holds every weight), and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict

import torch
from transformers import AutoTokenizer, Qwen2ForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PROMPTS = [("raw", "def fibonacci(n):"), ("chat", "What is the capital of France?")]


def source(model: str) -> Dict[str, Any]:
    """from_pretrained's arguments for a model directory or a .gguf file."""
    if model.endswith(".gguf"):
        return {"pretrained_model_name_or_path": os.path.dirname(os.path.abspath(model)), "gguf_file": os.path.basename(model)}
    return {"pretrained_model_name_or_path": model}


def reference(model: Qwen2ForCausalLM, tokenizer: AutoTokenizer, kind: str, text: str, n: int) -> tuple[list[int], list[int]]:
    """(prompt ids, greedy ids) from transformers."""
    if kind == "chat":
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)  # fmt: skip
    prompt = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(prompt, do_sample=False, max_new_tokens=n, repetition_penalty=1.0,
                             temperature=None, top_p=None, top_k=None)  # fmt: skip
    generated = out[0, prompt.shape[1] :].tolist()
    eos = model.generation_config.eos_token_id
    eos = set([eos] if isinstance(eos, int) else eos or [])
    for i, token in enumerate(generated):
        if token in eos:  # microqwen stops at an eos id without printing it
            generated = generated[:i]
            break
    return prompt[0].tolist(), generated


def ours(python: str, model: str, kind: str, text: str, n: int, workers: int) -> tuple[list[int], float, int]:
    """The ids `microqwen generate` prints, how long it took, and its peak resident memory in bytes."""
    command = [python, "-m", "microqwen", "generate", "-m", model, "-p", text, "--print-ids", "--temp", "0",
               "--repeat-penalty", "1", "-n", str(n), "--workers", str(workers),
               "--no-prompt-cache"] + (["--chat"] if kind == "chat" else [])  # fmt: skip
    with tempfile.NamedTemporaryFile("r") as peak:
        start = time.perf_counter()
        result = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak.name, *command], cwd=ROOT,
                                capture_output=True, text=True, check=True)  # fmt: skip
        seconds = time.perf_counter() - start
        kilobytes = int(peak.read().split()[-1])
    return [int(line) for line in result.stdout.split()], seconds, kilobytes * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.environ.get("MICROQWEN_REAL_MODEL"),
                        help="a model directory or a .gguf file (default $MICROQWEN_REAL_MODEL)")
    parser.add_argument("--python", action="append", required=True, help="an interpreter to run microqwen with")
    parser.add_argument("-n", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="microqwen's worker processes (default 0: one process)")
    args = parser.parse_args()
    if not args.model:
        parser.error("give --model or set $MICROQWEN_REAL_MODEL")
    tokenizer = AutoTokenizer.from_pretrained(**source(args.model))
    model = Qwen2ForCausalLM.from_pretrained(**source(args.model), dtype=torch.float32, attn_implementation="eager").eval()
    same = True
    for kind, text in PROMPTS:
        prompt, expected = reference(model, tokenizer, kind, text, args.n)
        print(f"{kind} prompt {text!r}: {len(prompt)} ids; transformers: {tokenizer.decode(expected)!r}", flush=True)
        for python in args.python:
            got, seconds, peak = ours(python, args.model, kind, text, args.n, args.workers)
            verdict = "same ids" if got == expected else f"DIFFERENT: {got}"
            same &= got == expected
            print(f"  {python}: {len(got)} tokens in {seconds:.0f} s, peak {peak / 2**30:.2f} GiB: {verdict}", flush=True)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
