/**
 * The status page (`GET /`): one self-contained HTML document (no CDN: daemons run on closed
 * networks) that polls /v1/status and /v1/history and draws SVG line charts — round loss, KL
 * against both budgets, reward lower bound, unsafe upper bound against its limit, the red-team
 * unsafe rate as the judges saw it on each side, the decisions timeline and the ingest rate; a
 * table of the newest candidates' gate checks, one row per bounded comparison (estimate, bound,
 * limit, α, evidence counts); and for a version on probation, both versions' live signals with
 * their confidence sequences over time, the difference with its sequence against 0 and the
 * margin, and the decision when it comes (from /v1/models/:model/probation). Each chart's <svg>
 * carries data-points = the points it drew; each gate-table row data-check and data-status.
 */
import { createHash } from 'node:crypto';

export const STATUS_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>alignd status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px system-ui,sans-serif;margin:1.5rem;color:#1d232a;background:#fafbfc}
 h1{font-size:1.3rem;margin:0 0 .3rem} .sub{color:#5b6570;margin-bottom:1rem}
 .grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:1rem}
 .card{background:#fff;border:1px solid #dde2e7;border-radius:6px;padding:.8rem}
 .card h2{font-size:.95rem;margin:0 0 .4rem} svg{width:100%;height:180px}
 .legend span{margin-right:.8rem;font-size:.8rem} table{border-collapse:collapse;width:100%}
 td,th{border-bottom:1px solid #eee;padding:.25rem .4rem;text-align:left;font-size:.85rem}
 .promote{color:#1a7f37}.reject{color:#cf222e}.hold{color:#9a6700}.discarded{color:#6e7781}
 .stable{color:#1a7f37}.rollback{color:#cf222e}.watching{color:#0969da} #probation-decision{margin-top:.4rem}
</style></head>
<body>
<h1>alignd</h1><div class="sub" id="summary">loading…</div>
<div class="card" style="margin-bottom:1rem"><h2>Models</h2><table id="models"><thead><tr><th>model</th><th>deployed</th><th>server name</th><th>candidate</th><th>last decision</th><th>last round</th><th>probation</th></tr></thead><tbody></tbody></table></div>
<div class="card" id="probation" style="margin-bottom:1rem" hidden><h2>Probation</h2><div id="probation-summary"></div><div id="probation-decision"></div>
 <div class="grid" id="probation-charts" style="margin-top:.6rem"></div></div>
<div class="card" style="margin-bottom:1rem"><h2>Gate checks (newest candidates first): each bound at the level α it was tested at</h2>
<table id="gate-checks"><thead><tr><th>candidate</th><th>decision</th><th>check</th><th>status</th><th>statistic</th><th>estimate</th><th>bound</th><th>limit</th><th>α</th><th>evidence</th></tr></thead><tbody></tbody></table></div>
<div class="grid">
 <div class="card"><h2>Round loss</h2><svg id="chart-loss" data-points="0"></svg><div class="legend" id="legend-loss"></div></div>
 <div class="card"><h2>KL against budgets (nats/token)</h2><svg id="chart-kl" data-points="0"></svg><div class="legend" id="legend-kl"></div></div>
 <div class="card"><h2>Reward gain, lower confidence bound</h2><svg id="chart-reward" data-points="0"></svg><div class="legend" id="legend-reward"></div></div>
 <div class="card"><h2>Unsafe rate, upper confidence bound</h2><svg id="chart-unsafe" data-points="0"></svg><div class="legend" id="legend-unsafe"></div></div>
 <div class="card"><h2>Red-team unsafe rate as judged: candidate vs deployed</h2><svg id="chart-judged" data-points="0"></svg><div class="legend" id="legend-judged"></div></div>
 <div class="card"><h2>Decisions</h2><svg id="chart-decisions" data-points="0"></svg><div class="legend" id="legend-decisions"></div></div>
 <div class="card"><h2>Ingest rate (events/s)</h2><svg id="chart-ingest" data-points="0"></svg><div class="legend" id="legend-ingest"></div></div>
</div>
<script>
const COLORS = ['#0969da', '#cf222e', '#1a7f37', '#9a6700', '#8250df', '#6e7781'];
const NS = 'http://www.w3.org/2000/svg';
function el(tag, attrs, parent) { const e = document.createElementNS(NS, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); parent.appendChild(e); return e; }
// series: [{name, points: [[t, y]], dashed?, markers?: [{t, y, cls}]}]
function draw(id, series) {
  const svg = document.getElementById(id); svg.innerHTML = '';
  const W = svg.clientWidth || 420, H = svg.clientHeight || 180, L = 48, B = 20, T = 8, R = 8;
  const all = series.flatMap(s => s.points.concat((s.markers || []).map(m => [m.t, m.y])));
  const finite = all.filter(p => Number.isFinite(p[0]) && Number.isFinite(p[1]));
  svg.dataset.points = String(finite.length);
  if (finite.length === 0) { el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', fill: '#999' }, svg).textContent = 'no data yet'; return; }
  let [x0, x1] = [Math.min(...finite.map(p => p[0])), Math.max(...finite.map(p => p[0]))];
  let [y0, y1] = [Math.min(...finite.map(p => p[1])), Math.max(...finite.map(p => p[1]))];
  if (x0 === x1) { x0 -= 1; x1 += 1; } if (y0 === y1) { y0 -= 1; y1 += 1; }
  const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad;
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R), sy = y => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  el('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: '#ccc' }, svg); el('line', { x1: L, y1: T, x2: L, y2: H - B, stroke: '#ccc' }, svg);
  for (const v of [y0 + pad, (y0 + y1) / 2, y1 - pad]) el('text', { x: L - 4, y: sy(v) + 4, 'text-anchor': 'end', 'font-size': 10, fill: '#666' }, svg).textContent = Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3);
  const legend = document.getElementById(id.replace('chart', 'legend')); legend.innerHTML = '';
  series.forEach((s, i) => {
    const c = s.color || COLORS[i % COLORS.length];
    const pts = s.points.filter(p => Number.isFinite(p[0]) && Number.isFinite(p[1]));
    if (pts.length > 0) el('polyline', { points: pts.map(p => sx(p[0]).toFixed(1) + ',' + sy(p[1]).toFixed(1)).join(' '), fill: 'none', stroke: c, 'stroke-width': 2, 'stroke-dasharray': s.dashed ? '5 4' : '', 'data-series': s.name }, svg);
    for (const p of pts) el('circle', { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: c }, svg);
    for (const m of s.markers || []) el('circle', { cx: sx(m.t), cy: sy(m.y), r: 5, class: m.cls, fill: 'currentColor', 'data-decision': m.cls }, svg);
    const span = document.createElement('span'); span.style.color = c; span.textContent = (s.dashed ? '- - ' : '— ') + s.name; legend.appendChild(span);
  });
}
// One row per comparison of each check (estimate, one-sided bound, limit, α, evidence counts), newest candidates first.
function drawChecks(rounds) {
  const tbody = document.querySelector('#gate-checks tbody'); tbody.innerHTML = '';
  const fmt = (x, unit) => typeof x !== 'number' ? (x == null ? '—' : String(x)) : unit === 'rate' ? (x * 100).toFixed(1) + '%' : String(Math.round(x * 1e4) / 1e4);
  const gated = rounds.filter(r => Array.isArray(r.result.checks)).slice(-10).reverse();
  for (const r of gated) {
    for (const c of r.result.checks) {
      const rows = c.comparisons && c.comparisons.length > 0 ? c.comparisons : [null];
      for (const x of rows) {
        const tr = document.createElement('tr'); tr.dataset.check = c.check; tr.dataset.status = x ? x.status : c.status;
        const cells = [r.model + ' ' + (r.result.version || 'round ' + r.round), r.result.decision, c.check + (c.waived ? ' (waived)' : ''), x ? x.status : c.status,
          x ? x.statistic : c.reason, x ? fmt(x.estimate, x.unit) : '—', x ? x.side + ' ' + fmt(x.bound, x.unit) : '—',
          x ? (x.side === 'upper' ? '≤ ' : x.strict ? '> ' : '≥ ') + fmt(x.limit, x.unit) : '—', c.alpha == null ? '—' : Number(c.alpha.toPrecision(3)),
          x ? Object.entries(x.counts || {}).map(([k, v]) => v + ' ' + k).join(', ') : ''];
        cells.forEach((v, i) => { const td = document.createElement('td'); td.textContent = String(v); if (i === 1 || i === 3) td.className = String(v) === 'pass' ? 'promote' : String(v) === 'fail' ? 'reject' : String(v) === 'inconclusive' ? 'hold' : String(v); tr.appendChild(td); });
        tbody.appendChild(tr);
      }
    }
  }
}
async function refresh() {
  const [status, history] = await Promise.all([fetch('/v1/status').then(r => r.json()), fetch('/v1/history').then(r => r.json())]);
  document.getElementById('summary').textContent = 'version ' + status.version + ' · up ' + status.uptime_s + ' s · buffer ' + status.buffer.events + ' events (' + status.buffer.pending + ' pending) · dead letters ' + status.buffer.deadLetters;
  const tbody = document.querySelector('#models tbody'); tbody.innerHTML = '';
  for (const m of status.models || []) {
    const tr = document.createElement('tr');
    const pr = m.probation ? m.probation.version + ' ' + m.probation.status : '—';
    for (const v of [m.model, m.deployed ?? '—', m.serverName ?? '—', m.candidate ?? '—', m.lastDecision ?? '—', m.lastRound ?? '—', pr]) { const td = document.createElement('td'); td.textContent = String(v); tr.appendChild(td); }
    tbody.appendChild(tr);
  }
  const onProbation = (status.models || []).find(m => m.probation);
  if (onProbation) await drawProbation(onProbation.model);
  const rounds = history.rounds || [];
  drawChecks(rounds);
  const models = [...new Set(rounds.map(r => r.model))];
  const byModel = (f) => models.map(m => ({ name: m, points: rounds.filter(r => r.model === m && r.result[f] !== undefined && r.result[f] !== null).map(r => [r.at, r.result[f]]) }));
  draw('chart-loss', byModel('loss'));
  draw('chart-kl', models.flatMap(m => {
    const rs = rounds.filter(r => r.model === m), pick = f => rs.filter(r => r.result[f] != null).map(r => [r.at, r.result[f]]);
    return [{ name: m + ' round', points: pick('klRound') }, { name: m + ' round budget', points: pick('klBudgetRound'), dashed: true },
      { name: m + ' cumulative', points: pick('klCumulative') }, { name: m + ' cumulative budget', points: pick('klBudgetCumulative'), dashed: true }];
  }));
  draw('chart-reward', byModel('rewardLcb'));
  draw('chart-unsafe', models.flatMap(m => {
    const rs = rounds.filter(r => r.model === m), pick = f => rs.filter(r => r.result[f] != null).map(r => [r.at, r.result[f]]);
    return [{ name: m + ' unsafe UCB', points: pick('unsafeUcb') }, { name: m + ' limit', points: pick('unsafeLimit'), dashed: true }];
  }));
  draw('chart-judged', models.flatMap(m => {
    const rs = rounds.filter(r => r.model === m), pick = f => rs.filter(r => r.result[f] != null).map(r => [r.at, r.result[f]]);
    return [{ name: m + ' candidate', points: pick('unsafeRate') }, { name: m + ' deployed', points: pick('unsafeRateDeployed'), dashed: true }];
  }));
  const level = { promote: 1, hold: 0, reject: -1, discarded: -2 };
  draw('chart-decisions', models.map(m => ({ name: m, points: [], markers: rounds.filter(r => r.model === m).map(r => ({ t: r.at, y: level[r.result.decision] ?? 0, cls: r.result.decision })) })));
  draw('chart-ingest', [{ name: 'events/s', points: (history.ingest || []).map(s => [s.t, s.eventsPerS]) }]);
  document.body.dataset.loaded = String(Date.now());
}
function chartCard(parent, id, title) {
  let svg = document.getElementById(id);
  if (svg) return;
  const card = document.createElement('div'); card.className = 'card';
  const h = document.createElement('h2'); h.textContent = title; card.appendChild(h);
  svg = document.createElementNS(NS, 'svg'); svg.id = id; svg.dataset.points = '0'; card.appendChild(svg);
  const legend = document.createElement('div'); legend.className = 'legend'; legend.id = id.replace('chart', 'legend'); card.appendChild(legend);
  parent.appendChild(card);
}
// One probation: per compared signal, both versions with their confidence sequences, and the difference.
async function drawProbation(model) {
  const { probation: p } = await fetch('/v1/models/' + encodeURIComponent(model) + '/probation').then(r => r.json());
  const box = document.getElementById('probation');
  if (!p) { box.hidden = true; return; }
  box.hidden = false;
  const f = p.figures || { metrics: [], canaryEvents: 0, baselineEvents: 0 };
  document.getElementById('probation-summary').textContent = model + ' ' + p.version + ' against ' + p.previous + ' since ' + p.started_at +
    (p.canary_weight === null ? ' · all traffic' : ' · canary weight ' + Math.round(p.canary_weight * 100) + '%') +
    ' · ' + f.canaryEvents + ' feedback events on ' + p.version + ', ' + f.baselineEvents + ' on ' + p.previous +
    (f.exposures && f.exposures.canary + f.exposures.baseline > 0 ? ' · exposures ' + f.exposures.canary + ' / ' + f.exposures.baseline : '') + ' · ' + p.status;
  const dec = document.getElementById('probation-decision');
  dec.className = p.decision ? p.decision.outcome : 'watching';
  dec.dataset.outcome = p.decision ? p.decision.outcome : '';
  dec.textContent = p.decision ? p.decision.outcome + ' (' + p.decision.by + ', ' + p.decision.at + '): ' + p.decision.reason : 'watching: no decision yet';
  const tl = p.timeline || [];
  const charts = document.getElementById('probation-charts');
  for (const m of f.metrics) {
    const pts = tl.filter(q => q.metrics[m.metric]);
    if (pts.length === 0) continue;
    const id = 'chart-probation-' + m.metric;
    // x: feedback events on the new version, the sequences' own clock (feedback arrives in bursts).
    chartCard(charts, id, m.metric + ': ' + p.version + ' and ' + p.previous + ' (harm, confidence sequences; x: events on ' + p.version + ')');
    chartCard(charts, id + '-difference', m.metric + ': ' + p.version + ' − ' + p.previous + ' (0 and the margin ' + m.margin + ')');
    const s = (arm, k, name, color, dashed) => ({ name, color, dashed, points: pts.map(q => [q.canaryEvents, q.metrics[m.metric][arm][k]]) });
    draw(id, [s('canary', 0, p.version, '#cf222e'), s('canary', 1, p.version + ' lower', '#cf222e', true), s('canary', 2, p.version + ' upper', '#cf222e', true),
      s('baseline', 0, p.previous, '#0969da'), s('baseline', 1, p.previous + ' lower', '#0969da', true), s('baseline', 2, p.previous + ' upper', '#0969da', true)]);
    const last = pts[pts.length - 1];
    const ends = [pts[0].canaryEvents, last.canaryEvents];
    const marker = p.decision ? [{ t: last.canaryEvents, y: last.metrics[m.metric].difference[0], cls: p.decision.outcome }] : [];
    draw(id + '-difference', [{ name: 'difference', color: '#8250df', points: pts.map(q => [q.canaryEvents, q.metrics[m.metric].difference[0]]), markers: marker },
      s('difference', 1, 'lower', '#8250df', true), s('difference', 2, 'upper', '#8250df', true),
      { name: '0', color: '#6e7781', points: ends.map(x => [x, 0]) }, { name: 'margin', color: '#9a6700', dashed: true, points: ends.map(x => [x, m.margin]) }]);
  }
}
refresh().catch(e => { document.getElementById('summary').textContent = 'status unavailable: ' + e.message; });
setInterval(() => refresh().catch(() => {}), 5000);
</script>
</body></html>
`;

/**
 * The page's Content-Security-Policy: only its own inline script (by hash, CSP Level 2) and
 * styles, fetches to this origin only, no framing. Computed from the page, so an edit of the
 * script cannot leave a stale hash behind.
 */
export const STATUS_PAGE_CSP = ((): string => {
  const script = /<script>([\s\S]*?)<\/script>/.exec(STATUS_PAGE)?.[1] ?? '';
  const sha = createHash('sha256').update(script, 'utf8').digest('base64');
  return `default-src 'none'; script-src 'sha256-${sha}'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;
})();
