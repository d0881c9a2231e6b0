// The microqwen explorer: a prompt's tokens, the next-token candidates, every head's attention, the
// logit lens, the residual stream, and two experiments of the lab, all computed on the server by
// microqwen's own model (POST /explorer/...; see microqwen/explorer.py). Plain JavaScript and SVG.
'use strict';

const S = {
  info: null,       // the model's shape, sampling defaults and where each kind of value comes from
  ids: [],          // the token ids of the sequence
  tokens: [],       // [{id, text}]
  positions: [],    // per position: {top: [{id, text, p, logit}], attn: [layer][head][pos + 1], rms: [1 + layers]}
  pos: 0,           // the selected position
  layer: 0,
  head: 0,
  lens: {},         // prefix -> the logit lens at its last position
  dist: null,       // the sampler's distribution at the selected position
  ablations: {},    // "layer.head" -> the ablation's answer, for the current sequence
  busy: 0,
};
const $ = id => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';
const show = s => s.replace(/ /g, '\u00b7').replace(/\n/g, '\u21b5').replace(/\t/g, '\u21e5');
const key = ids => ids.join(',');

function el(tag, parent, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  if (parent) parent.appendChild(e);
  return e;
}
function svg(tag, parent, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  parent.appendChild(e);
  return e;
}
function bar(parent, p, cls) {
  el('span', parent, undefined, 'bar' + (cls ? ' ' + cls : '')).style.width = Math.round(160 * p) + 'px';
}

// ---------------------------------------------------------------- talking to the server

async function api(path, body) {
  const init = body === undefined ? {} :
    {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)};
  const response = await fetch(path, init);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error ? data.error.message : response.status + ' ' + response.statusText);
  return data;
}
function status(text, error) {
  const e = $('status');
  e.textContent = text;
  e.className = error ? 'error' : 'hint';
}
async function work(label, task) {
  S.busy++;
  status(label + '\u2026');
  document.body.dataset.busy = 'true';
  try {
    await task();
    status('');
  } catch (e) {
    status(e.message, true);
  } finally {
    S.busy--;
    if (!S.busy) delete document.body.dataset.busy;
  }
}

// ---------------------------------------------------------------- the sequence

async function runPrompt() {
  const prompt = $('prompt').value;
  if (!prompt) return;
  await work('running the prompt', async () => {
    const answer = await api('/explorer/run', {prompt, chat: $('chat').checked});
    S.ids = answer.tokens.map(t => t.id);
    S.positions = answer.positions;
    await afterRun(answer);
  });
}
async function extend(ids) {  // the sequence becomes `ids`: only the positions after the common part are new
  let start = 0;
  while (start < Math.min(ids.length, S.ids.length) && ids[start] === S.ids[start]) start++;
  const answer = await api('/explorer/run', {ids, start});
  S.ids = ids;
  S.positions = S.positions.slice(0, start).concat(answer.positions);
  await afterRun(answer);
}
function afterRun(answer) {
  S.tokens = answer.tokens;
  S.ablations = {};
  S.pos = S.ids.length - 1;
  draw();
  return Promise.all([loadLens(), loadDistribution()]);
}
async function pick(id) {  // the candidate `id` follows the selected position
  await work('running one more token', () => extend(S.ids.slice(0, S.pos + 1).concat([id])));
}
async function sample() {
  await work('sampling', async () => {
    const answer = await api('/explorer/distribution', Object.assign(samplerParams(), {ids: prefix(), draw: true}));
    await extend(prefix().concat([answer.drawn.id]));
  });
}
const prefix = () => S.ids.slice(0, S.pos + 1);
function select(pos) {
  S.pos = pos;
  draw();
  work('the lens and the sampler at position ' + pos, () => Promise.all([loadLens(), loadDistribution()]));
}

// ---------------------------------------------------------------- tokens and candidates

function drawTokens() {
  const box = $('tokens');
  box.textContent = '';
  S.tokens.forEach((t, p) => {
    const e = el('span', box, undefined, 'tok' + (p === S.pos ? ' sel' : ''));
    e.dataset.tokenId = t.id;
    e.dataset.pos = p;
    el('small', e, String(p));
    e.appendChild(document.createTextNode(show(t.text)));
    e.title = 'position ' + p + ', token id ' + t.id;
    e.onclick = () => {
      select(p);
      explain('token', 'Token ' + JSON.stringify(t.text) + ' at position ' + p, {value: 'id ' + t.id, pos: p});
    };
  });
}

