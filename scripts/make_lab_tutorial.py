"""Regenerate every output quoted in docs/experiments.md and docs/mutations.md, and their screenshots.

    pypy3 scripts/make_lab_tutorial.py --model DIR                  # about an hour on 2 busy cores
    pypy3 scripts/make_lab_tutorial.py --model DIR --only patching mutations

Runs the lab's commands (with this interpreter and `--workers 1`: use PyPy, CPython is ~10x slower)
on the model directory DIR, the model the pages name, and writes

    docs/snippets/lab/*.txt           the experiments: induction heads, patching, attribution, ablation,
                                      steering, --target, perplexity, the precision lab
    docs/snippets/mutations/*.txt     every planted bug: trace --compare against the unmutated model,
                                      and the text it generates
    docs/images/lab-*.png             the HTML reports in headless Chromium (scripts/screenshot_report.py)

The reports and JSON files stay in a temporary directory, which is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_trace_tutorial import ROOT, Tutorial  # noqa: E402
from screenshot_report import screenshot  # noqa: E402

LAB = os.path.join(ROOT, "docs", "snippets", "lab")
MUTATIONS = os.path.join(ROOT, "docs", "snippets", "mutations")
IMAGES = os.path.join(ROOT, "docs", "images")
FRANCE, ITALY = "The capital of France is", "The capital of Italy is"
DOGS = "I think that dogs are"
WORKERS = ["--workers", "1"]


def image(t: Tutorial, page: str, name: str, size: str) -> None:
    screenshot(page, os.path.join(IMAGES, name), size)
    print(f"wrote docs/images/{name}", file=sys.stderr)


def lines_between(text: str, first: str, last: str | None = None) -> str:
    """The lines from the one that starts with `first` up to (not including) the one that starts with `last`."""
    lines = text.rstrip("\n").split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    end = next((i for i, line in enumerate(lines) if i > start and last and line.startswith(last)), len(lines))
    return "\n".join(lines[start:end])


def run(t: Tutorial, name: str, args: list[str], timed: str, trim: Callable[[str], str] = lambda s: s,
        expect: int = 0) -> str:  # fmt: skip
    """Run `microqwen ARGS`, write the command and its (trimmed) output as snippet `name`; return the output."""
    out = t.microqwen(*args, *WORKERS, timed=timed, expect=expect)
    t.write(name, t.shown(["microqwen", *args]) + "\n" + trim(out))
    return out


# ------------------------------------------------------------------ the experiments


def make_induction(t: Tutorial) -> None:
    page = os.path.join(t.work, "induction.html")
    args = ["induction", "-m", t.model, "--length", "20", "--seed", "1", "--ablate", "10", "--mode", "mean", "--html", page]
    run(t, "induction.txt", args, "induction: score 336 heads, ablate 10 + 10",
              lambda s: lines_between(s, "induction scores", "  layer") + "\n...\n" + lines_between(s, "loss per token"))
    image(t, page, "lab-induction.png", "1100,1150")


def make_patching(t: Tutorial) -> None:
    page = os.path.join(t.work, "patch.html")
    args = ["patch", "-m", t.model, "--clean", FRANCE, "--corrupted", ITALY, "--html", page]
    run(t, "patch.txt", args, "patch: residual stream, 25 x 5 cells")
    image(t, page, "lab-patching.png", "900,1050")
    page = os.path.join(t.work, "patch-heads.html")
    args = ["patch", "-m", t.model, "--clean", FRANCE, "--corrupted", ITALY, "--heads", "--html", page]
    run(t, "patch-heads.txt", args, "patch --heads: 336 heads")
    image(t, page, "lab-patching-heads.png", "1100,1050")


def make_attribution(t: Tutorial) -> str:
    """The DLA table; returns the head that writes ' Paris' most."""
    page, data = os.path.join(t.work, "dla.html"), os.path.join(t.work, "dla.json")
    args = ["attribute", "-m", t.model, "-p", FRANCE, "--top", "12", "--html", page, "--json", data]
    run(t, "attribute.txt", args, "attribute: direct logit attribution")
    image(t, page, "lab-attribution.png", "1100,1200")
    with open(data, encoding="utf-8") as f:
        contributions: dict[str, float] = json.load(f)["contributions"]
    return max((name for name in contributions if ".head." in name), key=contributions.__getitem__)


def make_ablation(t: Tutorial, head: str) -> None:
    run(t, "ablate.txt", ["ablate", "-m", t.model, "-p", FRANCE, head], f"ablate {head}")
    page = os.path.join(t.work, "sweep.html")
    args = ["ablate", "-m", t.model, "-p", FRANCE, "--sweep", "--positions", "4", "--top", "10", "--html", page]
    run(t, "sweep.txt", args, "ablate --sweep at the last position: 336 heads",
        lambda s: lines_between(s, "every head", "KL(clean"))
    image(t, page, "lab-sweep.png", "1100,1250")


def make_steering(t: Tutorial) -> None:
    for name, plus, minus in (("steer-hate.txt", "I hate", "I love"), ("steer-love.txt", "I love", "I hate")):
        args = ["steer", "-m", t.model, "-p", DOGS, "--layer", "4", "--plus", plus, "--minus", minus, "-n", "16"]
        run(t, name, args, f"steer {plus!r} - {minus!r}: 2 x 16 tokens")


def make_target(t: Tutorial) -> None:
    args = ["trace", "-m", t.model, "-p", FRANCE, "--target", " Paris, the city of light", "--points", "logits",
            "--layers", "0,6,12,16-23"]  # fmt: skip
    run(t, "target.txt", args, "trace --target: 5 + 6 tokens, 13 layers", lambda s: lines_between(s, "target:"))


def make_perplexity(t: Tutorial) -> None:
    args = ["perplexity", "docs/concepts/rmsnorm.md", "-m", t.model, "-c", "128", "--chunks", "2"]
    run(t, "perplexity.txt", args, "perplexity: 2 chunks of 128")
    run(t, "perplexity-mutated.txt", args + ["--mutate", "rope-theta-1e4"], "perplexity --mutate rope-theta-1e4")


def make_precision(t: Tutorial) -> None:
    for dtype in ("float32", "bfloat16"):
        args = ["precision", "-m", t.model, "-p", FRANCE, "--dtype", dtype, "-n", "8"]
        run(t, f"precision-{dtype}.txt", args, f"precision --dtype {dtype}")


# ------------------------------------------------------------------ the planted bugs


def first_difference_and_growth(out: str) -> str:
    """The compare lines up to two after the first [DIFF], then the summary and the growth line."""
    lines = out.rstrip("\n").split("\n")
    points = [line for line in lines if line.startswith("[")]
    first = next((i for i, line in enumerate(points) if line.startswith("[DIFF]")), len(points))
    kept = points[max(0, first - 2) : first + 3]
    return "\n".join((["..."] if first > 2 else []) + kept + ["..."] + lines[len(points) :])


def make_mutations(t: Tutorial) -> None:
    sys.path.insert(0, ROOT)
    from microqwen.lab.mutations import MUTATIONS

    for name, mutation in MUTATIONS.items():
        args = ["trace", "-m", t.model, "-p", FRANCE, "--mutate", name, "--compare"]
        if mutation.prefill_only:
            run(t, f"{name}-token-by-token.txt", args, f"trace --compare, {name}, one token at a time",
                first_difference_and_growth)  # fmt: skip
            args.append("--prefill")
        run(t, f"{name}.txt", args, f"trace --compare, {name}", first_difference_and_growth, expect=1)
        args = ["generate", "-m", t.model, "-p", FRANCE, "-n", "12", "--mutate", name]
        run(t, f"{name}-generate.txt", args, f"generate -n 12, {name}")
    run(t, "generate.txt", ["generate", "-m", t.model, "-p", FRANCE, "-n", "12"], "generate -n 12, no mutation")


def make_timings(t: Tutorial, snippets: str) -> None:
    """Add this run's timings to `timings.txt` there (a rerun of one experiment replaces its own lines)."""
    import platform

    path = os.path.join(snippets, "timings.txt")
    kept: dict[str, str] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            kept = {line[:54].strip(): line for line in f.read().split("\n")[1:] if line.strip()}
    kept.update({what: f"  {what:<52} {seconds:7.1f} s" for what, seconds in t.timings})
    head = (f"{platform.python_implementation()} {platform.python_version()}, {' '.join(WORKERS)}, "
            f"{os.cpu_count()} CPUs (shared with other work while it ran):")  # fmt: skip
    t.snippets = snippets
    t.write("timings.txt", "\n".join([head, *kept.values()]))


EXPERIMENTS = ["induction", "patching", "attribution", "steering", "target", "perplexity", "precision"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="the real model directory")
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS + ["mutations"],
                        help="make only these experiments' outputs (attribution includes the ablations), or mutations")
    args = parser.parse_args()
    only = args.only or EXPERIMENTS + ["mutations"]
    chosen = [name for name in EXPERIMENTS if name in only]
    with tempfile.TemporaryDirectory(prefix="microqwen-lab-") as work:
        t = Tutorial(args.model, sys.executable, "", work, LAB)
        steps: dict[str, Callable[[], None]] = {
            "induction": lambda: make_induction(t), "patching": lambda: make_patching(t),
            "attribution": lambda: make_ablation(t, make_attribution(t)), "steering": lambda: make_steering(t),
            "target": lambda: make_target(t), "perplexity": lambda: make_perplexity(t),
            "precision": lambda: make_precision(t),
        }  # fmt: skip
        for name in chosen:
            steps[name]()
        if chosen:
            make_timings(t, LAB)
        if "mutations" in only:
            t = Tutorial(args.model, sys.executable, "", work, MUTATIONS)
            make_mutations(t)
            make_timings(t, MUTATIONS)


if __name__ == "__main__":
    main()

