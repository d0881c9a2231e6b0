"""Regenerate every output quoted in docs/tutorial-trace.md, and its screenshot, from the real model.

    MICROQWEN_REAL_MODEL=DIR REFPYTHON=PYTHON pypy3 scripts/make_trace_tutorial.py    # ~3 minutes, 2 cores
    pypy3 scripts/make_trace_tutorial.py --model DIR --refpython PYTHON

DIR (`--model`, else $MICROQWEN_REAL_MODEL) is the directory of a real model of Qwen2.5-0.5B's
architecture in the Hugging Face layout; the page's outputs come from Qwen2.5-Coder-0.5B-Instruct, its
Q4_K_M GGUF dequantised to bfloat16 (the page says how to get one). PYTHON (`--refpython`, else
$REFPYTHON) is a Python with torch and transformers. The script runs `microqwen trace` (with this
interpreter, `--workers 2`: use PyPy, CPython is ~10x slower) on DIR, records the reference with
scripts/reference_trace.py run by PYTHON, and writes

    docs/snippets/trace/*.txt        the commands and their output, trimmed, as the page includes them
    docs/images/trace-report.png     the HTML report in headless Chromium (scripts/screenshot_report.py)

Three of the C project's porting bugs are planted with `--mutate` for the --compare section: RoPE on
interleaved pairs, attention scores multiplied by sqrt(64) instead of divided by it, and the tensors
read 8 bytes late (the off-by-8 of a safetensors offset). The traces and the reference file stay in a
temporary directory, which is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNIPPETS = os.path.join(ROOT, "docs", "snippets", "trace")
SCREENSHOT = os.path.join(ROOT, "docs", "images", "trace-report.png")
FRANCE = "The capital of France is"
CODE = "def area(width, height):\n    return width *"
WORKERS = ["--workers", "2"]


# ------------------------------------------------------------------ running and trimming


class Tutorial:
    """Runs commands on the real model and writes their output, trimmed, into `snippets` (a docs directory)."""

    def __init__(self, model: str, python: str, refpython: str, work: str, snippets: str = SNIPPETS) -> None:
        self.model, self.python, self.refpython, self.work = model, python, refpython, work
        self.snippets = snippets
        self.timings: list[tuple[str, float]] = []

    def shown(self, words: Sequence[str]) -> str:
        """A command as the page shows it: the model directory as $MODEL, temporary files by their name."""
        def word(w: str) -> str:
            if w == self.model:
                return "$MODEL"
            if "\n" in w:  # bash's $'...' keeps the newline visible
                return "$'" + w.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"
            return shlex.quote(os.path.basename(w) if w.startswith(self.work) else w)

        return "$ " + " ".join(word(w) for w in words)

    def microqwen(self, *args: str, stdin: str | None = None, expect: int = 0, timed: str | None = None) -> str:
        """Run `microqwen ARGS` on the real model; return its stdout."""
        command = [self.python, "-m", "microqwen", *args]
        started = time.perf_counter()
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=3600)
        if timed:
            self.timings.append((timed, time.perf_counter() - started))
        if result.returncode != expect:
            raise SystemExit(f"{command}: exit {result.returncode}\n{result.stderr[-3000:]}")
        return result.stdout

    def write(self, name: str, text: str) -> None:
        os.makedirs(self.snippets, exist_ok=True)
        with open(os.path.join(self.snippets, name), "w", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n")
        print(f"wrote {os.path.relpath(os.path.join(self.snippets, name), ROOT)}", file=sys.stderr)


def positions(stdout: str) -> list[list[str]]:
    """The output of `trace`, split into one list of lines per position."""
    return [block.split("\n") for block in stdout.strip().split("\n\n")]


def section(lines: list[str], start: str, stop: Callable[[str], bool] | None = None) -> list[str]:
    """The lines from the one starting with `start` up to (not including) the next section heading."""
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    end = first + 1
    while end < len(lines) and lines[end].startswith(" ") and not (stop and stop(lines[end])):
        end += 1
    return lines[first:end]


def header_and_points(block: list[str]) -> list[str]:
    """A position's header and its summary lines (everything before the top-k table)."""
    return block[: next(i for i, line in enumerate(block) if line.startswith("top "))]


def rms(values: Sequence[float]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values))