function drawCandidates() {
  const table = $('candidates');
  table.textContent = '';
  if (!S.positions.length) return;
  const here = S.positions[S.pos];
  $('after').textContent = 'after position ' + S.pos + ' ' + JSON.stringify(S.tokens[S.pos].text);
  const head = el('tr', table);
  ['#', 'token', 'p (the model)', 'p (the sampler)'].forEach(h => el('th', head, h));
  const reshaped = {};
  if (S.dist && S.dist.key === key(prefix())) S.dist.reshaped.forEach(c => { reshaped[c.id] = c.p; });
  here.top.forEach((c, i) => {
    const tr = el('tr', table);
    el('td', tr, String(i + 1) + '.');
    const button = el('button', el('td', tr), show(c.text));
    button.type = 'button';
    button.dataset.candidateId = c.id;
    button.title = 'pick token ' + c.id + ' as the next one';
    button.onclick = () => pick(c.id);
    const model = el('td', tr, undefined, 'value');
    bar(model, c.p);
    model.appendChild(document.createTextNode(c.p.toFixed(4)));
    model.onclick = () => explain('candidate', 'p(' + JSON.stringify(c.text) + ') after position ' + S.pos,
                                  {value: c.p + ' (logit ' + c.logit + ')', pos: S.pos});
    const sampler = el('td', tr, undefined, 'value');
    if (c.id in reshaped) {
      bar(sampler, reshaped[c.id], 'sampler');
      sampler.appendChild(document.createTextNode(reshaped[c.id].toFixed(4)));
    } else if (S.dist) {
      sampler.textContent = 'filtered out';
      sampler.classList.add('dropped');
    }
    sampler.onclick = () => explain('distribution', 'The sampler\'s p(' + JSON.stringify(c.text) + ')',
                                    {value: c.id in reshaped ? String(reshaped[c.id]) : 'filtered out (0)', pos: S.pos});
  });
}

function samplerParams() {
  const params = {};
  for (const name of ['temperature', 'top_k', 'top_p', 'min_p']) params[name] = Number($(name).value);
  return params;
}
let distributionWanted = false, distributionRunning = false;
async function loadDistribution() {  // one request at a time; a slider moved meanwhile asks again afterwards
  if (!S.ids.length) return;
  if (distributionRunning) { distributionWanted = true; return; }
  distributionRunning = true;
  try {
    do {
      distributionWanted = false;
      const ids = prefix();
      const answer = await api('/explorer/distribution', Object.assign(samplerParams(), {ids}));
      S.dist = Object.assign(answer, {key: key(ids)});
      drawCandidates();
      $('survivors').textContent = answer.survivors + ' of ' + S.info.vocab + ' tokens survive the filters' +
        (answer.params.temperature === 0 ? ' (temperature 0: greedy, the top token only)' : '');
    } while (distributionWanted);
  } finally {
    distributionRunning = false;
  }
}
function drawSliders() {
  for (const name of ['temperature', 'top_k', 'top_p', 'min_p']) {
    const input = $(name);
    input.nextElementSibling.textContent = name === 'top_k' && input.value === '0' ? 'off' : input.value;
  }
}

// ---------------------------------------------------------------- attention

