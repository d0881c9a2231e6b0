"""Draw the explanatory figures of the docs site as SVG, in pure Python (no plotting library).

    python scripts/make_doc_figures.py            # writes docs/images/{data-flow,rope,gqa}.svg

- data-flow.svg: the straight line from files and prompt to text on the screen;
- rope.svg: how fast each pair of dimensions turns (angles from microqwen's own RotaryEmbedding,
  with Qwen2.5's rope_theta 1e6 and head_dim 64), and which dimensions are paired;
- gqa.svg: 14 query heads sharing 2 key/value heads.

The kernel-ladder chart is drawn by scripts/bench_ladder.py from measured numbers.
"""

from __future__ import annotations

import os
import sys
from typing import List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from microqwen.model import RotaryEmbedding  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "images")
FONT = "font-family='Helvetica, Arial, sans-serif'"
INK, BLUE, ORANGE, GREY, LIGHT = "#222", "#3f51b5", "#e67e22", "#888", "#e8eaf6"


class Svg:
    """A tiny SVG writer: shapes appended as strings, saved with a white background."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.parts: List[str] = [f"<rect width='{width}' height='{height}' fill='white'/>"]

    def text(self, x: float, y: float, content: str, size: int = 13, anchor: str = "middle", color: str = INK,
             weight: str = "normal") -> None:  # fmt: skip
        content = content.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        self.parts.append(f"<text x='{x:.1f}' y='{y:.1f}' {FONT} font-size='{size}' text-anchor='{anchor}' "
                          f"fill='{color}' font-weight='{weight}'>{content}</text>")  # fmt: skip

    def box(self, x: float, y: float, w: float, h: float, label: str, fill: str = LIGHT, size: int = 13) -> None:
        self.parts.append(f"<rect x='{x}' y='{y}' width='{w}' height='{h}' rx='6' fill='{fill}' stroke='{BLUE}'/>")
        for i, line in enumerate(label.split("\n")):
            offset = (i - (label.count("\n")) / 2) * (size + 3)
            self.text(x + w / 2, y + h / 2 + size / 3 + offset, line, size)

    def line(self, x1: float, y1: float, x2: float, y2: float, color: str = GREY, width: float = 1.5,
             arrow: bool = False) -> None:  # fmt: skip
        end = " marker-end='url(#arrow)'" if arrow else ""
        self.parts.append(f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' stroke='{color}' "
                          f"stroke-width='{width}'{end}/>")  # fmt: skip

    def circle(self, x: float, y: float, r: float, fill: str = "none", stroke: str = GREY) -> None:
        self.parts.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{r:.1f}' fill='{fill}' stroke='{stroke}'/>")

    def save(self, name: str) -> None:
        marker = ("<defs><marker id='arrow' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='7' "
                  "markerHeight='7' orient='auto'><path d='M0,0 L10,5 L0,10 z' fill='#888'/></marker></defs>")  # fmt: skip
        body = "\n".join(self.parts)
        svg = (f"<svg xmlns='http://www.w3.org/2000/svg' width='{self.width}' height='{self.height}' "
               f"viewBox='0 0 {self.width} {self.height}'>\n{marker}\n{body}\n</svg>\n")  # fmt: skip
        with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
            f.write(svg)
        print("wrote", os.path.join("docs", "images", name))


def data_flow() -> None:
    svg = Svg(900, 430)
    svg.text(450, 24, "One straight line: from files and a prompt to text on the screen", 15, weight="bold")
    # files -> weights
    svg.box(20, 50, 150, 50, "model directory\nor Hub id")
    svg.box(230, 50, 170, 50, "config.json\n(jsonparse, config)")
    svg.box(460, 50, 190, 50, "model.safetensors\n(safetensors, bf16)")
    svg.box(710, 50, 170, 50, "weights: main process\nand workers")
    for x1, x2 in ((170, 228), (400, 458), (650, 708)):
        svg.line(x1, 75, x2, 75, arrow=True)
    # prompt -> ids
    svg.box(20, 150, 150, 50, "prompt text")
    svg.box(230, 150, 170, 50, "chat template\n(chat)")
    svg.box(460, 150, 190, 50, "byte-level BPE\n(tokenizer)")
    svg.box(710, 150, 170, 50, "token ids\n[151644, 872, ...]")
    for x1, x2 in ((170, 228), (400, 458), (650, 708)):
        svg.line(x1, 175, x2, 175, arrow=True)
    # the model
    svg.box(60, 250, 780, 70, "", fill="#f5f5f5")
    svg.text(450, 268, "model.forward(token, pos)   (model, kernels, workers)", 13, weight="bold")
    steps = ["embed\n[896]", "24 x [RMSNorm, attention\n+ KV cache, RMSNorm, MLP]", "RMSNorm", "output head\n[151936]"]
    xs = [75, 215, 525, 655]
    widths = [110, 280, 100, 170]
    for x, w, label in zip(xs, widths, steps):
        svg.box(x, 276, w, 38, label, fill="white", size=12)
    for (x1, w1), x2 in zip(zip(xs, widths), xs[1:]):
        svg.line(x1 + w1, 295, x2 - 2, 295, arrow=True)
    svg.line(795, 200, 795, 248, arrow=True)
    svg.line(795, 100, 795, 148, color="#bbb")
    svg.text(805, 128, "weights", 11, "start", GREY)
    # logits -> text
    svg.box(60, 360, 190, 50, "logits -> sampler\n(sampling)")
    svg.box(330, 360, 190, 50, "next id -> stream\ndecoder (tokenizer)")
    svg.box(600, 360, 240, 50, "text on stdout,\ntimings on stderr (generate)")
    svg.line(155, 320, 155, 358, arrow=True)
    svg.line(250, 385, 328, 385, arrow=True)
    svg.line(520, 385, 598, 385, arrow=True)
    svg.line(425, 360, 425, 336, color=ORANGE, arrow=True)
    svg.text(432, 344, "next token, position + 1", 11, "start", ORANGE)
    svg.save("data-flow.svg")


def rope() -> None:
    """Left: the angle each pair has turned through by position p. Right: the pairing of dimensions."""
    head_dim, theta = 64, 1_000_000.0
    rotary = RotaryEmbedding(head_dim, theta)
    svg = Svg(920, 400)
    svg.text(460, 22, "RoPE with rope_theta 1e6, head_dim 64: pair i turns by p x theta^(-2i/64) radians", 14,
             weight="bold")  # fmt: skip
    pairs = [0, 4, 8, 16, 31]
    colors = [BLUE, ORANGE, "#2e7d32", "#8e24aa", GREY]
    cx, cy, radius = 90, 90, 26
    for row, (i, color) in enumerate(zip(pairs, colors)):
        y = cy + row * 60
        svg.text(cx + 20, y + 3, f"pair {i}", 12, "end")
        svg.text(cx + 20, y + 17, f"dims {i}, {i + 32}", 10, "end", GREY)
        for col, pos in enumerate([0, 1, 2, 4, 8, 100, 10_000]):
            x = cx + 70 + col * 70
            cos, sin = rotary.tables(pos)
            svg.circle(x, y, radius * 0.8, stroke="#ccc")
            svg.line(x, y, x + radius * 0.8 * cos[i], y - radius * 0.8 * sin[i], color=color, width=2.5)
            if row == 0:
                svg.text(x, cy - 34, f"p = {pos}", 11, color=GREY)
    svg.text(330, 385, "fast pairs tell neighbours apart; slow pairs keep turning slowly over long distances", 11,
             color=GREY)  # fmt: skip
    # pairing picture
    left = 640
    svg.text(left + 140, 65, "which dimensions form a pair", 13, weight="bold")
    for k, (name, pairing) in enumerate((("Qwen2 (rotate half): i with i + 32", "half"),
                                         ("original paper, llama2.c: 2i with 2i + 1", "adjacent"))):  # fmt: skip
        y = 100 + k * 120
        svg.text(left + 140, y, name, 12, color=BLUE if k == 0 else ORANGE)
        cells = 16  # a 16-wide head stands in for 64
        for d in range(cells):
            svg.parts.append(f"<rect x='{left + d * 17}' y='{y + 10}' width='15' height='15' fill='{LIGHT}' "
                             f"stroke='{BLUE}'/>")  # fmt: skip
        for j in range(3):
            a, b = (j, j + cells // 2) if pairing == "half" else (2 * j, 2 * j + 1)
            xa, xb = left + a * 17 + 7.5, left + b * 17 + 7.5
            mid = (xa + xb) / 2
            lift = 18 + 6 * j if pairing == "half" else 12
            svg.parts.append(f"<path d='M{xa},{y + 27} Q{mid},{y + 27 + 2 * lift} {xb},{y + 27}' fill='none' "
                             f"stroke='{BLUE if k == 0 else ORANGE}' stroke-width='1.5'/>")  # fmt: skip
    svg.text(left + 140, 345, "the weights were trained with the first;", 11, color=GREY)
    svg.text(left + 140, 360, "the second is a bug (the C project's)", 11, color=GREY)
    svg.save("rope.svg")


def gqa() -> None:
    svg = Svg(900, 230)
    svg.text(450, 22, "Grouped-query attention in Qwen2.5-0.5B: 14 query heads, 2 key/value heads, n_rep = 7", 14,
             weight="bold")  # fmt: skip
    for j in range(14):
        x = 30 + j * 60 + (20 if j >= 7 else 0)
        svg.box(x, 50, 50, 36, f"q {j}", fill=LIGHT if j < 7 else "#fff3e0", size=12)
        g = j // 7
        gx = 245 + g * 420
        svg.line(x + 25, 86, gx + 60, 150, color=BLUE if g == 0 else ORANGE, width=1.2)
    for g in range(2):
        gx = 245 + g * 420
        svg.box(gx, 150, 120, 40, f"k {g}, v {g}", fill=LIGHT if g == 0 else "#fff3e0")
    svg.text(450, 215, "query head j reads key/value head g = j // 7  (the KV cache holds 2 heads, not 14)", 12,
             color=GREY)  # fmt: skip
    svg.save("gqa.svg")


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    data_flow()
    rope()
    gqa()


if __name__ == "__main__":
    main()
