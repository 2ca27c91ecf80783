/**
 * Abuse of the ingest path and the buffer, in process on a real SQLite file: events for models no
 * policy serves, conflicting event ids, invalid encodings and clocks, dead letters.
 */
import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createIngest } from '../../daemon/ingest/pipeline.js';
import { defaultLimits } from '../../daemon/feedback/schema.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import { makeEvent } from '../harness/events.js';
import { spawnDaemon } from '../harness/daemon.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'alignd-faults-ingest-'));
const raw = (e: unknown, line = 1) => ({ bytes: Buffer.from(typeof e === 'string' ? e : JSON.stringify(e)), origin: { source: 'http' as const, line } });

t.test('events for a model no policy serves are refused with a reason; --ingest-only takes every model', async (t) => {
  const buffer = openBuffer({ path: join(tmp(), 'buffer.sqlite'), heldoutFraction: 0.1 });
  t.teardown(() => buffer.close());
  const served = new Set(['demo']);
  const ingest = createIngest({ buffer, limits: defaultLimits, models: () => served });
  const out = ingest.ingestBatch([raw(makeEvent(1)), raw(makeEvent(2, { model: 'other' }))]);
  t.equal(out[0]!.status, 'stored');
  t.match(out[1], { status: 'rejected', code: 'unknown_model', path: 'model', eventId: 'ev-2' });
  t.match((out[1] as { reason: string }).reason, /no policy .* serves model "other" \(served: demo\)/);
  t.equal(ingest.stats.rejected.unknown_model, 1);
  t.equal(buffer.counts().events, 1, 'nothing stored for the unknown model');
  const open = createIngest({ buffer, limits: defaultLimits });
  t.equal(open.ingestBatch([raw(makeEvent(3, { model: 'other' }))])[0]!.status, 'stored', 'without a model set, any model is taken');
});

t.test('a conflicting event_id is refused and kept as a dead letter where the source has no DLQ topic', async (t) => {
  const buffer = openBuffer({ path: join(tmp(), 'buffer.sqlite'), heldoutFraction: 0.1 });
  t.teardown(() => buffer.close());
  const ingest = createIngest({ buffer, limits: defaultLimits });
  const first = makeEvent(10, { kind: 'edit' });
  const other = { ...first, edited: 'something else entirely' };
  const out = ingest.ingestBatch([raw(first, 1), raw(first, 2), raw(other, 3)], { recordRejects: true });
  t.same(out.map((o) => o.status), ['stored', 'duplicate', 'rejected']);
  t.match(out[2], { code: 'conflict', eventId: 'ev-10' });
  const dl = buffer.db.prepare('SELECT code, event_id, bytes FROM dead_letters').all() as Array<{ code: string; event_id: string; bytes: Buffer }>;
  t.same(dl.map((r) => [r.code, r.event_id]), [['conflict', 'ev-10']]);
  t.equal(dl[0]!.bytes.toString(), JSON.stringify(other), 'the refused bytes are kept as sent');
  const stored = buffer.db.prepare('SELECT body FROM events WHERE event_id = ?').get('ev-10') as { body: string };
  t.equal((JSON.parse(stored.body) as { edited: string }).edited, first.kind === 'edit' ? first.edited : '', 'the first event stays');
});

t.test('the clock check uses the configured skew', async (t) => {
  const buffer = openBuffer({ path: join(tmp(), 'buffer.sqlite'), heldoutFraction: 0.1 });
  t.teardown(() => buffer.close());
  const now = Date.parse('2026-11-02T00:00:00Z');
  const ingest = createIngest({ buffer, limits: { ...defaultLimits, maxFutureSkewS: 60 }, now: () => now });
  const at = (s: number): string => new Date(now + s * 1000).toISOString();
  const out = ingest.ingestBatch([raw(makeEvent(20, { ts: at(59) })), raw(makeEvent(21, { ts: at(61) }))]);
  t.equal(out[0]!.status, 'stored');
  t.match(out[1], { status: 'rejected', code: 'schema', path: 'ts' });
});

