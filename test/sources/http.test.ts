import t from 'tap';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnDaemon } from '../harness/daemon.js';
import { badInputs, makeEvent } from '../harness/events.js';
import { openBuffer } from '../../daemon/store/buffer.js';

const ndjson = (xs: unknown[]): string => xs.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join('\n') + '\n';

t.test('POST /v1/feedback against the real daemon process', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'alignd-http-'));
  const d = await spawnDaemon(['--data-dir', dataDir], { ALIGND_ADMIN_TOKEN: '' });
  t.teardown(() => d.stop('SIGKILL'));
  const post = (body: string, type = 'application/json') => fetch(`${d.url}/v1/feedback`, { method: 'POST', headers: { 'content-type': type }, body });

  let r = await post(JSON.stringify(makeEvent(1)));
  t.equal(r.status, 202);
  t.same(await r.json(), { stored: 1, duplicates: 0, rejected: [] });

  r = await post(JSON.stringify(makeEvent(1)));
  t.equal(r.status, 202, 'a duplicate is accepted (idempotent)');
  t.same(await r.json(), { stored: 0, duplicates: 1, rejected: [] });

  const bad = { ...makeEvent(2, { kind: 'binary' }), label: 'sideways' };
  r = await post(JSON.stringify(bad));
  t.equal(r.status, 400);
  const badAnswer = (await r.json()) as { rejected: Array<{ path: string; code: string; reason: string }> };
  t.equal(badAnswer.rejected[0]!.path, 'label', 'the zod path names the field');
  t.equal(badAnswer.rejected[0]!.code, 'schema');

  // a partial batch: good lines stored, bad lines listed by line number
  const batch = ndjson([makeEvent(10), '{broken', makeEvent(11), { ...makeEvent(12), kind: 'nope' }, makeEvent(13)]);
  r = await post(batch, 'application/x-ndjson');
  t.equal(r.status, 400);
  const partial = (await r.json()) as { stored: number; rejected: Array<{ line: number; code: string }> };
  t.equal(partial.stored, 3);
  t.same(partial.rejected.map((x) => [x.line, x.code]), [[2, 'not_json'], [4, 'unknown_kind']]);

  // 413: one event over the event limit, and a body over the request limit
  const big = badInputs(256 * 1024).find((b) => b.code === 'oversize')!;
  r = await post(big.bytes.toString());
  t.equal(r.status, 413);
  r = await post('x'.repeat(17 * 1024 * 1024), 'application/x-ndjson');
  t.equal(r.status, 413);

  r = await post('');
  t.equal(r.status, 400, 'empty body');

  // status shows what was taken
  const status = (await (await fetch(`${d.url}/v1/status`)).json()) as { buffer: { events: number; bySource: Record<string, number> } };
  t.equal(status.buffer.events, 4);
  t.equal(status.buffer.bySource['http'], 4);

  // durability before 202: kill -9 right after the answer, then read the file
  r = await post(JSON.stringify(makeEvent(99)));
  t.equal(r.status, 202);
  await d.stop('SIGKILL');
  const buffer = openBuffer({ path: join(dataDir, 'buffer.sqlite'), heldoutFraction: 0.1 });
  t.ok(buffer.db.prepare('SELECT 1 FROM events WHERE event_id = ?').get('ev-99'), 'an event answered 202 survives kill -9');
  t.equal(buffer.counts().events, 5);
  buffer.close();
});

t.test('admin routes are closed without a token and routes answer 404/405', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'alignd-http-'));
  const d = await spawnDaemon(['--data-dir', dataDir]);
  t.teardown(() => d.stop('SIGKILL'));
  t.equal((await fetch(`${d.url}/healthz`)).status, 200);
  t.equal((await fetch(`${d.url}/nope`)).status, 404);
  t.equal((await fetch(`${d.url}/v1/feedback`)).status, 405);
  t.equal(await d.stop('SIGTERM'), 0, 'SIGTERM exits 0');
});
