"""The trace as one HTML page: tokens, attention heatmaps, residual norms, the logit lens.

`microqwen trace --html report.html` writes a single self-contained file: the data of the trace
as JSON inside a `<script type="application/json">` element, and a small inline script and style
sheet that draw it. There is no external asset (no font, no library, no URL), so the page works
offline, opened straight from disk (`file://`). It shows

- the **token strip**: the tokens in order; click one to select its position (or open the page as
  `report.html#pos=3&layer=5&head=2` to start there);
- the **top next tokens** of the selected position (softmax of its logits);
- the **logit lens**: a table with one row per residual stream (the embedding, then each layer) and
  one column per position, each cell the top token of that stream decoded by the final norm and the
  output head, shaded by its probability; the last row is the model's actual prediction;
- the **attention** of the chosen layer: one small heatmap per head (row = query position, column =
  the earlier position it reads, darker = more weight) and the selected head enlarged, with the
  selected position's row marked;
- the **residual stream RMS** per layer: a line per position (log scale), the selected one highlighted.

The data, for T positions, H heads and the chosen layers (`report_data`):

    tokens        [T]  {"id", "text"}
    top           [T]  [{"id", "text", "p"}]             the top-k next tokens
    layers             the chosen layers; attn[str(layer)] is [H][T] rows, row p of length p + 1
    lens          [T]  [{"point", "text", "p", "rank", "final_p"}]   embedding, then each chosen layer
    residual_rms  [T]  [1 + num_layers]                  RMS of embed_tokens, then of each layers.{i}

```python
>>> "<script" in render_html({"title": "demo", "tokens": []}) and "http" not in render_html({"title": "x"})
True

```

The lab's experiments (`microqwen.lab`) write a page of the same kind with `write_lab_html`: a list of
sections, each a **heatmap** (rows x columns of numbers, e.g. activation patching's layers x positions
or the ablation sweep's layers x heads; blue for positive, red for negative), a **table** (e.g. the
ranked heads, or direct logit attribution) or **text**:

    {"kind": "heatmap", "title", "hint", "rows": [R], "columns": [C], "values": [R][C], "diverging": bool}
    {"kind": "table", "title", "hint", "header": [C], "rows": [R][C]}
    {"kind": "text", "title", "hint", "lines": [...]}
"""

from __future__ import annotations

import html
import json
from typing import Any, Sequence

from .errors import UsageError
from .trace import Pieces, Position, token_label

WEIGHT_DIGITS = 4
"""Attention weights and probabilities are rounded to this many decimals in the page (it stays small)."""


def token_text(token: int, pieces: Pieces) -> str:
    """The text a token stands for, or `#id` without a tokenizer."""
    text = pieces(token)
    return f"#{token}" if text is None else text


def report_data(positions: Sequence[Position], pieces: Pieces, title: str) -> dict[str, Any]:
    """What the page draws, from a trace (see the module docstring for the layout)."""
    tokens = positions[-1].tokens if positions else []
    layers = sorted(positions[0].attn) if positions else []
    return {
        "title": title,
        "tokens": [{"id": t, "text": token_text(t, pieces)} for t in tokens],
        "top": [[{"id": c.id, "text": token_text(c.id, pieces), "p": round(c.probability, WEIGHT_DIGITS)}
                 for c in p.top] for p in positions],  # fmt: skip
        "layers": layers,
        "attn": {str(layer): _attention_rows(positions, layer) for layer in layers},
        "lens": [[{"point": row.point, "text": token_text(row.id, pieces), "p": round(row.probability, WEIGHT_DIGITS),
                   "rank": row.final_rank, "final_p": round(row.final_probability, WEIGHT_DIGITS)}
                  for row in p.logit_lens] for p in positions],  # fmt: skip
        "residual_rms": [[round(r, 6) for r in p.residual_rms] for p in positions],
    }


def _attention_rows(positions: Sequence[Position], layer: int) -> list[list[list[float]]]:
    """`[heads][T]`: head h's weights at each position p (p + 1 of them), a lower-triangular matrix."""
    heads = len(positions[0].attn[layer])
    return [[[round(w, WEIGHT_DIGITS) for w in p.attn[layer][h]] for p in positions] for h in range(heads)]


