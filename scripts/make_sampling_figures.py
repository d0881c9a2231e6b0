"""Draw the pictures of docs/concepts/sampling.md: SVG bar charts of one constructed distribution
before and after each sampling step, computed by microqwen.sampling's own functions.

    python scripts/make_sampling_figures.py          # writes docs/images/sampling-*.svg

The example is made up (not the model's output): a 14-token vocabulary and logits for the word after
"The cat sat on the", whose tokens The, cat, sat, on and the are the ids seen so far. Pure Python: the
SVG is written as text, with the same bytes on every run.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from microqwen import model  # noqa: E402
from microqwen.sampling import (  # noqa: E402
    Sampler,
    SamplingParams,
    apply_repetition_penalty,
    min_p_filter,
    top_k_ids,
    top_p_filter,
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "images")

TOKENS = ['" mat"', '" cat"', '" floor"', '" sofa"', '" bed"', '" table"', '" chair"', '" roof"', '" grass"',
          '" the"', '" on"', '" moon"', '" sat"', '"The"']
LOGITS = [6.0, 5.7, 5.3, 4.6, 4.2, 3.9, 3.4, 3.0, 2.2, 2.0, 1.0, 0.5, 0.0, -1.0]
PROMPT = [13, 1, 12, 10, 9]  # The cat sat on the
SETTINGS = SamplingParams(temperature=0.7, top_k=6, top_p=0.9, min_p=0.15, repetition_penalty=1.3)

KEPT, BEFORE, REMOVED, INK, GRID, MARK = "#3f51b5", "#c5cae9", "#9e9e9e", "#212121", "#e0e0e0", "#d32f2f"
ROW, LABEL_WIDTH, BAR_WIDTH, TOP, SIDE = 20, 96, 400, 46, 12


def probabilities(ids: Sequence[int], weights: Sequence[float]) -> dict[int, float]:
    total = math.fsum(weights)
    return {token: weight / total for token, weight in zip(ids, weights)}


def softmax(scores: Sequence[float], temperature: float = 1.0) -> dict[int, float]:
    return dict(enumerate(model.softmax(scores, temperature)))


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def chart(title: str, before: dict[int, float] | None, after: dict[int, float], x: float = 0.0,
          notes: dict[int, str] | None = None, threshold: tuple[float, str] | None = None, width: int = BAR_WIDTH) -> str:
    """One panel: a row per token (fixed order), a pale bar for `before`, a solid bar for `after`;
    a token missing from `after` is removed (grey label). The axis runs to the next tenth above the top bar."""
    scale = math.ceil(max(list(after.values()) + list((before or {}).values())) * 10) / 10
    parts = [f'<text x="{x + SIDE}" y="20" font-size="14" font-weight="bold" fill="{INK}">{escape(title)}</text>']
    left = x + SIDE + LABEL_WIDTH
    for tick in range(int(scale * 10 + 1e-9) + 1):
        gx = left + width * tick / 10 / scale
        parts.append(f'<line x1="{gx:.1f}" y1="{TOP - 6}" x2="{gx:.1f}" y2="{TOP + ROW * len(TOKENS)}" '
                     f'stroke="{GRID}"/>')
        parts.append(f'<text x="{gx:.1f}" y="{TOP - 10}" font-size="10" text-anchor="middle" fill="{INK}">'
                     f'{tick / 10:.1f}</text>')
    for row, token in enumerate(TOKENS):
        y, t = TOP + row * ROW, token_id(token)
        was, now = (before or {}).get(t), after.get(t)
        note = " " + notes[t] if notes and t in notes else ""
        parts.append(f'<text x="{left - 6}" y="{y + 14}" font-size="12" text-anchor="end" font-family="monospace" '
                     f'fill="{INK if now is not None else REMOVED}">{escape(token)}</text>')
        if was is not None:
            parts.append(bar(left, y + 2, width * was / scale, BEFORE))
        if now is not None:
            parts.append(bar(left, y + 6, width * now / scale, KEPT, height=ROW - 10))
            parts.append(value(left + width * now / scale, y, f"{now:.3f}{note}", INK))
        elif was is not None:
            parts.append(value(left + width * was / scale, y, f"removed{note}", REMOVED))
    if threshold is not None:
        level, label = threshold
        tx = left + width * level / scale
        parts.append(f'<line x1="{tx:.1f}" y1="{TOP - 4}" x2="{tx:.1f}" y2="{TOP + ROW * len(TOKENS)}" '
                     f'stroke="{MARK}" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{tx + 4:.1f}" y="{TOP + ROW * len(TOKENS) + 14}" font-size="10" fill="{MARK}">'
                     f'{escape(label)}</text>')
    return "\n".join(parts)


def value(x: float, y: float, text: str, colour: str) -> str:
    return f'<text x="{x + 4:.1f}" y="{y + 14}" font-size="10" fill="{colour}">{escape(text)}</text>'


def bar(x: float, y: float, length: float, colour: str, height: int = ROW - 4) -> str:
    return f'<rect x="{x:.1f}" y="{y}" width="{length:.1f}" height="{height}" fill="{colour}"/>'


def token_id(token: str) -> int:
    return TOKENS.index(token)


def legend(x: float, y: float, before: str, after: str) -> str:
    return (f'<rect x="{x}" y="{y}" width="12" height="10" fill="{BEFORE}"/>'
            f'<text x="{x + 16}" y="{y + 9}" font-size="11" fill="{INK}">{escape(before)}</text>'
            f'<rect x="{x + 190}" y="{y}" width="12" height="10" fill="{KEPT}"/>'
            f'<text x="{x + 206}" y="{y + 9}" font-size="11" fill="{INK}">{escape(after)}</text>')


def svg(panels: list[str], width: float, legend_text: tuple[str, str] | None) -> str:
    height = TOP + ROW * len(TOKENS) + (44 if legend_text else 24)
    body = "\n".join(panels)
    if legend_text:
        body += "\n" + legend(SIDE + LABEL_WIDTH, height - 18, *legend_text)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
            f'viewBox="0 0 {width:.0f} {height}" font-family="sans-serif">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n')


def write(name: str, text: str) -> None:
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    print(f"wrote docs/images/{name} ({len(text.encode()):,} bytes)")


PANEL = SIDE + LABEL_WIDTH + BAR_WIDTH + 90


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    p = SETTINGS
    scores = apply_repetition_penalty(LOGITS, PROMPT, p.repetition_penalty)
    plain, penalised, scaled = softmax(LOGITS), softmax(scores), softmax(scores, p.temperature)
    ids = top_k_ids(scores, p.top_k)
    weights = model.softmax([scores[token] for token in ids], p.temperature)
    after_k = probabilities(ids, weights)
    ids, weights = top_p_filter(ids, weights, p.top_p)
    after_p = probabilities(ids, weights)
    ids, weights = min_p_filter(ids, weights, p.min_p)
    after_min_p = probabilities(ids, weights)
    assert sorted(after_min_p.items()) == sorted(Sampler(p).distribution(LOGITS, PROMPT))

    write("sampling-softmax.svg", svg([chart("softmax of the logits", None, plain)], PANEL, None))
    write("sampling-penalty.svg", svg([chart(f"repetition penalty {p.repetition_penalty} on The, cat, sat, on, the",
                                             plain, penalised)], PANEL, ("before", "after")))
    small = 200  # three panels side by side
    step = SIDE + LABEL_WIDTH + small + 50
    panels = [chart(f"T = {t}", None, softmax(scores, t), x=i * step, width=small)
              for i, t in enumerate((0.5, 1.0, 2.0))]
    write("sampling-temperature.svg", svg(panels, 3 * step, None))
    write("sampling-top-k.svg", svg([chart(f"top-k {p.top_k} (after T = {p.temperature})", scaled, after_k)],
                                    PANEL, (f"T = {p.temperature}", f"top-k {p.top_k}, renormalised")))
    ranked_mass, notes = 0.0, {}
    for token, q in sorted(after_k.items(), key=lambda item: -item[1]):
        notes[token] = f"(mass before {ranked_mass:.2f})"
        ranked_mass += q
    write("sampling-top-p.svg", svg([chart(f"top-p {p.top_p}: keep while the mass before a token is < {p.top_p}",
                                           after_k, after_p, notes=notes)],
                                    PANEL + 110, (f"top-k {p.top_k}", f"top-p {p.top_p}, renormalised")))
    top = max(after_p.values())
    write("sampling-min-p.svg", svg([chart(f"min-p {p.min_p}: keep p >= {p.min_p} x the top probability",
                                           after_p, after_min_p,
                                           threshold=(p.min_p * top, f"{p.min_p} x {top:.3f} = {p.min_p * top:.3f}"))],
                                    PANEL, (f"top-p {p.top_p}", f"min-p {p.min_p}: the distribution sampled")))


if __name__ == "__main__":
    main()
