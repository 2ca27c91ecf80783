import t from 'tap';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openBuffer } from '../../daemon/store/buffer.js';
import { createIngest } from '../../daemon/ingest/pipeline.js';
import { defaultLimits } from '../../daemon/feedback/schema.js';
import { badInputs, makeEvent } from '../harness/events.js';
import type { RawFeedback } from '../../daemon/feedback/sink.js';

const raw = (v: unknown): RawFeedback => ({ bytes: Buffer.isBuffer(v) ? v : Buffer.from(JSON.stringify(v)), origin: { source: 'cli' } });

function fresh(heldoutFraction = 0) {
  const dir = mkdtempSync(join(tmpdir(), 'alignd-ingest-'));
  const buffer = openBuffer({ path: join(dir, 'buffer.sqlite'), heldoutFraction });
  const ingest = createIngest({ buffer, limits: { ...defaultLimits, maxEventBytes: 4096 } });
  return { dir, buffer, ingest };
}

t.test('valid, duplicate and bad messages get one outcome each, in order', async (t) => {
  const { buffer, ingest } = fresh();
  const bad = badInputs(4096);
  const batch = [raw(makeEvent(1)), raw(makeEvent(2)), raw(makeEvent(1)), ...bad.map((b) => raw(b.bytes))];
  const out = ingest.ingestBatch(batch);
  t.same(out.slice(0, 3).map((o) => o.status), ['stored', 'stored', 'duplicate']);
  bad.forEach((b, i) => {
    const o = out[3 + i]!;
    t.equal(o.status, 'rejected', b.name);
    if (o.status === 'rejected') {
      t.equal(o.code, b.code, `${b.name} → ${b.code}`);
      t.ok(o.reason.length > 5, `${b.name} has a reason: ${o.reason}`);
    }
  });
  const missing = out[3 + bad.findIndex((b) => b.name === 'missing chosen')]!;
  t.equal(missing.status === 'rejected' && missing.path, 'chosen', 'zod path names the field');
  t.equal(buffer.counts().events, 2);
  t.equal(ingest.stats.duplicates, 1);
  t.equal(ingest.stats.rejected.oversize, 1);
  // a replay of the whole batch stores nothing new
  const again = ingest.ingestBatch(batch.slice(0, 2));
  t.same(again.map((o) => o.status), ['duplicate', 'duplicate']);
  t.equal(buffer.counts().events, 2);
  buffer.close();
});

t.test('recordRejects keeps the original bytes in dead_letters, in the same transaction', async (t) => {
  const { buffer, ingest } = fresh();
  const bytes = Buffer.from('not json at all');
  ingest.ingestBatch([raw(makeEvent(5)), { bytes, origin: { source: 'file', file: 'x.jsonl', line: 2 } }], { recordRejects: true, checkpoint: { key: 'file:x', value: '99' } });
  const rows = buffer.db.prepare('SELECT code, bytes, origin FROM dead_letters').all() as Array<{ code: string; bytes: Buffer; origin: string }>;
  t.equal(rows.length, 1);
  t.equal(rows[0]!.code, 'not_json');
  t.same(rows[0]!.bytes, bytes);
  t.same(JSON.parse(rows[0]!.origin), { source: 'file', file: 'x.jsonl', line: 2 });
  t.equal(buffer.checkpoint('file:x'), '99');
  buffer.close();
});

t.test('derivation: every kind becomes the examples feedback/derive.ts names', async (t) => {
  const { buffer, ingest } = fresh();
  const p = 'same prompt';
  const events = [
    makeEvent(1, { kind: 'preference', prompt: 'a' }),
    makeEvent(2, { kind: 'edit', prompt: 'b' }),
    makeEvent(3, { kind: 'binary', prompt: p, response: 'r-up', label: 'up' }),
    makeEvent(4, { kind: 'binary', prompt: p, response: 'r-down', label: 'down' }),
    makeEvent(5, { kind: 'binary', prompt: p, response: 'r-down-2', label: 'down' }),
    makeEvent(6, { kind: 'rating', prompt: 'c', response: 'low', score: 1 }),
    makeEvent(7, { kind: 'rating', prompt: 'c', response: 'high', score: 5 }),
    makeEvent(8, { kind: 'rating', prompt: 'c', response: 'mid', score: 3 }),
    makeEvent(9, { kind: 'safety_report', prompt: 'd' }),
  ];
  ingest.ingestBatch(events.map(raw));
  t.equal(buffer.pending(), 9);
  t.equal(buffer.deriveAll(), 9);
  t.equal(buffer.pending(), 0);
  const pairs = buffer.window({ model: 'demo', types: ['pair'], replayFraction: 0, seed: 1 }).examples;
  const byOrigin = (k: string) => pairs.filter((e) => e.originKind === k);
  t.equal(byOrigin('preference').length, 1);
  t.same(byOrigin('edit').map((e) => [e.chosen, e.rejected]), [['edited draft 2', 'draft 2']]);
  const bin = byOrigin('binary');
  t.equal(bin.length, 1, 'one up and two downs make one pair: each event joins at most one');
  t.same([bin[0]!.chosen, bin[0]!.rejected], ['r-up', 'r-down']);
  const rat = byOrigin('rating').map((e) => [e.chosen, e.rejected, Number(e.margin!.toFixed(2))]);
  t.same(rat.sort(), [['high', 'low', 1], ['high', 'mid', 0.5], ['mid', 'low', 0.5]].sort());
  const counts = buffer.counts().examples;
  t.equal(counts['kto'], 3);
  t.equal(counts['sft'], 1);
  t.equal(counts['safety'], 1);
  buffer.close();
});

