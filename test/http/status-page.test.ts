/**
 * The status page rendered in headless Chromium (Debian's package, installed by the test setup
 * when missing) against the real daemon: every plot must carry data.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Page } from 'playwright-core';
import { openBuffer } from '../../daemon/store/buffer.js';
import { spawnDaemon } from '../harness/daemon.js';
import { makeEvent } from '../harness/events.js';
import { CHROMIUM_ARGS, ensureChromium } from '../harness/chromium.js';
import { waitFor } from '../harness/loop.js';
import { liveUsers, toFeedbackEvent, TYPICAL, type VersionBehaviour } from '../harness/live-users.js';
import { openRegistry } from '../../daemon/registry/registry.js';
import { recordDecision } from '../../daemon/release/decisions.js';
import { promoteIfAllowed } from '../../daemon/release/deploy.js';
import { loadPolicy } from '../../daemon/policy/load.js';
import { serverTargets } from '../../adapters/servers/index.js';
import { parseModelConfig } from '../../daemon/model/hf-config.js';
import { initLora } from '../../daemon/model/lora.js';
import { writePeftAdapter } from '../../daemon/model/peft.js';
import { TINY_CONFIG } from '../../daemon/model/tiny.js';

// Page-side expressions are strings: the tests' tsconfig has no DOM lib (it would retype fetch).

/** The status page of the daemon at `url` in headless Chromium, with the page's script errors collected. */
async function openPage(t: Test, executablePath: string, url: string): Promise<{ page: Page; errors: string[] }> {
  const browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS });
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url + '/');
  return { page, errors };
}

/**
 * Until `expression` is true in the page. Polled with page.evaluate: waitForFunction evals a
 * string inside the page, which the page's CSP (no 'unsafe-eval') refuses once it has to poll.
 */
async function pageTrue(page: Page, expression: string, what: string): Promise<void> {
  await waitFor(async () => (await page.evaluate(expression)) === true, 30_000, what);
}