function shade(w) {
  const c = Math.round(255 * (1 - Math.sqrt(w)));  // sqrt: small weights stay visible
  return 'rgb(' + c + ',' + c + ',255)';
}
function heatmap(box, rows, cell, margin, onCell) {  // rows[p] = the weights of position p over 0..p
  const T = rows.length;
  box.textContent = '';
  box.setAttribute('width', margin + T * cell + 2);
  box.setAttribute('height', margin + T * cell + 2);
  const g = svg('g', box, {transform: 'translate(' + (margin + 1) + ',' + (margin + 1) + ')'});
  svg('rect', g, {width: T * cell, height: T * cell, fill: '#f4f4f4'});
  rows.forEach((row, p) => row.forEach((w, t) => {
    const r = svg('rect', g, {x: t * cell, y: p * cell, width: cell, height: cell, fill: shade(w)});
    if (onCell) {
      r.setAttribute('class', 'cell value');
      svg('title', r, {}).textContent = p + ' reads ' + t + ': ' + w;
      r.onclick = () => onCell(p, t, w);
    }
  }));
  svg('rect', g, {x: 0, y: S.pos * cell, width: (S.pos + 1) * cell, height: cell, fill: 'none', stroke: '#c90',
                  'stroke-width': Math.max(1, cell / 6)});
  if (!margin) return;
  S.tokens.forEach((tok, p) => {
    const label = (p + ' ' + show(tok.text)).slice(0, 14);
    svg('text', g, {x: -4, y: (p + 0.5) * cell + 4, 'text-anchor': 'end'}).textContent = label;
    svg('text', g, {transform: 'translate(' + ((p + 0.5) * cell + 4) + ',-4) rotate(-90)'}).textContent = label;
  });
}
function drawAttention() {
  const heads = $('heads');
  heads.textContent = '';
  if (!S.positions.length) return;
  const rows = h => S.positions.map(position => position.attn[S.layer][h]);
  const small = Math.max(2, Math.floor(84 / S.positions.length));
  for (let h = 0; h < S.info.heads; h++) {
    const figure = el('figure', heads, undefined, h === S.head ? 'sel' : '');
    figure.dataset.head = h;
    heatmap(svg('svg', figure, {}), rows(h), small, 0);
    el('figcaption', figure, 'head ' + h);
    figure.onclick = () => { S.head = h; drawAttention(); };
  }
  const cell = Math.max(8, Math.min(28, Math.floor(480 / S.positions.length)));
  heatmap($('head'), rows(S.head), cell, 100, (p, t, w) => explain('attention',
    'Layer ' + S.layer + ', head ' + S.head + ': position ' + p + ' reads position ' + t,
    {value: String(w), layer: S.layer, pos: p, detail: JSON.stringify(S.tokens[p].text) + ' reads ' +
     JSON.stringify(S.tokens[t].text) + '; the row sums to 1 over positions 0..' + p}));
  $('head-hint').textContent = 'layer ' + S.layer + ', head ' + S.head + ' enlarged (it reads key/value head ' +
    Math.floor(S.head / (S.info.heads / S.info.kv_heads)) + '); click a cell for where it comes from';
}

// ---------------------------------------------------------------- the logit lens and the residual stream

async function loadLens() {
  if (!S.ids.length) return;
  const ids = prefix(), pos = S.pos;
  if (!(key(ids) in S.lens)) S.lens[key(ids)] = await api('/explorer/lens', {ids, pos});
  drawLens();
}
function drawLens() {
  const table = $('lens');
  table.textContent = '';
  const lens = S.lens[key(prefix())];
  if (!lens) return;
  $('lens-at').textContent = 'at position ' + lens.pos + ': each residual stream through the final norm and the ' +
    'output head; the model\'s choice is ' + JSON.stringify(lens.final.text);
  const head = el('tr', table);
  ['stream', 'top token', 'p', 'rank of ' + show(lens.final.text), 'its p'].forEach(h => el('th', head, h));
  lens.rows.forEach(row => {
    const tr = el('tr', table);
    el('td', tr, row.point);
    el('td', tr, show(row.text));
    const p = el('td', tr, undefined, 'value');
    bar(p, row.p);
    p.appendChild(document.createTextNode(row.p.toFixed(4)));
    el('td', tr, String(row.rank));
    el('td', tr, row.final_p.toFixed(4));
    const layer = row.point === 'embed_tokens' ? 'embed' : row.point.split('.')[1];
    p.onclick = () => explain('lens', 'The logit lens at ' + row.point + ', position ' + lens.pos,
      {value: 'top ' + JSON.stringify(row.text) + ' p=' + row.p + '; the final choice ranks ' + row.rank,
       layer, pos: lens.pos});
  });
}

