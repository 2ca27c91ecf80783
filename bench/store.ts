/**
 * `node dist/bench/store.js`: where the ingest pipeline's time goes per event, to explain
 * bench:ingest's ratio against a raw kafkajs loop. Measures in one run, on ~1 KB events:
 * validation (JSON.parse + zod), the two hashes, alignd's buffer insert (one transaction per
 * 1000), and as floors a bare SQLite insert of the same rows into a table with only the
 * event_id unique index, and with no index at all.
 * Last line: {"bench":"store","validate_us":…,"hash_us":…,"insert_us":…,"pipeline_us":…,"floor_unique_us":…,"floor_bare_us":…}
 */
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createValidator } from '../daemon/feedback/validate.js';
import { defaultLimits, type FeedbackEvent } from '../daemon/feedback/schema.js';
import { createIngest } from '../daemon/ingest/pipeline.js';
import { isHeldout, openBuffer, promptHash } from '../daemon/store/buffer.js';
import { makeEventOfSize } from '../test/harness/events.js';

const N = 60_000;
const B = 1000;
const dir = mkdtempSync(join(tmpdir(), 'alignd-bench-store-'));
const texts = Array.from({ length: N }, (_, i) => makeEventOfSize(i, 1024));
const bytes = texts.map((t) => Buffer.from(t));

const perEvent = (ms: number): number => Math.round((ms * 1000 / N) * 10) / 10;
const time = (fn: () => void): number => {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
};

const validate = createValidator(defaultLimits);
const events: FeedbackEvent[] = [];
const validateMs = time(() => { for (const b of bytes) { const v = validate(b); if (v.ok) events.push(v.event); } });
const hashMs = time(() => { for (const e of events) { isHeldout(e.event_id, 0.1); if (e.kind !== 'exposure') promptHash(e.prompt); } });

const buffer = openBuffer({ path: join(dir, 'insert.sqlite'), heldoutFraction: 0.1 });
const insertMs = time(() => {
  for (let i = 0; i < N; i += B) buffer.insertEvents(events.slice(i, i + B).map((event, j) => ({ event, text: texts[i + j]!, origin: { source: 'kafka' as const, topic: 't', partition: 0, offset: String(i + j) } })));
});
buffer.close();

const pipeBuffer = openBuffer({ path: join(dir, 'pipeline.sqlite'), heldoutFraction: 0.1 });
const ingest = createIngest({ buffer: pipeBuffer, limits: defaultLimits });
const raws = bytes.map((b, i) => ({ bytes: b, origin: { source: 'kafka' as const, topic: 't', partition: 0, offset: String(i) } }));
const pipelineMs = time(() => { for (let i = 0; i < N; i += B) ingest.ingestBatch(raws.slice(i, i + B)); });
pipeBuffer.close();

function floor(name: string, unique: boolean): number {
  const db = new Database(join(dir, `${name}.sqlite`));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec(`CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL ${unique ? 'UNIQUE' : ''}, model TEXT, kind TEXT, body TEXT)`);
  const st = db.prepare('INSERT OR IGNORE INTO events (event_id, model, kind, body) VALUES (?, ?, ?, ?)');
  const tx = db.transaction((from: number) => { for (let i = from; i < from + B; i++) st.run(events[i]!.event_id, 'demo', 'preference', texts[i]!); });
  const ms = time(() => { for (let i = 0; i < N; i += B) tx(i); });
  db.close();
  return ms;
}
const uniqueMs = floor('unique', true);
const bareMs = floor('bare', false);
rmSync(dir, { recursive: true, force: true });

console.log(`${N} events of ~1 KB, transactions of ${B}, WAL + synchronous=FULL`);
console.log(`validate (JSON.parse + zod): ${perEvent(validateMs)} µs/event; hashes: ${perEvent(hashMs)} µs/event`);
console.log(`buffer insert (alignd schema and indexes): ${perEvent(insertMs)} µs/event; whole pipeline: ${perEvent(pipelineMs)} µs/event (${Math.round(N / (pipelineMs / 1000))} events/s)`);
console.log(`floors: same rows, event_id unique index only ${perEvent(uniqueMs)} µs/event; no index ${perEvent(bareMs)} µs/event`);
console.log(JSON.stringify({ bench: 'store', validate_us: perEvent(validateMs), hash_us: perEvent(hashMs), insert_us: perEvent(insertMs),
  pipeline_us: perEvent(pipelineMs), floor_unique_us: perEvent(uniqueMs), floor_bare_us: perEvent(bareMs) }));