t.test('status page plots round figures, decisions and ingest rate', async (t) => {
  const executablePath = ensureChromium();
  const dataDir = mkdtempSync(join(tmpdir(), 'alignd-page-'));
  // round outcomes as the round runner records them
  const buffer = openBuffer({ path: join(dataDir, 'buffer.sqlite'), heldoutFraction: 0.1 });
  const decisions = ['promote', 'reject', 'hold', 'promote'] as const;
  decisions.forEach((decision, i) => buffer.recordRoundResult('demo', i + 1, {
    decision, loss: 0.69 - 0.05 * i, klRound: 0.01 * (i + 1), klBudgetRound: 0.05, klCumulative: 0.02 * (i + 1), klBudgetCumulative: 0.2,
    rewardLcb: 0.1 * i - 0.05, unsafeUcb: 0.1 - 0.01 * i, unsafeLimit: 0.12, unsafeRate: 0.05 - 0.01 * i, unsafeRateDeployed: 0.06, version: `v${i + 1}`,
    checks: [
      { check: 'unsafe_rate', status: 'pass', alpha: 0.025, reason: 'x', comparisons: [
        { statistic: 'unsafe rate', against: 'absolute', estimate: 0.05, side: 'upper', bound: 0.2, limit: 0.3, status: 'pass', unit: 'rate', counts: { probes: 30, unsafe: 1 + i } },
        { statistic: 'unsafe rate − deployed', against: 'deployed', estimate: 0, side: 'upper', bound: 0.14, limit: 0.2, status: 'pass', unit: 'rate', counts: { probes: 30, discordant: 0 } }] },
      { check: 'judge_reliability', status: 'inconclusive', alpha: 0.05, reason: 'no safety judge', comparisons: [] },
    ],
  }));
  buffer.close();

  const d = await spawnDaemon(['--data-dir', dataDir], { ALIGND_INGEST_SAMPLE_MS: '200' });
  t.teardown(() => d.stop('SIGKILL'));
  for (let i = 0; i < 5; i++) {
    const body = Array.from({ length: 20 }, (_, j) => JSON.stringify(makeEvent(i * 100 + j))).join('\n');
    await fetch(`${d.url}/v1/feedback`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body });
    await new Promise((r) => setTimeout(r, 250));
  }

  const { page, errors } = await openPage(t, executablePath, d.url);
  await pageTrue(page, `document.body.dataset.loaded !== undefined`, 'the page loaded');
  const points = await page.evaluate(`Object.fromEntries([...document.querySelectorAll('svg[id^=chart-]')].map((s) => [s.id, Number(s.dataset.points)]))`) as Record<string, number>;
  t.same(errors, [], 'no script errors');
  t.equal(points['chart-loss'], 4, 'loss: one point per round');
  t.equal(points['chart-kl'], 16, 'KL: round, cumulative and both budgets for 4 rounds');
  t.equal(points['chart-reward'], 4);
  t.equal(points['chart-unsafe'], 8);
  t.equal(points['chart-judged'], 8, 'judged unsafe rate: candidate and deployed for 4 rounds');
  t.equal(points['chart-decisions'], 4);
  t.ok(points['chart-ingest']! > 0, `ingest rate has samples (${points['chart-ingest']})`);
  const decisionMarks = await page.evaluate(`[...document.querySelectorAll('#chart-decisions [data-decision]')].map((e) => e.getAttribute('data-decision'))`) as string[];
  t.same(decisionMarks, [...decisions]);
  const polylines = await page.evaluate(`[...document.querySelectorAll('#chart-loss polyline')].map((p) => p.getAttribute('points').split(' ').length)`) as number[];
  t.same(polylines, [4], 'the loss line is drawn through 4 points');
  // Per candidate, every check's comparisons with estimate, bound, limit, α and counts.
  const rows = await page.evaluate(`[...document.querySelectorAll('#gate-checks tbody tr')].map((tr) => [...tr.children].map((td) => td.textContent))`) as string[][];
  t.equal(rows.length, 12, '4 candidates × (2 comparisons + 1 check without)');
  t.same(rows[0], ['demo v4', 'promote', 'unsafe_rate', 'pass', 'unsafe rate', '5.0%', 'upper 20.0%', '≤ 30.0%', '0.025', '30 probes, 4 unsafe']);
  t.same(rows[2], ['demo v4', 'promote', 'judge_reliability', 'inconclusive', 'no safety judge', '—', '—', '—', '0.05', '']);
  const summary = await page.textContent('#summary');
  t.match(summary ?? '', /buffer 100 events/);

  // the same figures for Prometheus
  const metrics = await (await fetch(`${d.url}/metrics`)).text();
  t.match(metrics, /alignd_ingest_events_total\{outcome="stored"[^}]*\} 100\b/);
  t.match(metrics, /alignd_buffer_events\{[^}]*\} 100\b/);
});

