"""What quantisation does to a model: the same text through a bf16 model and through .gguf files of it.

    pypy3 scripts/quantisation_effects.py --reference MODEL_DIR MODEL.Q8_0.gguf MODEL.Q4_K_M.gguf ... \
        [--out docs/snippets/quantisation]

(or $MICROQWEN_REAL_MODEL_DIR for --reference.) Runs microqwen itself (one process, no workers) on
each model in turn, one token at a time over the same text (`TEXT`: a paragraph and a Python function),
and for each quantised model measures against the reference (the bf16 model):

- bits per weight of the file (all tensor bytes x 8 / all weights; 16 for the bf16 model), its size,
  and the load time (`microqwen.load`, one run, wall clock);
- per layer, how far the residual stream after the layer (`layers.{i}`) moves: |h_q - h| / |h|, the
  mean over the positions; and the attention (`layers.{i}.self_attn.attn_weights`): the total variation
  distance 1/2 sum_j |a_q[j] - a[j]| of each head's weights, the mean over heads and positions;
- the next-token choice (the argmax of the logits) at every position: where it differs from the
  reference's, and the mean KL divergence KL(p || p_q) of the next-token distributions;
- the perplexity of the text, exp(mean over t of -log p(token t+1 | tokens ..t)).

Writes OUT/effects.json (every number) and OUT/summary.txt, OUT/layers.txt, OUT/choices.txt: the
tables the docs page shows, and prints them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import microqwen  # noqa: E402
from microqwen import gguf  # noqa: E402
from microqwen.config import Config  # noqa: E402
from microqwen.inspect_model import FILE_TYPES  # noqa: E402
from microqwen.model import log_softmax  # noqa: E402

TEXT = """The kernel reads each weight once per token, so the speed of a small model on a CPU is set by how fast memory delivers its weights. Fewer bits per weight means less to read.

def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
"""
"""The text every model reads: English prose and Python (the model is a coder), about 80 tokens."""

Run = Dict[str, Any]


def file_figures(path: str) -> Tuple[float, int]:
    """(bits per weight, bytes) of a .gguf file's tensors, or of a bf16 model directory (16 bits)."""
    if not gguf.is_gguf(path):
        size = sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path) if n.endswith(".safetensors"))
        return 16.0, size
    with gguf.GGUFFile(path) as f:
        infos = list(f.tensors.values())
        weights = sum(info.numel for info in infos)
        stored = sum(info.nbytes for info in infos)
    return 8 * stored / weights, os.path.getsize(path)


def run(path: str, ids: Sequence[int]) -> Run:
    """Load the model, then one forward per token of ids: residual streams, attention weights, log-probs."""
    start = time.perf_counter()
    model = microqwen.load(path, workers=0, prompt_cache=False)
    load_seconds = time.perf_counter() - start
    layers = model.config.num_hidden_layers
    residual: List[List[List[float]]] = [[] for _ in range(layers)]  # [layer][pos][896]
    attention: List[List[Tuple[Tuple[int, ...], List[float]]]] = [[] for _ in range(layers)]  # [layer][pos]
    names = {f"layers.{i}": i for i in range(layers)}
    attn_names = {f"layers.{i}.self_attn.attn_weights": i for i in range(layers)}

    def hook(point: str, pos: int, values: Sequence[float], shape: Tuple[int, ...]) -> Optional[Sequence[float]]:
        if point in names:
            residual[names[point]].append(list(values))
        elif point in attn_names:
            attention[attn_names[point]].append((shape, list(values)))
        return None

    log_probs = []
    with model:
        for pos, token in enumerate(ids):
            log_probs.append(log_softmax(model.forward(token, pos, hook)))
    bits, size = file_figures(path)
    return {"path": path, "load_seconds": load_seconds, "bits_per_weight": bits, "bytes": size,
            "residual": residual, "attention": attention, "log_probs": log_probs}  # fmt: skip


def distance(a: Sequence[float], b: Sequence[float]) -> float:
    """|a - b| / |b|."""
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b))) / math.sqrt(sum(y * y for y in b))


def attention_distance(a: Tuple[Tuple[int, ...], List[float]], b: Tuple[Tuple[int, ...], List[float]]) -> float:
    """The mean over heads of the total variation distance between two heads' attention weights."""
    (heads, visible), values = a
    tv = [0.5 * sum(abs(x - y) for x, y in zip(values[h * visible : (h + 1) * visible], b[1][h * visible : (h + 1) * visible]))
          for h in range(heads)]  # fmt: skip
    return sum(tv) / heads


def argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def perplexity(log_probs: Sequence[Sequence[float]], ids: Sequence[int]) -> float:
    """exp(mean -log p(ids[t+1] | ids[..t]))."""
    nll = [-log_probs[t][ids[t + 1]] for t in range(len(ids) - 1)]
    return math.exp(sum(nll) / len(nll))


def kl(p_log: Sequence[float], q_log: Sequence[float]) -> float:
    """KL(p || q) from log-probabilities."""
    return sum(math.exp(lp) * (lp - lq) for lp, lq in zip(p_log, q_log) if lp > -60)