def render_html(data: dict[str, Any]) -> str:
    """The page: the data as JSON (every `<` escaped, so no text can close the script element), style, script."""
    title = html.escape(str(data.get("title", "microqwen trace")))
    return PAGE.format(title=title, style=STYLE, body=TRACE_BODY, data_id="trace-data", data=_payload(data),
                       script=HELPERS + SCRIPT)  # fmt: skip


def write_html(path: str, positions: Sequence[Position], pieces: Pieces, title: str) -> None:
    """Write the report of a trace to `path`."""
    _write_page(path, render_html(report_data(positions, pieces, title)))


def _payload(data: dict[str, Any]) -> str:
    """JSON for a `<script type="application/json">` element: every `<` escaped."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def _write_page(path: str, page: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as e:
        raise UsageError(f"{path}: cannot write the report: {e.strerror}") from None


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<h1>{title}</h1>
{body}<script type="application/json" id="{data_id}">{data}</script>
<script>{script}</script>
</body>
</html>
"""
"""The frame of both reports: a title, the style, the body, the data as JSON and the script that draws it."""

TRACE_BODY = """<p class="hint">Click a token (or a column of the logit lens) to select its position.</p>
<section><h2>Tokens</h2><div id="tokens"></div></section>
<section class="row">
  <div><h2>Next token at the selected position</h2><div id="top"></div></div>
  <div><h2>Residual stream RMS per layer <span class="hint">(log scale; selected position in red)</span></h2>
    <svg id="residual" width="640" height="260" role="img" aria-label="residual stream RMS per layer"></svg></div>
</section>
<section><h2>Logit lens <span class="hint">(top token of each residual stream, shaded by its probability;
  bold = the model's final choice at that position)</span></h2><div id="lens"></div></section>
<section><h2>Attention <span class="hint">(row = query position, column = the position it reads)</span></h2>
  <label>layer <select id="layer"></select></label>
  <label><input type="checkbox" id="sqrt" checked> sqrt colour scale (shows small weights)</label>
  <div class="row"><div id="heads"></div><div><canvas id="big"></canvas><div id="where" class="hint"></div></div></div>
</section>
"""


STYLE = """
body { font-family: system-ui, sans-serif; margin: 16px 24px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 15px; margin: 14px 0 6px; }
.hint { color: #777; font-size: 12px; font-weight: normal; }
.row { display: flex; gap: 32px; align-items: flex-start; flex-wrap: wrap; }
.tok { display: inline-block; margin: 2px; padding: 2px 5px; border: 1px solid #bbb; border-radius: 4px;
       font-family: ui-monospace, monospace; font-size: 13px; white-space: pre; cursor: pointer; }
.tok small { color: #999; margin-right: 4px; } .tok.sel { background: #ffe08a; border-color: #c90; }
table { border-collapse: collapse; font-family: ui-monospace, monospace; font-size: 12px; }
td, th { border: 1px solid #ddd; padding: 1px 4px; white-space: pre; max-width: 110px; overflow: hidden; }
th { background: #f4f4f4; cursor: pointer; } th.rowname { cursor: default; text-align: left; max-width: none; }
td.sel, th.sel { outline: 2px solid #c90; } td.final { font-weight: bold; }
.bar { display: inline-block; height: 10px; background: #4a6fd1; vertical-align: middle; }
#top td { border: none; }
#heads { display: grid; grid-template-columns: repeat(7, auto); gap: 6px; align-content: start; }
#heads div { font-size: 11px; color: #555; text-align: center; cursor: pointer; }
#heads canvas { border: 1px solid #ccc; display: block; } #heads .sel canvas { border: 2px solid #c90; }
#big { border: 1px solid #ccc; }
"""

HELPERS = """
const show = s => String(s).replace(/ /g, '\\u00b7').replace(/\\n/g, '\\u21b5').replace(/\\t/g, '\\u21e5');
function el(tag, parent, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  if (parent) parent.appendChild(e);
  return e;
}
"""
"""What both pages' scripts use: `show` makes spaces and newlines visible, `el` adds an element."""

