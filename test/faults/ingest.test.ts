/**
 * Abuse of the ingest path and the buffer, in process on a real SQLite file: events for models no
 * policy serves, conflicting event ids, invalid encodings and clocks, dead letters.
 */
import t from 'tap';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createIngest } from '../../daemon/ingest/pipeline.js';
import { defaultLimits } from '../../daemon/feedback/schema.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import { makeEvent } from '../harness/events.js';

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
