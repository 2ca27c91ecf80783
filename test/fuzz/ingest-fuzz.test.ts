/**
 * Fuzz: random bytes, deep nesting, huge strings, wrong types and unicode edge cases, straight at
 * the validator and at the real daemon's HTTP endpoint. Nothing may crash; every input gets an
 * outcome; valid events (including odd unicode) are stored and read back intact.
 */
import t from 'tap';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createValidator } from '../../daemon/feedback/validate.js';
import { defaultLimits } from '../../daemon/feedback/schema.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import { mulberry32 } from '../../daemon/base/random.js';
import { spawnDaemon } from '../harness/daemon.js';
import { makeEvent } from '../harness/events.js';

const rand = mulberry32(20261127).next;
const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)] as T;

function randomValue(depth: number): unknown {
  const r = rand();
  if (depth > 4 || r < 0.3) return pick([null, true, 0, -1.5e308, 'x', '', '\u0000', '\ud800', '😀', 1e400, NaN]);
  if (r < 0.6) return Array.from({ length: Math.floor(rand() * 4) }, () => randomValue(depth + 1));
  return Object.fromEntries(Array.from({ length: Math.floor(rand() * 5) }, () => [pick(['kind', 'event_id', 'prompt', 'source', 'label', 'chosen', '__proto__', 'constructor', 'ts']), randomValue(depth + 1)]));
}

function fuzzInputs(n: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const k = i % 6;
    if (k === 0) out.push(Buffer.from(Array.from({ length: Math.floor(rand() * 200) }, () => Math.floor(rand() * 256))));
    else if (k === 1) out.push(Buffer.from(JSON.stringify(randomValue(0))));
    else if (k === 2) { // a valid event with one field mutated to a random value
      const e = makeEvent(i) as Record<string, unknown>;
      e[pick(Object.keys(e))] = randomValue(2);
      out.push(Buffer.from(JSON.stringify(e)));
    } else if (k === 3) out.push(Buffer.from('['.repeat(50_000) + ']'.repeat(50_000)));
    else if (k === 4) out.push(Buffer.from(JSON.stringify({ ...makeEvent(i), prompt: { a: { b: { c: { d: { e: [[[[[]]]]] } } } } } })));
    else out.push(Buffer.from(JSON.stringify({ ...makeEvent(i), chosen: '\u202e\u0000\ud83d' + 'z'.repeat(Math.floor(rand() * 70_000)) })));
  }
  return out;
}

t.test('the validator never throws and always answers', async (t) => {
  const validate = createValidator(defaultLimits);
  let rejected = 0;
  const withoutReason: string[] = [];
  for (const input of fuzzInputs(3000)) {
    const v = validate(input);
    if (!v.ok) {
      rejected++;
      if (v.reason.length === 0) withoutReason.push(input.subarray(0, 60).toString('hex'));
    }
  }
  t.same(withoutReason, [], 'every reject has a reason');
  t.ok(rejected > 2500, `most fuzz inputs are refused (${rejected}/3000)`);
  // prototype keys are data, not prototype pollution
  const v = validate(JSON.stringify({ ...makeEvent(1), __proto__: { polluted: 1 } }));
  t.equal(({} as Record<string, unknown>)['polluted'], undefined);
  t.ok(v.ok || v.code === 'schema');
});

t.test('the daemon survives fuzz over HTTP and stores odd unicode intact', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'alignd-fuzz-'));
  const d = await spawnDaemon(['--data-dir', dataDir]);
  t.teardown(() => d.stop('SIGKILL'));
  const inputs = fuzzInputs(600);
  const statuses: number[] = [];
  for (let i = 0; i < inputs.length; i += 50) {
    const single = inputs[i] as Buffer;
    const r1 = await fetch(`${d.url}/v1/feedback`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: single });
    statuses.push(r1.status);
    const batch = Buffer.concat(inputs.slice(i, i + 50).flatMap((b) => [b, Buffer.from('\n')]));
    const r2 = await fetch(`${d.url}/v1/feedback`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: batch });
    statuses.push(r2.status);
  }
  // 409: a mutated event_id can repeat with other content (a conflict, reported)
  t.same(statuses.filter((s) => ![202, 400, 409, 413].includes(s)), [], 'every request answered 202, 400, 409 or 413');
  t.equal((await fetch(`${d.url}/healthz`)).status, 200, 'still healthy');
  const odd = { ...makeEvent(424242, { kind: 'preference' }), chosen: 'RTL \u202e, NUL \u0000, emoji 😀, combining e\u0301, CJK 漢字, astral 𝄞' };
  t.equal((await fetch(`${d.url}/v1/feedback`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(odd) })).status, 202);
  await d.stop('SIGTERM');
  const buffer = openBuffer({ path: join(dataDir, 'buffer.sqlite'), heldoutFraction: 0.1 });
  const row = buffer.db.prepare('SELECT body FROM events WHERE event_id = ?').get('ev-424242') as { body: string };
  t.equal((JSON.parse(row.body) as { chosen: string }).chosen, odd.chosen, 'unicode round-trips byte for byte');
  buffer.close();
});
