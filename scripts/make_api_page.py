"""Regenerate the REPL session that docs/python-api.md shows, by running it in a Python console.

    pypy3 scripts/make_api_page.py --model DIR        # about a minute under PyPy on 2 cores

DIR is a Qwen2.5-0.5B-architecture model directory, a real one (the page's session was made with
Qwen2.5-Coder-0.5B-Instruct). Each line of SESSION goes to `code.InteractiveConsole`, as if typed at
the `>>>` prompt, and the transcript (prompts, what was typed, what it printed) is written to
docs/snippets/api/session.txt; the model's path is shown as MODEL.
"""

from __future__ import annotations

import argparse
import code
import contextlib
import io
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "docs", "snippets", "api", "session.txt")

SESSION = '''\
import microqwen
model = microqwen.load(MODEL, workers=1)
model.layers[3].self_attn.q_proj
ids = model.tokenizer.encode("The capital of France is")
ids
for pos, token in enumerate(ids):
    logits = model.forward(token, pos)

len(logits)
from microqwen.trace import top_tokens
for c in top_tokens(logits, 5):
    print(f"{c.id:>6}  {model.tokenizer.decode([c.id])!r:<12} {c.probability:.3f}")

def show(name, pos, values, shape):
    if name == "layers.23.self_attn.attn_weights" and pos == 4:
        print(name, shape, [round(w, 3) for w in values[:5]])

model.reset()
logits = model.prefill(ids, show)
greedy = microqwen.Sampler(microqwen.SamplingParams(temperature=0))
model.reset()
for token in microqwen.generate(model, "def fibonacci(n):", max_new_tokens=32, sampler=greedy):
    print(token.text, end="", flush=True)

chat = microqwen.Conversation(model, greedy)
print("".join(token.text for token in chat.ask("What is the capital of France?")))
model.close()
'''


def transcript(model_dir: str) -> str:
    """Run SESSION line by line in a console; return what a terminal would have shown."""
    console = code.InteractiveConsole({"MODEL": model_dir})
    shown: list[str] = []
    more = False
    for line in SESSION.splitlines():
        shown.append(("... " if more else ">>> ") + line)
        output = io.StringIO()
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            more = console.push(line)
        if output.getvalue():
            shown += output.getvalue().rstrip("\n").split("\n")
    return "\n".join(text.replace(repr(model_dir), "MODEL").rstrip() for text in shown) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a Qwen2.5-0.5B-architecture model directory")
    args = parser.parse_args()
    start = time.perf_counter()
    text = transcript(args.model)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    print(f"wrote {OUT} in {time.perf_counter() - start:.0f} s ({sys.implementation.name})", file=sys.stderr)


if __name__ == "__main__":
    main()