function drawResidual() {
  const box = $('rms');
  box.textContent = '';
  if (!S.positions.length) return;
  const W = 560, H = 260, L = 48, B = 30, n = S.positions[0].rms.length;
  const all = S.positions.flatMap(p => p.rms).filter(v => v > 0);
  const lo = Math.log10(Math.min(...all)), hi = Math.log10(Math.max(...all)) + 1e-9;
  const x = i => L + (W - L - 10) * i / Math.max(1, n - 1);
  const y = v => 10 + (H - B - 10) * (hi - Math.log10(Math.max(v, 10 ** lo))) / Math.max(hi - lo, 1e-9);
  svg('line', box, {x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: '#999'});
  svg('line', box, {x1: L, y1: 10, x2: L, y2: H - B, stroke: '#999'});
  for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) {
    svg('text', box, {x: L - 6, y: y(10 ** e) + 4, 'text-anchor': 'end'}).textContent = '1e' + e;
    svg('line', box, {x1: L, y1: y(10 ** e), x2: W - 10, y2: y(10 ** e), stroke: '#eee'});
  }
  for (let i = 0; i < n; i += Math.max(1, Math.ceil(n / 12)))
    svg('text', box, {x: x(i), y: H - B + 14, 'text-anchor': 'middle'}).textContent = i ? String(i - 1) : 'emb';
  svg('text', box, {x: (W + L) / 2, y: H - 2, 'text-anchor': 'middle'}).textContent = 'after layer';
  const line = (p, colour, width) => {
    const points = S.positions[p].rms.map((v, i) => x(i).toFixed(1) + ',' + y(v).toFixed(1)).join(' ');
    const e = svg('polyline', box, {points, fill: 'none', stroke: colour, 'stroke-width': width});
    svg('title', e, {}).textContent = 'position ' + p + ' ' + JSON.stringify(S.tokens[p].text);
    e.onclick = () => select(p);
  };
  S.positions.forEach((_, p) => { if (p !== S.pos) line(p, '#bbb', 1.2); });
  line(S.pos, '#d22', 2.5);
  S.positions[S.pos].rms.forEach((v, i) => {
    const dot = svg('circle', box, {cx: x(i), cy: y(v), r: 4, fill: '#d22', class: 'value'});
    const layer = i ? String(i - 1) : 'embed';
    svg('title', dot, {}).textContent = (i ? 'after layer ' + layer : 'embedding') + ': ' + v;
    dot.onclick = () => explain('rms', 'The residual stream\'s RMS ' + (i ? 'after layer ' + layer : 'at the embedding') +
      ', position ' + S.pos, {value: String(v), layer: i ? layer : 'embed', pos: S.pos});
  });
}

// ---------------------------------------------------------------- the lab: ablation and patching

function drawAblationGrid() {
  const grid = $('ablation-grid');
  grid.textContent = '';
  if (!S.info) return;
  grid.style.gridTemplateColumns = '52px repeat(' + S.info.heads + ', 22px)';
  el('span', grid, 'layer');
  for (let h = 0; h < S.info.heads; h++) el('span', grid, String(h));
  const kls = Object.values(S.ablations).map(a => a.kl);
  const most = Math.max(1e-12, ...kls);
  for (let l = 0; l < S.info.layers; l++) {
    el('span', grid, String(l));
    for (let h = 0; h < S.info.heads; h++) {
      const done = S.ablations[l + '.' + h];
      const b = el('button', grid, done ? '' : '\u00b7', done ? 'done' : '');
      b.type = 'button';
      b.dataset.layer = l;
      b.dataset.head = h;
      b.title = done ? 'layer ' + l + ' head ' + h + ': KL ' + done.kl.toPrecision(3) + ' nats' :
                       'ablate layer ' + l + ', head ' + h;
      if (done) b.style.background = 'rgba(209,60,60,' + (0.15 + 0.85 * done.kl / most).toFixed(3) + ')';
      b.onclick = () => ablate(l, h);
    }
  }
}
async function ablate(layer, head) {
  if (!S.ids.length) return;
  await work('ablating layer ' + layer + ', head ' + head, async () => {
    const answer = await api('/explorer/ablate', {ids: S.ids, layer, head});
    S.ablations[layer + '.' + head] = answer;
    drawAblationGrid();
    drawAblation(answer);
  });
}
function drawAblation(a) {
  const box = $('ablation');
  box.textContent = '';
  const title = el('p', box, 'Layer ' + a.layer + ', head ' + a.head + ' zeroed (' + a.point + '[' + a.slice[0] + ':' +
    a.slice[1] + ']) after position ' + (S.ids.length - 1) + ': KL(before \u2016 after) = ' + a.kl.toPrecision(4) +
    ' nats', 'value');
  title.onclick = () => explain('ablation', 'Ablating layer ' + a.layer + ', head ' + a.head,
    {value: 'KL ' + a.kl, layer: a.layer, pos: S.ids.length - 1});
  const table = el('table', box);
  const head = el('tr', table);
  ['token', 'p before', 'p after', 'change'].forEach(h => el('th', head, h));
  a.tokens.forEach(t => {
    const tr = el('tr', table);
    el('td', tr, show(textOf(t.id)));
    const before = el('td', tr);
    bar(before, t.p_before);
    before.appendChild(document.createTextNode(t.p_before.toFixed(4)));
    const after = el('td', tr);
    bar(after, t.p_after, 'sampler');
    after.appendChild(document.createTextNode(t.p_after.toFixed(4)));
    el('td', tr, (t.p_after >= t.p_before ? '+' : '') + (t.p_after - t.p_before).toFixed(4));
  });
}
function textOf(id) {  // a token's text, from what the page has seen
  for (const position of S.positions) for (const c of position.top) if (c.id === id) return c.text;
  const token = S.tokens.find(t => t.id === id);
  return token ? token.text : '#' + id;
}