SCRIPT = """
const D = JSON.parse(document.getElementById('trace-data').textContent);
const T = D.tokens.length;
const S = {pos: T - 1, layer: D.layers.length ? D.layers[0] : null, head: 0};
for (const [key, value] of new URLSearchParams(location.hash.slice(1))) {  // e.g. report.html#pos=3&layer=5&head=2
  const n = Number(value);
  if (key === 'pos' && n >= 0 && n < T) S.pos = n;
  if (key === 'layer' && D.layers.includes(n)) S.layer = n;
  if (key === 'head' && S.layer !== null && n >= 0 && n < D.attn[String(S.layer)].length) S.head = n;
}
function svg(tag, parent, attrs) {
  const e = document.createElementNS(parent.namespaceURI, tag);  // the page's <svg> gives the namespace
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  parent.appendChild(e);
  return e;
}
function select(pos) { S.pos = pos; draw(); }

function drawTokens() {
  const box = document.getElementById('tokens'); box.textContent = '';
  D.tokens.forEach((t, p) => {
    const e = el('span', box, undefined, 'tok' + (p === S.pos ? ' sel' : ''));
    el('small', e, String(p)); e.appendChild(document.createTextNode(show(t.text)));
    e.title = 'position ' + p + ', id ' + t.id; e.onclick = () => select(p);
  });
}

function drawTop() {
  const box = document.getElementById('top'); box.textContent = '';
  if (!T) return;
  el('div', box, 'after position ' + S.pos + ' ' + JSON.stringify(D.tokens[S.pos].text) + ':', 'hint');
  const table = el('table', box);
  D.top[S.pos].forEach((c, i) => {
    const tr = el('tr', table);
    el('td', tr, String(i + 1) + '.'); el('td', tr, show(c.text));
    const bar = el('td', tr); el('span', bar, undefined, 'bar').style.width = Math.round(200 * c.p) + 'px';
    el('td', tr, c.p.toFixed(4));
  });
}

function drawLens() {
  const box = document.getElementById('lens'); box.textContent = '';
  if (!T || !D.lens[0].length) { box.textContent = 'logit lens off (--no-lens)'; return; }
  const table = el('table', box), head = el('tr', table);
  el('th', head, 'stream \\\\ position', 'rowname');
  D.tokens.forEach((t, p) => {
    const th = el('th', head, p + ' ' + show(t.text), p === S.pos ? 'sel' : ''); th.onclick = () => select(p);
  });
  D.lens[0].forEach((row, r) => {
    const tr = el('tr', table); el('th', tr, row.point, 'rowname');
    for (let p = 0; p < T; p++) {
      const cell = D.lens[p][r], final = D.top[p][0];
      const td = el('td', tr, show(cell.text), (p === S.pos ? 'sel ' : '') + (cell.rank === 1 ? 'final' : ''));
      td.style.background = 'rgba(74,111,209,' + (0.85 * cell.p).toFixed(3) + ')';
      td.title = row.point + ' at position ' + p + ': ' + JSON.stringify(cell.text) + ' p=' + cell.p +
                 '; final choice ' + JSON.stringify(final.text) + ' rank ' + cell.rank + ' p=' + cell.final_p;
    }
  });
  const tr = el('tr', table); el('th', tr, 'model output', 'rowname');
  for (let p = 0; p < T; p++) el('td', tr, show(D.top[p][0].text), 'final' + (p === S.pos ? ' sel' : ''));
}

function shade(w) {
  const v = document.getElementById('sqrt').checked ? Math.sqrt(w) : w;
  const c = Math.round(255 * (1 - v));
  return 'rgb(' + c + ',' + c + ',255)';
}
function heatmap(canvas, rows, cell, margin) {
  canvas.width = canvas.height = margin + T * cell;
  const g = canvas.getContext('2d');
  g.translate(margin, margin);
  g.fillStyle = '#f4f4f4'; g.fillRect(0, 0, T * cell, T * cell);
  rows.forEach((row, p) => row.forEach((w, t) => { g.fillStyle = shade(w); g.fillRect(t * cell, p * cell, cell, cell); }));
  g.strokeStyle = '#c90'; g.lineWidth = Math.max(1, cell / 6);
  g.strokeRect(0.5, S.pos * cell + 0.5, (S.pos + 1) * cell - 1, cell - 1);
  if (!margin) return;
  g.fillStyle = '#333'; g.font = Math.min(12, cell - 1) + 'px monospace'; g.textBaseline = 'middle';
  D.tokens.forEach((tok, p) => {
    const label = (p + ' ' + show(tok.text)).slice(0, 14);
    g.textAlign = 'right'; g.fillText(label, -4, (p + 0.5) * cell);
    g.save(); g.translate((p + 0.5) * cell, -4); g.rotate(-Math.PI / 2); g.textAlign = 'left';
    g.fillText(label, 0, 0); g.restore();
  });
}
function drawAttention() {
  const heads = document.getElementById('heads'); heads.textContent = '';
  const big = document.getElementById('big');
  if (S.layer === null || !T) return;
  const layer = D.attn[String(S.layer)];
  const small = Math.max(2, Math.floor(80 / T));
  layer.forEach((rows, h) => {
    const box = el('div', heads, undefined, h === S.head ? 'sel' : '');
    heatmap(el('canvas', box), rows, small, 0); el('span', box, 'head ' + h);
    box.onclick = () => { S.head = h; drawAttention(); };
  });
  const cell = Math.max(6, Math.min(28, Math.floor(480 / T))), margin = 100;
  heatmap(big, layer[S.head], cell, margin);
  const where = document.getElementById('where');
  where.textContent = 'layer ' + S.layer + ', head ' + S.head + ' (hover a cell for its weight)';
  big.onmousemove = ev => {
    const r = big.getBoundingClientRect();
    const t = Math.floor((ev.clientX - r.left - margin) / cell), p = Math.floor((ev.clientY - r.top - margin) / cell);
    if (p >= 0 && p < T && t >= 0 && t <= p)
      where.textContent = 'layer ' + S.layer + ', head ' + S.head + ': position ' + p + ' ' +
        JSON.stringify(D.tokens[p].text) + ' reads position ' + t + ' ' + JSON.stringify(D.tokens[t].text) +
        ' with weight ' + layer[S.head][p][t];
  };
}

function drawResidual() {
  const box = document.getElementById('residual'); box.textContent = '';
  if (!T) return;
  const W = 640, H = 260, L = 48, B = 30, n = D.residual_rms[0].length;
  const all = D.residual_rms.flat().filter(v => v > 0);
  const lo = Math.log10(Math.min(...all)), hi = Math.log10(Math.max(...all)) + 1e-9;
  const x = i => L + (W - L - 10) * i / Math.max(1, n - 1), y = v => 10 + (H - B - 10) * (hi - Math.log10(v)) / (hi - lo);
  svg('line', box, {x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: '#999'});
  svg('line', box, {x1: L, y1: 10, x2: L, y2: H - B, stroke: '#999'});
  for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) {
    svg('text', box, {x: L - 6, y: y(10 ** e) + 4, 'text-anchor': 'end', 'font-size': 11}).textContent = '1e' + e;
    svg('line', box, {x1: L, y1: y(10 ** e), x2: W - 10, y2: y(10 ** e), stroke: '#eee'});
  }
  for (let i = 0; i < n; i += Math.max(1, Math.ceil(n / 12)))
    svg('text', box, {x: x(i), y: H - B + 14, 'text-anchor': 'middle', 'font-size': 11}).textContent = i ? String(i - 1) : 'emb';
  svg('text', box, {x: (W + L) / 2, y: H - 2, 'text-anchor': 'middle', 'font-size': 11}).textContent = 'after layer';
  const line = (p, colour, width) => {
    const pts = D.residual_rms[p].map((v, i) => x(i).toFixed(1) + ',' + y(Math.max(v, 10 ** lo)).toFixed(1)).join(' ');
    const e = svg('polyline', box, {points: pts, fill: 'none', stroke: colour, 'stroke-width': width});
    svg('title', e, {}).textContent = 'position ' + p + ' ' + JSON.stringify(D.tokens[p].text);
    e.onclick = () => select(p);
  };
  for (let p = 0; p < T; p++) if (p !== S.pos) line(p, '#bbb', 1.2);
  line(S.pos, '#d22', 2.5);
}

function draw() { drawTokens(); drawTop(); drawLens(); drawAttention(); drawResidual(); }
const layerSelect = document.getElementById('layer');
D.layers.forEach(l => { const o = el('option', layerSelect, 'layer ' + l); o.value = l; });
layerSelect.value = S.layer;
layerSelect.onchange = () => { S.layer = Number(layerSelect.value); drawAttention(); };
document.getElementById('sqrt').onchange = drawAttention;
draw();
"""