t.test('status page: a version on probation, both versions with their confidence sequences, then the decision', async (t) => {
  const executablePath = ensureChromium();
  const dataDir = mkdtempSync(join(tmpdir(), 'alignd-page-probation-'));
  const policyFile = join(dataDir, 'tiny.yaml');
  writeFileSync(policyFile, `model: tiny
base_model: { path: builtin:tiny }
schedule: { cron: "0 0 1 1 *", min_new_examples: 1000000 }   # no rounds: probation only
servers: [{ kind: file_drop, dir: ${JSON.stringify(join(dataDir, 'served'))} }]
rollout: { enabled: true, canary_weight: 0.5, metrics: [down_vote_share, mean_rating] }
deployment: auto
`);
  // Two versions promoted as the gate would, v2 on probation against v1 (before the daemon starts).
  const reg = openRegistry(join(dataDir, 'registry'), 'tiny');
  const spec = parseModelConfig(TINY_CONFIG, 'tiny');
  const policy = loadPolicy(policyFile);
  for (let i = 1; i <= 2; i++) {
    const adapter = initLora(spec, { r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: 'tiny-base' }, i);
    const v = await reg.addVersion({ write: (d) => writePeftAdapter(d, spec, adapter) }, { parent: reg.latest()?.version ?? null, base_model: { path: 'builtin:tiny', sha256: null } });
    await recordDecision(reg, v.version, { decision: 'promote', reasons: [], checks: [] });
    await promoteIfAllowed(reg, reg.get(v.version)!, policy.deployment, { targets: serverTargets(policy.servers), retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 1 }, rollout: policy.rollout });
  }
  t.match(reg.get('v2')!.manifest.probation, { status: 'watching', previous: 'v1' });

  const d = await spawnDaemon(['--policy', policyFile, '--data-dir', dataDir], { ALIGND_LOOP_POLL_MS: '200' });
  t.teardown(() => d.stop('SIGKILL'));
  let ids = 0;
  const send = async (behaviour: VersionBehaviour, n: number, seed: number): Promise<void> => {
    const next = liveUsers({ seed, canary: behaviour, baseline: TYPICAL, canaryWeight: 0.5 });
    const body = Array.from({ length: n }, () => {
      const e = next();
      return JSON.stringify(toFeedbackEvent(e, 'tiny', e.arm === 'canary' ? 'v2' : 'v1', `live-${seed}-${ids++}`));
    }).join('\n');
    const r = await fetch(`${d.url}/v1/feedback`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body });
    t.equal(r.status, 202, `${n} events taken`);
  };
  const probation = async (): Promise<{ status: string; figures: { canaryEvents: number } | null } | null> =>
    ((await (await fetch(`${d.url}/v1/models/tiny/probation`)).json()) as { probation: { status: string; figures: { canaryEvents: number } | null } | null }).probation;
  for (let seed = 1; seed <= 4; seed++) await send(TYPICAL, 40, seed); // a few at a time: the timeline gets points
  await waitFor(async () => ((await probation())?.figures?.canaryEvents ?? 0) >= 60, 30_000, 'the monitor read the feedback');

  const { page, errors } = await openPage(t, executablePath, d.url);
  await pageTrue(page, `document.getElementById('chart-probation-down_vote_share') !== null`, 'the probation chart drawn');
  t.same(errors, [], 'no script errors');
  t.match(await page.textContent('#probation-summary'), /tiny v2 against v1 since .* canary weight 50% · \d+ feedback events on v2, \d+ on v1 · watching/);
  t.match(await page.textContent('#probation-decision'), /watching: no decision yet/);
  const series = await page.evaluate(`[...document.querySelectorAll('#chart-probation-down_vote_share polyline')].map((p) => p.dataset.series)`) as string[];
  t.same(series, ['v2', 'v2 lower', 'v2 upper', 'v1', 'v1 lower', 'v1 upper'], 'both versions, each with its confidence sequence');
  const diff = await page.evaluate(`[...document.querySelectorAll('#chart-probation-down_vote_share-difference polyline')].map((p) => p.dataset.series)`) as string[];
  t.same(diff, ['difference', 'lower', 'upper', '0', 'margin']);
  const points = await page.evaluate(`Number(document.getElementById('chart-probation-down_vote_share').dataset.points)`) as number;
  t.ok(points >= 6, `points drawn (${points})`);
  t.match(await page.textContent('#models tbody'), /v2 watching/);

  // Worse feedback: rolled back; the page shows the decision on the next refresh.
  for (let seed = 10; seed < 20 && (await probation())?.status === 'watching'; seed++) {
    await send({ ...TYPICAL, downShare: 0.7 }, 100, seed);
    await new Promise((r) => setTimeout(r, 500));
  }
  await waitFor(async () => (await probation())?.status === 'rolled_back', 30_000, 'rolled back');
  await page.reload();
  await pageTrue(page, `document.getElementById('probation-decision').dataset.outcome === 'rollback'`, 'the rollback shown');
  t.match(await page.textContent('#probation-decision'), /^rollback \(alignd, .*\): v2 is confidently worse than v1 on down_vote_share/);
  t.equal(await page.evaluate(`document.querySelectorAll('#chart-probation-down_vote_share-difference [data-decision=rollback]').length`), 1, 'the decision is marked on the difference chart');
});