async function patch() {
  await work('patching (layers \u00d7 positions runs of the corrupted prompt)', async () => {
    const answer = await api('/explorer/patch', {clean: $('clean').value, corrupt: $('corrupt').value,
                                                 chat: $('chat').checked});
    drawPatching(answer);
  });
}
function drawPatching(a) {
  const box = $('patching');
  box.textContent = '';
  const T = a.clean.length, L = a.effect.length;
  const cell = Math.max(10, Math.min(40, Math.floor(520 / T))), rowH = Math.max(8, Math.min(18, Math.floor(420 / L)));
  const left = 72, top = 110;
  box.setAttribute('width', left + T * cell + 10);
  box.setAttribute('height', top + L * rowH + 10);
  a.clean.forEach((t, p) => {
    const label = show(t.text) + (a.corrupt[p].id !== t.id ? ' / ' + show(a.corrupt[p].text) : '');
    svg('text', box, {transform: 'translate(' + (left + (p + 0.5) * cell + 4) + ',' + (top - 4) + ') rotate(-90)'})
      .textContent = (p + ' ' + label).slice(0, 18);
  });
  a.effect.forEach((row, l) => {
    const name = a.rows[l], layer = name === 'embed_tokens' ? 'embed' : Number(name.split('.')[1]);
    const label = layer === 'embed' ? 'embed' : 'layer ' + layer;
    svg('text', box, {x: left - 6, y: top + (l + 0.5) * rowH + 4, 'text-anchor': 'end'}).textContent = label;
    row.forEach((v, p) => {
      const strength = Math.min(1, Math.abs(v));
      const fill = v >= 0 ? 'rgba(74,111,209,' + strength.toFixed(3) + ')' : 'rgba(209,60,60,' + strength.toFixed(3) + ')';
      const r = svg('rect', box, {x: left + p * cell, y: top + l * rowH, width: cell - 1, height: rowH - 1, fill,
                                  stroke: '#eee', class: 'cell value'});
      svg('title', r, {}).textContent = name + ', position ' + p + ': ' + v.toFixed(3);
      r.onclick = () => explain('patching', 'Patching ' + name + ' at position ' + p,
        {value: v.toFixed(4) + ' (0 = the corrupted run, 1 = the clean run)', point: name, pos: p});
    });
  });
  $('patch-note').textContent = 'metric: logit(' + JSON.stringify(a.clean_answer_text) + ') \u2212 logit(' +
    JSON.stringify(a.corrupt_answer_text) + '), the two prompts\u2019 answers: ' + a.ld_clean.toFixed(3) +
    ' clean, ' + a.ld_corrupt.toFixed(3) + ' corrupted; blue = restores the clean answer';
}