# ------------------------------------------------------------------ the lab's page


def heatmap(title: str, hint: str, rows: Sequence[str], columns: Sequence[str], values: Sequence[Sequence[float]],
            diverging: bool = True) -> dict[str, Any]:  # fmt: skip
    """A heatmap section: `values[r][c]`, shaded from red (negative) through white to blue (or white to blue)."""
    return {"kind": "heatmap", "title": title, "hint": hint, "rows": list(rows), "columns": list(columns),
            "values": [[round(v, 6) for v in row] for row in values], "diverging": diverging}  # fmt: skip


def table(title: str, hint: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """A table section: a header and rows of cells (numbers or text)."""
    return {"kind": "table", "title": title, "hint": hint, "header": list(header), "rows": [list(r) for r in rows]}


def text(title: str, hint: str, lines: Sequence[str]) -> dict[str, Any]:
    """A section of text lines (shown as they are, e.g. two generations side by side)."""
    return {"kind": "text", "title": title, "hint": hint, "lines": list(lines)}


def render_lab_html(title: str, sections: Sequence[dict[str, Any]]) -> str:
    """The lab's page: the sections as JSON (every `<` escaped), and the script that draws them."""
    payload = _payload({"title": title, "sections": list(sections)})
    return PAGE.format(title=html.escape(title), style=STYLE + LAB_STYLE, body=LAB_BODY, data_id="lab-data", data=payload,
                       script=HELPERS + LAB_SCRIPT)  # fmt: skip


def write_lab_html(path: str, title: str, sections: Sequence[dict[str, Any]]) -> None:
    """Write the lab's page to `path`."""
    _write_page(path, render_lab_html(title, sections))


LAB_BODY = """<div id="sections"></div>
"""


LAB_STYLE = """
table.heat td { width: 46px; text-align: right; color: #222; }
table.heat td.dark { color: #fff; }
table.heat th.col { max-width: 130px; white-space: normal; font-weight: normal; cursor: default; }
table.plain td { max-width: none; } table.plain td.num { text-align: right; }
pre.lines { font-family: ui-monospace, monospace; font-size: 13px; background: #f7f7f7; padding: 8px;
            white-space: pre-wrap; max-width: 1100px; }
"""

LAB_SCRIPT = """
const D = JSON.parse(document.getElementById('lab-data').textContent);
function colour(v, top, diverging) {
  const t = Math.min(1, Math.abs(v) / top);
  const [r, g, b] = !diverging || v >= 0 ? [181, 144, 46] : [40, 190, 190];  // toward blue, or toward red
  return 'rgb(' + Math.round(255 - r * t) + ',' + Math.round(255 - g * t) + ',' + Math.round(255 - b * t) + ')';
}
function drawHeatmap(box, s) {
  const all = s.values.flat().map(Math.abs), top = Math.max(1e-12, ...all);
  const t = el('table', box, undefined, 'heat'), head = el('tr', t);
  el('th', head, '', 'rowname');
  s.columns.forEach(c => el('th', head, c, 'col'));
  s.values.forEach((row, r) => {
    const tr = el('tr', t); el('th', tr, s.rows[r], 'rowname');
    row.forEach((v, c) => {
      const td = el('td', tr, v.toFixed(Math.abs(v) >= 100 ? 0 : 2), Math.abs(v) / top > 0.6 ? 'dark' : '');
      td.style.background = colour(v, top, s.diverging);
      td.title = s.rows[r] + ', ' + s.columns[c] + ': ' + v;
    });
  });
  el('div', box, 'colour scale: ' + (s.diverging ? '-' + top.toPrecision(3) + ' (red) .. 0 (white) .. ' : '0 (white) .. ') +
     top.toPrecision(3) + ' (blue)', 'hint');
}
function drawTable(box, s) {
  const t = el('table', box, undefined, 'plain'), head = el('tr', t);
  s.header.forEach(h => el('th', head, h, 'rowname'));
  s.rows.forEach(row => {
    const tr = el('tr', t);
    row.forEach(v => el('td', tr, typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(4)) : v,
                        typeof v === 'number' ? 'num' : ''));
  });
}
const root = document.getElementById('sections');
D.sections.forEach(s => {
  const box = el('section', root);
  const h = el('h2', box, s.title);
  if (s.hint) { h.appendChild(document.createTextNode(' ')); el('span', h, '(' + s.hint + ')', 'hint'); }
  if (s.kind === 'heatmap') drawHeatmap(box, s);
  else if (s.kind === 'table') drawTable(box, s);
  else el('pre', box, s.lines.join('\\n'), 'lines');
});
"""



def lab_sections(result: Any, top: int = 20) -> list[dict[str, Any]]:
    """The page's sections for a lab result: heatmaps for patching, the sweep and induction scores, tables for
    the ranked heads, direct logit attribution and an ablation's before and after, text for steering."""
    from .lab.ablation import Ablation, Sweep
    from .lab.attribution import Attribution
    from .lab.induction import Induction
    from .lab.patching import Patching
    from .lab.steering import Steering

    if isinstance(result, Patching):
        a, b = token_label(result.answers.a, result.answers.a_text), token_label(result.answers.b, result.answers.b_text)
        hint = (f"share of the logit difference {a} - {b} restored: 1 = the clean answer, 0 = the corrupted run; "
                f"clean {result.clean_logit_diff:.3f}, corrupted {result.corrupted_logit_diff:.3f}")  # fmt: skip
        what = "heads (attn_output slices, every position)" if result.kind == "heads" else f"{result.kind} x position"
        return [heatmap(f"Activation patching: {what}", hint, result.rows, result.columns, result.restored)]
    if isinstance(result, Sweep):
        rows = [f"layers.{i}" for i in range(len(result.kl))]
        columns = [f"head {h}" for h in range(len(result.kl[0]))]
        ranked = [[e.component, e.kl, e.logit_diff, token_label(e.top_id, e.top_text)] for e in result.ranked[:top]]
        return [heatmap(f"Ablation of each head ({result.mode}): KL(clean || ablated)", "nats; darker = the "
                        "next-token distribution moves more", rows, columns, result.kl, diverging=False),
                table(f"The {len(ranked)} heads that matter most", "ranked by KL",
                      ["head", "KL", "logit diff", "top token after"], ranked)]  # fmt: skip
    if isinstance(result, Ablation):
        cells = [[n, token_label(b.id, b.text), b.probability, token_label(a.id, a.text), a.probability]
                 for n, (b, a) in enumerate(zip(result.before, result.after), 1)]
        hint = f"KL {result.kl:.4f} nats; logit difference {result.logit_diff_before:.3f} -> {result.logit_diff_after:.3f}"
        return [table(f"Ablation ({result.mode}) of {', '.join(result.components)}", hint,
                      ["#", "before", "p", "after", "p"], cells)]  # fmt: skip
    if isinstance(result, Attribution):
        contributions = result.contributions
        layers = sorted({int(name.split(".")[1]) for name in contributions if name.startswith("layers.")})
        heads = sorted({int(name.rsplit(".", 1)[1]) for name in contributions if ".head." in name})
        grid = [[contributions[f"layers.{i}.self_attn.head.{h}"] for h in heads] + [contributions[f"layers.{i}.mlp"]]
                for i in layers]  # fmt: skip
        largest = sorted(contributions.items(), key=lambda item: -abs(item[1]))[:top]
        hint = f"sum {result.total:.4f} = the logit {result.logit:.4f}; embed_tokens {contributions['embed_tokens']:.4f}"
        return [heatmap(f"Direct logit attribution of {token_label(result.target, result.text)}", hint, [f"layers.{i}" for i in layers],
                        [f"head {h}" for h in heads] + ["mlp"], grid),
                table(f"The {len(largest)} largest contributions", "to the target's logit",
                      ["component", "contribution"], [list(item) for item in largest])]  # fmt: skip
    if isinstance(result, Induction):
        rows = [f"layers.{i}" for i in range(len(result.scores))]
        columns = [f"head {h}" for h in range(len(result.scores[0]))]
        hint = f"loss per token: first half {result.loss_first:.3f}, repeat {result.loss_repeat:.3f} nats"
        return [heatmap("Induction scores", hint, rows, columns, result.scores, diverging=False),
                table("The top heads", "mean attention to the token after the earlier copy", ["head", "score"],
                      [[s.component, s.score] for s in result.ranked[:top]])]  # fmt: skip
    if isinstance(result, Steering):
        return [text("Steering", f"{result.scale:g} x vector after layer {result.layer}",
                     ["without:", result.plain_text, "", "with:", result.steered_text])]
    raise TypeError(f"no report for {type(result).__name__}")