t.test('poisoning caps: a fresh user id per event, or none, does not buy a bigger share of the window', async (t) => {
  let clock = Date.parse('2026-11-01T00:00:00Z');
  const buffer = openBuffer({ path: join(tmp(), 'buffer.sqlite'), heldoutFraction: 0, now: () => clock });
  t.teardown(() => buffer.close());
  const ingest = createIngest({ buffer, limits: defaultLimits, now: () => clock });
  const pref = (id: string, user: string | undefined, i: number) => {
    const e = makeEvent(i, { kind: 'preference', event_id: id }) as Record<string, unknown>;
    return raw({ ...e, source: user === undefined ? {} : { user, tenant: 't0' } });
  };
  // 20 established users: 5 events each, three days before the attack
  ingest.ingestBatch(Array.from({ length: 100 }, (_, i) => pref(`old-${i}`, `honest-${i % 20}`, i)));
  clock += 3 * 24 * 3_600_000;
  ingest.ingestBatch(Array.from({ length: 100 }, (_, i) => pref(`new-${i}`, `honest-${i % 20}`, 100 + i)));
  // the attack: 900 events, a fresh user id for each
  ingest.ingestBatch(Array.from({ length: 900 }, (_, i) => pref(`sybil-${i}`, `sybil-${i}`, 1000 + i)));
  buffer.deriveAll();
  const share = (w: { examples: Array<{ user: string | null }> }): number => w.examples.filter((e) => e.user?.startsWith('sybil-') ?? true).length / w.examples.length;
  const base = { model: 'demo', types: ['pair' as const], replayFraction: 0, seed: 1, maxUserShare: 0.05, maxTenantShare: 1, now: clock };
  const perUserOnly = buffer.window(base);
  t.ok(share(perUserOnly) > 0.8, `the per-user cap alone lets them in (${(share(perUserOnly) * 100).toFixed(0)}% of the window)`);
  const capped = buffer.window({ ...base, newUsers: { minEvents: 3, minAgeMs: 24 * 3_600_000, maxShare: 0.25 } });
  t.ok(share(capped) <= 0.25, `new users together stay within 25% (${(share(capped) * 100).toFixed(1)}%)`);
  t.ok(capped.examples.length >= 150, `the honest examples stay (${capped.examples.length} kept)`);
  t.ok(capped.cappedBy.newUsers > 0, `the drops are attributed to the new-users rule (${JSON.stringify(capped.cappedBy)})`);

  // the same attack without source.user: one anonymous user, capped like any user
  const anon = openBuffer({ path: join(tmp(), 'buffer.sqlite'), heldoutFraction: 0, now: () => clock });
  t.teardown(() => anon.close());
  const anonIngest = createIngest({ buffer: anon, limits: defaultLimits, now: () => clock });
  anonIngest.ingestBatch(Array.from({ length: 200 }, (_, i) => pref(`h-${i}`, `honest-${i % 40}`, i)));
  anonIngest.ingestBatch(Array.from({ length: 900 }, (_, i) => pref(`anon-${i}`, undefined, 1000 + i)));
  anon.deriveAll();
  const w = anon.window(base);
  t.ok(share(w) <= 0.05, `events without a user are one user under the per-user cap (${(share(w) * 100).toFixed(1)}%)`);
  t.ok(w.cappedBy.user >= 850);

  // safety reports go through the same caps
  anonIngest.ingestBatch(Array.from({ length: 300 }, (_, i) => raw({ ...makeEvent(5000 + i, { kind: 'safety_report', event_id: `rep-${i}` }), source: {} })));
  anonIngest.ingestBatch(Array.from({ length: 40 }, (_, i) => raw({ ...makeEvent(6000 + i, { kind: 'safety_report', event_id: `rep-h-${i}` }), source: { user: `honest-${i}` } })));
  anon.deriveAll();
  const reports = anon.window({ ...base, types: ['safety'] });
  t.ok(reports.examples.filter((e) => e.user === null).length <= 0.05 * reports.examples.length, `a flood of anonymous safety reports is capped (${reports.examples.length} kept)`);
});

t.test('the counts status and metrics read are kept up to date: they equal a count of the tables', async (t) => {
  let clock = Date.parse('2026-11-01T00:00:00Z');
  const path = join(tmp(), 'buffer.sqlite');
  const buffer = openBuffer({ path, heldoutFraction: 0.1, now: () => clock });
  const ingest = createIngest({ buffer, limits: defaultLimits, now: () => clock });
  const recount = (): unknown => {
    const other = openBuffer({ path, heldoutFraction: 0.1 });
    try { return other.counts(); } finally { other.close(); }
  };
  for (let round = 0; round < 6; round++) {
    const batch = Array.from({ length: 120 }, (_, i) => {
      const n = round * 100 + i; // 20 ids overlap the previous round: duplicates
      if (i % 37 === 0) return raw('{"broken');
      return raw(makeEvent(n, { ...(i % 41 === 0 ? { prompt: 'changed' } : {}) }), i + 1);
    });
    ingest.ingestBatch(batch, { recordRejects: round % 2 === 0 });
    buffer.deriveSome(150);
    t.same(buffer.counts(), recount(), `round ${round}: after inserts, refusals and derivation`);
    clock += 10 * 86_400_000;
    buffer.retainSlice({ maxAgeMs: 25 * 86_400_000 }, 70);
    buffer.retainSlice({ maxEvents: 300 }, 40);
    t.same(buffer.counts(), recount(), `round ${round}: after retention slices`);
  }
  buffer.close();
});

t.test('retention runs on its own: at start and on a schedule, in slices, dead letters too', async (t) => {
  const dataDir = tmp();
  const old = Date.now() - 100 * 86_400_000;
  const seed = openBuffer({ path: join(dataDir, 'buffer.sqlite'), heldoutFraction: 0.1, now: () => old });
  const seedIngest = createIngest({ buffer: seed, limits: defaultLimits }); // ingested 100 days ago (the buffer's clock), ts checked against now
  seedIngest.ingestBatch([...Array.from({ length: 12_000 }, (_, i) => raw(makeEvent(i))), raw('{"old dead letter')], { recordRejects: true });
  seed.deriveAll();
  seed.close();
  const config = join(dataDir, 'alignd.yaml');
  writeFileSync(config, 'ingest:\n  retention: { maxAgeDays: 30 }\n');
  const d = await spawnDaemon(['--data-dir', dataDir, '--config', config]);
  t.teardown(() => d.stop('SIGKILL'));
  const status = async (): Promise<{ events: number; retired: number; deadLetters: number }> =>
    ((await (await fetch(`${d.url}/v1/status`)).json()) as { buffer: { events: number; retired: number; deadLetters: number } }).buffer;
  let s = await status();
  for (let i = 0; i < 300 && s.retired < 12_000; i++) {
    await new Promise((r) => setTimeout(r, 100));
    s = await status();
  }
  t.match(s, { events: 0, retired: 12_000, deadLetters: 0 }, 'the daemon retired 100-day-old events and dead letters by itself');
  t.ok(d.logs.some((l) => l.includes('retention: old feedback retired')), 'and said so');
  const r = await fetch(`${d.url}/v1/feedback`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(makeEvent(3)) });
  t.same(await r.json(), { stored: 0, duplicates: 1, rejected: [] }, 'a late replay of a retired event is still a duplicate');
});