// ---------------------------------------------------------------- where a value comes from

const sourceFiles = {};
async function explain(kind, title, facts) {
  const source = S.info.sources[kind], info = S.info;
  const shape = source.shape.replace('pos + 1', String((facts.pos || 0) + 1)).replace('head_dim', info.head_dim)
    .replace('hidden', info.hidden).replace('vocab', info.vocab).replace('heads', info.heads);
  const point = source.point.replace('{layer}', facts.layer === undefined ? 'i' : facts.layer)
    .replace('layers.embed', 'embed_tokens');
  const where = source.source;
  $('where').hidden = false;
  $('where').dataset.kind = kind;
  $('where-title').textContent = title;
  const facts_ = $('where-facts');
  facts_.textContent = '';
  const fact = (name, value, href) => {
    el('dt', facts_, name);
    const dd = el('dd', facts_);
    if (href) { const a = el('a', dd, value); a.href = href; a.target = '_blank'; } else dd.textContent = value;
  };
  fact('value', facts.value);
  if (facts.detail) fact('', facts.detail);
  fact('trace point', point + (facts.pos !== undefined ? ' at position ' + facts.pos : ''));
  fact('shape', shape);
  fact('what', source.what);
  fact('computed by', where.module + '.' + where.function + ', ' + where.file + ' line ' + where.line,
       '/source/' + where.file);
  fact('docs', source.docs, info.docs + source.docs);
  fact('API reference', source.api.split('#')[1] || source.api, info.docs + source.api);
  if (!(where.file in sourceFiles)) sourceFiles[where.file] = (await (await fetch('/source/' + where.file)).text()).split('\n');
  const lines = sourceFiles[where.file], code = $('where-code');
  code.textContent = '';
  for (let n = Math.max(1, where.line - 6); n <= Math.min(lines.length, where.line + 6); n++) {
    const line = el('span', code, String(n).padStart(4) + '  ' + lines[n - 1] + '\n', n === where.line ? 'hit' : '');
    line.dataset.line = n;
  }
}

// ---------------------------------------------------------------- drawing, and the start

function draw() {
  drawTokens();
  drawCandidates();
  drawAttention();
  drawLens();
  drawResidual();
  drawAblationGrid();
}

async function start() {
  S.info = await api('/explorer/info');
  $('model').textContent = S.info.model + ': ' + S.info.layers + ' layers, ' + S.info.heads + ' heads (' +
    S.info.kv_heads + ' key/value heads) of ' + S.info.head_dim + ', hidden ' + S.info.hidden + ', vocabulary ' +
    S.info.vocab;
  const layer = $('layer');
  for (let l = 0; l < S.info.layers; l++) { const o = el('option', layer, 'layer ' + l); o.value = l; }
  layer.onchange = () => { S.layer = Number(layer.value); drawAttention(); };
  const defaults = S.info.sampling;
  if (defaults.temperature > 0) {
    $('temperature').value = defaults.temperature;
    $('top_k').value = defaults.top_k;
    $('top_p').value = defaults.top_p;
    $('min_p').value = defaults.min_p;
  }
  for (const name of ['temperature', 'top_k', 'top_p', 'min_p'])
    $(name).oninput = () => { drawSliders(); loadDistribution().catch(e => status(e.message, true)); };
  drawSliders();
  $('prompt-form').onsubmit = event => { event.preventDefault(); runPrompt(); };
  $('step').onclick = () => S.positions.length && pick(S.positions[S.pos].top[0].id);
  $('sample').onclick = () => S.positions.length && sample();
  $('patch').onclick = patch;
  $('where-close').onclick = () => { $('where').hidden = true; };
  drawAblationGrid();
  const query = new URLSearchParams(location.search);
  if (query.get('chat')) $('chat').checked = true;
  if (query.get('clean')) $('clean').value = query.get('clean');
  if (query.get('corrupt')) $('corrupt').value = query.get('corrupt');
  if (query.get('prompt')) {
    $('prompt').value = query.get('prompt');
    await runPrompt();
  }
  document.body.dataset.ready = 'true';
}
start().catch(e => status(e.message, true));