t.test('held-out split is deterministic by event_id and never in a training window', async (t) => {
  const { buffer, ingest } = fresh(0.2);
  ingest.ingestBatch(Array.from({ length: 500 }, (_, i) => raw(makeEvent(i, { kind: 'preference' }))));
  buffer.deriveAll();
  const held = buffer.heldout('demo', ['pair'], 10_000);
  t.ok(held.length > 60 && held.length < 140, `about 20% held out (${held.length}/500)`);
  const win = buffer.window({ model: 'demo', types: ['pair'], replayFraction: 0, seed: 3 });
  const heldIds = new Set(held.map((e) => e.eventIds[0]));
  t.equal(win.examples.filter((e) => heldIds.has(e.eventIds[0])).length, 0);
  t.equal(win.examples.length + held.length, 500);
  // the same ids land on the same side in a second buffer
  const other = fresh(0.2);
  other.ingest.ingestBatch(Array.from({ length: 500 }, (_, i) => raw(makeEvent(i, { kind: 'preference' }))));
  other.buffer.deriveAll();
  t.same(other.buffer.heldout('demo', ['pair'], 10_000).map((e) => e.eventIds[0]), held.map((e) => e.eventIds[0]));
  buffer.close();
  other.buffer.close();
});

t.test('rounds: new-since, seeded replay and per-source caps', async (t) => {
  const { buffer, ingest } = fresh();
  ingest.ingestBatch(Array.from({ length: 100 }, (_, i) => raw(makeEvent(i, { kind: 'preference' }))));
  buffer.deriveAll();
  const r1 = buffer.markRound('demo');
  t.equal(r1.round, 1);
  t.equal(buffer.newSinceCount('demo', ['pair'], 1), 0);
  ingest.ingestBatch(Array.from({ length: 20 }, (_, i) => raw(makeEvent(1000 + i, { kind: 'preference' }))));
  buffer.deriveAll();
  t.equal(buffer.newSinceCount('demo', ['pair'], 1), 20);
  const w = buffer.window({ model: 'demo', types: ['pair'], sinceRound: 1, replayFraction: 0.5, seed: 7 });
  t.equal(w.newCount, 20);
  t.equal(w.replayCount, 20, 'replay fraction 0.5 → as many old as new');
  t.same(buffer.window({ model: 'demo', types: ['pair'], sinceRound: 1, replayFraction: 0.5, seed: 7 }).examples.map((e) => e.id),
    w.examples.map((e) => e.id), 'same seed, same window');
  // poisoning: one user floods the stream
  ingest.ingestBatch(Array.from({ length: 200 }, (_, i) => raw(makeEvent(5000 + i, { kind: 'preference', source: { user: 'mallory', tenant: 'evil' } }))));
  buffer.deriveAll();
  const capped = buffer.window({ model: 'demo', types: ['pair'], replayFraction: 0, maxUserShare: 0.1, maxTenantShare: 0.5, seed: 1 });
  const n = capped.examples.length;
  const mallory = capped.examples.filter((e) => e.user === 'mallory').length;
  t.ok(mallory <= 0.1 * n, `mallory ${mallory} of ${n} is within 10%`);
  for (const tenant of ['t0', 't1', 't2', 'evil']) {
    t.ok(capped.examples.filter((e) => e.tenant === tenant).length <= 0.5 * n, `tenant ${tenant} within 50%`);
  }
  t.ok(capped.cappedOut >= 150, `flood dropped (${capped.cappedOut})`);
  buffer.close();
});

t.test('retention retires old bodies but keeps ids as tombstones', async (t) => {
  const { buffer, ingest } = fresh();
  ingest.ingestBatch(Array.from({ length: 50 }, (_, i) => raw(makeEvent(i, { kind: 'preference' }))));
  buffer.deriveAll();
  t.equal(buffer.retain({ maxEvents: 10 }), 40);
  const c = buffer.counts();
  t.equal(c.events, 10);
  t.equal(c.retired, 40);
  t.equal(c.examples['pair'], 10);
  const again = ingest.ingestBatch([raw(makeEvent(0, { kind: 'preference' }))]);
  t.equal(again[0]!.status, 'duplicate', 'a late replay of a retired event is still a duplicate');
  buffer.close();
});