def compare(ref: Run, other: Run, ids: Sequence[int]) -> Dict[str, Any]:
    layers = len(ref["residual"])
    positions = len(ids)
    choices_ref = [argmax(lp) for lp in ref["log_probs"]]
    choices = [argmax(lp) for lp in other["log_probs"]]
    return {
        "residual_distance": [sum(distance(a, b) for a, b in zip(other["residual"][i], ref["residual"][i])) / positions
                              for i in range(layers)],
        "attention_distance": [sum(attention_distance(a, b) for a, b in zip(other["attention"][i], ref["attention"][i]))
                               / positions for i in range(layers)],
        "changed_positions": [t for t in range(positions) if choices[t] != choices_ref[t]],
        "choices": choices,
        "mean_kl": sum(kl(p, q) for p, q in zip(ref["log_probs"], other["log_probs"])) / positions,
    }  # fmt: skip


def label(path: str) -> str:
    """The model's short name: its file type (`Q8_0`, `Q4_K_M`: llama.cpp's name for the mix) or `bf16` for a directory."""
    if not gguf.is_gguf(path):
        return "bf16"
    with gguf.GGUFFile(path) as f:
        file_type = f.metadata.get("general.file_type")
    name = FILE_TYPES.get(file_type, "") if isinstance(file_type, int) else ""
    return name[len("MOSTLY_") :] if name.startswith("MOSTLY_") else os.path.basename(path)


def tables(results: Dict[str, Any], tokenizer: microqwen.Tokenizer, ids: Sequence[int]) -> Dict[str, str]:
    models = results["models"]
    summary = ["| model | bits/weight | file | load | perplexity | next token changed | mean KL |", "|---|---|---|---|---|---|---|"]
    for m in models:
        c = m.get("comparison")
        changed = "-" if c is None else f"{len(c['changed_positions'])} of {len(ids)}"
        mean_kl = "-" if c is None else f"{c['mean_kl']:.4f}"
        summary.append(f"| {m['label']} | {m['bits_per_weight']:.2f} | {m['bytes'] / 2**20:.0f} MiB | {m['load_seconds']:.1f} s "
                       f"| {m['perplexity']:.3f} | {changed} | {mean_kl} |")  # fmt: skip
    quantised = [m for m in models if "comparison" in m]
    head = "| layer | " + " | ".join(f"{m['label']} residual | {m['label']} attention" for m in quantised) + " |"
    layers = [head, "|---|" + "---|---|" * len(quantised)]
    for i in range(len(quantised[0]["comparison"]["residual_distance"]) if quantised else 0):
        cells = [f"{m['comparison']['residual_distance'][i]:.4f} | {m['comparison']['attention_distance'][i]:.4f}" for m in quantised]
        layers.append(f"| {i} | " + " | ".join(cells) + " |")
    reference = models[0]
    choices = []
    for m in quantised:
        for t in m["comparison"]["changed_positions"]:
            context = tokenizer.decode(list(ids[max(0, t - 6) : t + 1]))
            ours, theirs = tokenizer.decode([m["comparison"]["choices"][t]]), tokenizer.decode([reference["choices"][t]])
            choices.append(f"{m['label']:>8} at {t:3d}: after {context!r}: {ours!r} instead of {theirs!r}")
    return {"summary.txt": "\n".join(summary), "layers.txt": "\n".join(layers), "choices.txt": "\n".join(choices) or "(none)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help=".gguf files (or model directories) to compare with the reference")
    parser.add_argument("--reference", default=os.environ.get("MICROQWEN_REAL_MODEL_DIR"), help="the bf16 model directory")
    parser.add_argument("--out", default=os.path.join("docs", "snippets", "quantisation"))
    args = parser.parse_args()
    if not args.reference:
        parser.error("give --reference or set $MICROQWEN_REAL_MODEL_DIR")
    has_tokenizer = microqwen.Tokenizer.found_in(args.reference)
    tokenizer = microqwen.Tokenizer.from_model(args.reference if has_tokenizer else args.models[0])
    limit = Config.from_model(args.reference).max_position_embeddings
    ids = tokenizer.encode(TEXT)[:limit]  # all of it for a real model; a tiny test model reads its first 128
    ref = run(args.reference, ids)
    models = [{"label": "bf16", **_figures(ref, ids)}]
    for path in args.models:
        print(f"{label(path)}: running", file=sys.stderr, flush=True)
        other = run(path, ids)
        models.append({"label": label(path), **_figures(other, ids), "comparison": compare(ref, other, ids)})
    results = {"text": TEXT, "tokens": len(ids), "interpreter": sys.implementation.name, "models": models}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "effects.json"), "w") as f:
        json.dump(results, f, indent=1)
    for name, table in tables(results, tokenizer, ids).items():
        with open(os.path.join(args.out, name), "w") as f:
            f.write(table + "\n")
        print(table + "\n")


def _figures(result: Run, ids: Sequence[int]) -> Dict[str, Any]:
    return {"path": os.path.basename(os.path.normpath(result["path"])), "bits_per_weight": result["bits_per_weight"],
            "bytes": result["bytes"], "load_seconds": result["load_seconds"],
            "perplexity": perplexity(result["log_probs"], ids), "choices": [argmax(lp) for lp in result["log_probs"]]}  # fmt: skip


if __name__ == "__main__":
    main()