def around_first_difference(stdout: str) -> str:
    """The compare lines up to two after the first [DIFF], then the summary."""
    lines = stdout.strip().split("\n")
    points = [line for line in lines if line.startswith("[")]
    first = next(i for i, line in enumerate(points) if line.startswith("[DIFF]"))
    kept = points[max(0, first - 3) : first + 3]
    return "\n".join((["..."] if first > 3 else []) + kept + ["..."] + lines[len(points) :])


# ------------------------------------------------------------------ the page's sections


def make_tokens(t: Tutorial) -> None:
    args = ["tokenize", FRANCE, "--model", t.model]
    t.write("tokens.txt", t.shown(["microqwen", *args]) + "\n" + t.microqwen(*args))


def make_points(t: Tutorial) -> None:
    args = ["trace", "-m", t.model, "-p", FRANCE, "--layers", "0", "--no-lens", *WORKERS,
            "--points", "embed_tokens,input_layernorm,q_proj,rope_q,attn_weights,o_proj,residual"]  # fmt: skip
    blocks = positions(t.microqwen(*args))
    kept = header_and_points(blocks[0]) + [""] + header_and_points(blocks[1]) + ["", "..."]
    t.write("points.txt", t.shown(["microqwen", *args]) + "\n" + "\n".join(kept))


def make_france(t: Tutorial) -> None:
    args = ["trace", "-m", t.model, "-p", FRANCE, "--points", "logits", *WORKERS]
    out = t.microqwen(*args, timed="trace, 5 tokens, every layer, logit lens on")
    last = positions(out)[-1]
    command = t.shown(["microqwen", *args])
    t.write("france-top.txt", command + "\n...\n" + "\n".join([last[0]] + section(last, "top ")))
    t.write("france-attention.txt", "\n".join(section(last, "attention of")))
    t.write("france-lens.txt", "\n".join(section(last, "logit lens")))
    t.microqwen("trace", "-m", t.model, "-p", FRANCE, "--points", "logits", "--no-lens", *WORKERS,
                timed="trace, 5 tokens, every layer, --no-lens")  # fmt: skip


def make_residual(t: Tutorial) -> None:
    path = os.path.join(t.work, "france.json")
    args = ["trace", "-m", t.model, "-p", FRANCE, "--points", "v_proj,residual", "--no-lens", "--json", path, *WORKERS]
    t.microqwen(*args)
    with open(path, encoding="utf-8") as f:
        trace = json.load(f)
    tokens = [p["piece"] for p in trace["positions"]]
    layers = [0, 1, 2, 3, 6, 9, 12, 15, 18, 20, 21, 22, 23]
    head = f"{'after layer':<12}" + "".join(f"{repr(t):>11}" for t in tokens)
    lines = [t.shown(["microqwen", *args]), "",
             "RMS of the residual stream (layers.{i}) at each position", head]  # fmt: skip
    lines += [f"{'embedding':<12}" + "".join(f"{p['residual_rms']['embed_tokens']:>11.2f}" for p in trace["positions"])]
    for i in layers:
        lines.append(f"{i:<12}" + "".join(f"{p['residual_rms'][f'layers.{i}']:>11.2f}" for p in trace["positions"]))
    lines += ["", "RMS of the value vectors (layers.{i}.self_attn.v_proj) at each position",
              f"{'layer':<12}" + head[12:]]
    for i in layers:
        name = f"layers.{i}.self_attn.v_proj"
        lines.append(f"{i:<12}" + "".join(f"{rms(p['points'][name]['values']):>11.2f}" for p in trace["positions"]))
    t.write("france-residual.txt", "\n".join(lines))


def make_code(t: Tutorial) -> dict[str, Any]:
    """The code prompt: attention and lens text, and the JSON to find the head that copies ' height'."""
    path = os.path.join(t.work, "code.json")
    page = os.path.join(t.work, "code.html")
    args = ["trace", "-m", t.model, "-p", CODE, "--points", "logits", "--html", page, "--json", path, *WORKERS]
    out = t.microqwen(*args)
    last = positions(out)[-1]
    t.write("code-top.txt", t.shown(["microqwen", *args]) + "\n...\n" + "\n".join([last[0]] + section(last, "top ")))
    t.write("code-attention.txt", "\n".join(section(last, "attention of")))
    t.write("code-lens.txt", "\n".join(section(last, "logit lens")))
    with open(path, encoding="utf-8") as f:
        trace: dict[str, Any] = json.load(f)
    return {"trace": trace, "page": page}


