/**
 * The status page rendered in headless Chromium (Debian's package, installed by the test setup
 * when missing) against the real daemon: every plot must carry data.
 */
import t from 'tap';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { openBuffer } from '../../daemon/store/buffer.js';
import { spawnDaemon } from '../harness/daemon.js';
import { makeEvent } from '../harness/events.js';
import { CHROMIUM_ARGS, ensureChromium } from '../harness/chromium.js';

// Page-side expressions are strings: the tests' tsconfig has no DOM lib (it would retype fetch).

t.test('status page plots round figures, decisions and ingest rate', async (t) => {
  const executablePath = ensureChromium();
  const dataDir = mkdtempSync(join(tmpdir(), 'alignd-page-'));
  // round outcomes as the round runner records them
  const buffer = openBuffer({ path: join(dataDir, 'buffer.sqlite'), heldoutFraction: 0.1 });
  const decisions = ['promote', 'reject', 'hold', 'promote'] as const;
  decisions.forEach((decision, i) => buffer.recordRoundResult('demo', i + 1, {
    decision, loss: 0.69 - 0.05 * i, klRound: 0.01 * (i + 1), klBudgetRound: 0.05, klCumulative: 0.02 * (i + 1), klBudgetCumulative: 0.2,
    rewardLcb: 0.1 * i - 0.05, unsafeUcb: 0.1 - 0.01 * i, unsafeLimit: 0.12,
  }));
  buffer.close();

  const d = await spawnDaemon(['--data-dir', dataDir], { ALIGND_INGEST_SAMPLE_MS: '200' });
  t.teardown(() => d.stop('SIGKILL'));
  for (let i = 0; i < 5; i++) {
    const body = Array.from({ length: 20 }, (_, j) => JSON.stringify(makeEvent(i * 100 + j))).join('\n');
    await fetch(`${d.url}/v1/feedback`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body });
    await new Promise((r) => setTimeout(r, 250));
  }

  const browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS });
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(d.url + '/');
  await page.waitForFunction(`document.body.dataset.loaded !== undefined`, undefined, { timeout: 30_000 });
  const points = await page.evaluate(`Object.fromEntries([...document.querySelectorAll('svg[id^=chart-]')].map((s) => [s.id, Number(s.dataset.points)]))`) as Record<string, number>;
  t.same(errors, [], 'no script errors');
  t.equal(points['chart-loss'], 4, 'loss: one point per round');
  t.equal(points['chart-kl'], 16, 'KL: round, cumulative and both budgets for 4 rounds');
  t.equal(points['chart-reward'], 4);
  t.equal(points['chart-unsafe'], 8);
  t.equal(points['chart-decisions'], 4);
  t.ok(points['chart-ingest']! > 0, `ingest rate has samples (${points['chart-ingest']})`);
  const decisionMarks = await page.evaluate(`[...document.querySelectorAll('#chart-decisions [data-decision]')].map((e) => e.getAttribute('data-decision'))`) as string[];
  t.same(decisionMarks, [...decisions]);
  const polylines = await page.evaluate(`[...document.querySelectorAll('#chart-loss polyline')].map((p) => p.getAttribute('points').split(' ').length)`) as number[];
  t.same(polylines, [4], 'the loss line is drawn through 4 points');
  const summary = await page.textContent('#summary');
  t.match(summary ?? '', /buffer 100 events/);

  // the same figures for Prometheus
  const metrics = await (await fetch(`${d.url}/metrics`)).text();
  t.match(metrics, /alignd_ingest_events_total\{outcome="stored"[^}]*\} 100\b/);
  t.match(metrics, /alignd_buffer_events\{[^}]*\} 100\b/);
});