def make_copy_head(t: Tutorial, code: dict[str, Any]) -> str:
    """The (layer, head) that puts the most weight from the last position on the earlier ' height'."""
    trace = code["trace"]
    last = trace["positions"][-1]
    target = next(p["pos"] for p in trace["positions"] if p["piece"] == " height")
    weights = [(heads[h][target], layer, h) for layer, heads in last["attn"].items() for h in range(len(heads))]
    best = sorted(weights, reverse=True)[:5]
    lines = [f"the heads that read position {target} ' height' most, from the last position {last['pos']} ' *':"]
    lines += [f"  {layer} head {h:>2}: weight {w:.3f}" for w, layer, h in best]
    t.write("code-copy-heads.txt", "\n".join(lines))
    _, layer, head = best[0]
    return f"pos={last['pos']}&layer={layer.split('.')[1]}&head={head}"


def make_screenshot(t: Tutorial, page: str, view: str) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from screenshot_report import screenshot

    screenshot(page, SCREENSHOT, "1400,1500", view)
    t.write("report.txt", f"$ python scripts/screenshot_report.py code.html trace-report.png --view '{view}'")


def make_step(t: Tutorial) -> None:
    args = ["trace", "-m", t.model, "-p", FRANCE, "--step", "--points", "logits", "--no-lens", "--layers", "23",
            "--top-k", "3", *WORKERS]  # fmt: skip
    answers = "2\n\nq\n"
    blocks = positions(t.microqwen(*args, stdin=answers))
    lines = [f"$ printf '2\\n\\nq\\n' | {t.shown(['microqwen', *args])[2:]}", "..."]
    for block in blocks[-3:]:
        lines += [block[0]] + section(block, "top ") + [""]
    t.write("step.txt", "\n".join(lines))


def make_compare(t: Tutorial) -> None:
    ref = os.path.join(t.work, "france-ref.safetensors")
    script = ["scripts/reference_trace.py", "--model", t.model, "-p", FRANCE, "-o", ref]
    started = time.perf_counter()
    subprocess.run([t.refpython, *script], check=True, cwd=ROOT, capture_output=True, timeout=3600)
    t.timings.append(("scripts/reference_trace.py (transformers, float32)", time.perf_counter() - started))
    shown_script = t.shown(["python", *script])
    args = ["trace", "-m", t.model, "--compare", ref, *WORKERS]
    out = t.microqwen(*args, timed="trace --compare, 5 tokens")
    lines = out.strip().split("\n")
    points = [line for line in lines if line.startswith("[")]
    worst = max(points, key=lambda line: float(line.split()[3]))
    text = [shown_script, t.shown(["microqwen", *args])]
    text += points[:6] + ["..."] + lines[len(points) - 2 :] + ["", "the largest difference of all:", worst]
    t.write("compare-ok.txt", "\n".join(text).replace(ref, os.path.basename(ref)))
    for fault in ("interleaved-rope", "scores-times-sqrt-d", "offset-8"):
        out = t.microqwen(*args, "--mutate", fault, expect=1)
        t.write(f"compare-{fault}.txt", around_first_difference(out).replace(ref, os.path.basename(ref)))


def make_timings(t: Tutorial) -> None:
    import platform

    lines = [f"{platform.python_implementation()} {platform.python_version()}, --workers 2, {os.cpu_count()} CPUs:"]
    lines += [f"  {what:<52} {seconds:6.1f} s" for what, seconds in t.timings]
    t.write("timings.txt", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.environ.get("MICROQWEN_REAL_MODEL"),
                        help="the real model directory (default $MICROQWEN_REAL_MODEL)")  # fmt: skip
    parser.add_argument("--refpython", default=os.environ.get("REFPYTHON"),
                        help="a Python with torch and transformers (default $REFPYTHON)")  # fmt: skip
    args = parser.parse_args()
    if not args.model or not args.refpython:
        parser.error("give the model directory (--model or MICROQWEN_REAL_MODEL) and the torch venv's Python "
                     "(--refpython or REFPYTHON)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="microqwen-tutorial-") as work:
        t = Tutorial(args.model, sys.executable, args.refpython, work)
        make_tokens(t)
        make_points(t)
        make_france(t)
        make_residual(t)
        code = make_code(t)
        make_screenshot(t, code["page"], make_copy_head(t, code))
        make_step(t)
        make_compare(t)
        make_timings(t)


if __name__ == "__main__":
    main()
