/**
 * Faults and abuse at the HTTP edge, against the real daemon process: malformed request lines and
 * headers, hostile bodies, cross-site posts, encodings and clocks, conflicting ids, and a batch
 * large enough to freeze the event loop if it were ingested in one piece. After every attack the
 * daemon must still answer.
 */
import t from 'tap';
import Database from 'better-sqlite3';
import { connect } from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { closeServer, startHttpServer } from '../../daemon/http/server.js';
import { sendJson } from '../../daemon/http/route.js';
import { silentLogger } from '../../daemon/base/log.js';
import { spawnDaemon, type DaemonProcess } from '../harness/daemon.js';
import { makeEvent } from '../harness/events.js';
import { loopPolicyYaml } from '../harness/loop.js';

/** Send raw bytes, collect whatever comes back until the server closes or `ms` pass. */
export function rawRequest(port: number, bytes: string | Buffer, ms = 3000): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = connect(port, '127.0.0.1', () => s.end(bytes));
    const done = (): void => { s.destroy(); resolve(Buffer.concat(chunks).toString('latin1')); };
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('close', done);
    s.on('error', done);
    setTimeout(done, ms).unref();
  });
}

const alive = async (d: DaemonProcess): Promise<boolean> => (await fetch(`${d.url}/healthz`).catch(() => undefined))?.status === 200;
const ndjson = (xs: unknown[]): string => xs.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join('\n') + '\n';

const dataDir = mkdtempSync(join(tmpdir(), 'alignd-faults-http-'));
const d = await spawnDaemon(['--data-dir', dataDir], { ALIGND_ADMIN_TOKEN: '' });
t.teardown(() => d.stop('SIGKILL'));
const post = (body: string | Buffer, type = 'application/json'): Promise<Response> =>
  fetch(`${d.url}/v1/feedback`, { method: 'POST', headers: { 'content-type': type }, body });

t.test('malformed request lines and headers get an answer, never a crash', async (t) => {
  const attacks: Array<[string, string]> = [
    ['request target http://[', 'GET http://[ HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['request target http://[ on the intake', 'POST http://[/v1/feedback HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n'],
    ['absolute-form with a bad port', 'GET http://x:99999/healthz HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a bad percent escape in a path parameter', 'GET /v1/models/%E0%A4%A/versions HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['two content-lengths', 'POST /v1/feedback HTTP/1.1\r\nHost: x\r\ncontent-length: 2\r\ncontent-length: 5\r\n\r\n{}'],
    ['a header line without a colon', 'GET /healthz HTTP/1.1\r\nHost x\r\n\r\n'],
    ['a header over the size limit', `GET /healthz HTTP/1.1\r\nHost: x\r\nx-big: ${'a'.repeat(100_000)}\r\n\r\n`],
    ['broken chunked encoding', 'POST /v1/feedback HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\ncontent-type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n'],
    ['a body shorter than its content-length', 'POST /v1/feedback HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"a":'],
    ['a NUL in the request target', 'GET /health\u0000z HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['garbage instead of HTTP', '\u0016\u0003\u0001\u0002\u0000\u0001\u0000\u0001\u00fc\u0003\u0003'],
  ];
  for (const [name, req] of attacks) {
    const answer = await rawRequest(d.port, Buffer.from(req, 'latin1'));
    t.ok(await alive(d), `${name}: the daemon still answers /healthz (got ${JSON.stringify(answer.slice(0, 40))})`);
  }
  const bad = await rawRequest(d.port, 'GET http://[ HTTP/1.1\r\nHost: x\r\n\r\n');
  t.match(bad, /^HTTP\/1\.1 400 /, 'an unparsable request target is answered 400');
});

t.test('a body of refused lines gets a bounded answer: a count and the first few', async (t) => {
  const lines = 20_000;
  const r = await post('{}\n'.repeat(lines), 'application/x-ndjson');
  t.equal(r.status, 400);
  const text = await r.text();
  t.ok(text.length < 64 * 1024, `the answer stays small (${text.length} bytes for ${lines} refused lines)`);
  const body = JSON.parse(text) as { stored: number; rejected_count: number; rejected: Array<{ line: number }>; note: string };
  t.equal(body.rejected_count, lines, 'every refused line is counted');
  t.ok(body.rejected.length > 0 && body.rejected.length <= 100, `only the first lines are listed (${body.rejected.length})`);
  t.equal(body.rejected[0]!.line, 1);
  t.match(body.note, /first \d+ of 20000/, 'the answer says the list is cut');
  t.ok(await alive(d));
});

t.test('cross-site posting: only the exact JSON media types are taken', async (t) => {
  const e = (i: number): string => JSON.stringify(makeEvent(7000 + i));
  for (const type of ['text/plain; x=ndjson', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/x-ndjson-evil', 'application/jsonp']) {
    const r = await post(e(0), type);
    t.equal(r.status, 415, `${type} is refused with 415`);
    t.match(((await r.json()) as { error: string }).error, /application\/json|application\/x-ndjson/);
  }
  const body = e(1);
  const bare = await rawRequest(d.port, `POST /v1/feedback HTTP/1.1\r\nHost: x\r\nconnection: close\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  t.match(bare, /^HTTP\/1\.1 415 /, 'a body without a content type is refused (a browser can send one cross-site)');
  t.equal((await post(e(2), 'application/json; charset=utf-8')).status, 202, 'parameters after the media type are fine');
  t.equal((await post(ndjson([makeEvent(7003)]), 'Application/X-NDJSON')).status, 202, 'media types are case-insensitive');
});

t.test('security headers on every answer', async (t) => {
  for (const path of ['/healthz', '/v1/status', '/nope', '/']) {
    const r = await fetch(`${d.url}${path}`);
    t.equal(r.headers.get('x-content-type-options'), 'nosniff', `${path}: nosniff`);
    t.match(r.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/, `${path}: a CSP`);
  }
  const page = await fetch(`${d.url}/`);
  t.match(page.headers.get('content-security-policy') ?? '', /script-src 'sha256-[A-Za-z0-9+/=]+'/, 'the status page allows only its own script');
});

t.test('invalid UTF-8 and a far-future ts are refused with a reason', async (t) => {
  const good = JSON.stringify(makeEvent(7100, { kind: 'preference' }));
  const invalid = Buffer.concat([Buffer.from(good.slice(0, -2)), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
  const withBadByte = Buffer.from(good.replace('good answer', 'good \u00e9nswer'));
  const at = withBadByte.indexOf(0xc3);
  withBadByte[at + 1] = 0x28; // é is c3 a9; c3 28 is not UTF-8
  let r = await post(withBadByte);
  t.equal(r.status, 400, 'invalid UTF-8 inside a string');
  t.match(((await r.json()) as { rejected: Array<{ reason: string }> }).rejected[0]!.reason, /UTF-8/);
  r = await post(invalid);
  t.equal(r.status, 400);
  r = await post(JSON.stringify(makeEvent(7101, { ts: '9999-12-31T23:59:59Z' })));
  t.equal(r.status, 400, 'a ts far in the future');
  const future = ((await r.json()) as { rejected: Array<{ path: string; reason: string }> }).rejected[0]!;
  t.equal(future.path, 'ts');
  t.match(future.reason, /future/);
  t.equal((await post(JSON.stringify(makeEvent(7102, { ts: new Date(Date.now() + 60_000).toISOString() })))).status, 202, 'a minute of clock skew is fine');
});

t.test('a duplicate event_id with different content is a conflict, never silently dropped', async (t) => {
  const first = makeEvent(7200, { kind: 'binary' });
  t.equal((await post(JSON.stringify(first))).status, 202);
  t.equal((await post(JSON.stringify(first))).status, 202, 'the same event again is a duplicate');
  // the same content with keys in another order and other whitespace is the same event
  const reordered = Object.fromEntries(Object.entries(first).reverse());
  let r = await post(JSON.stringify(reordered, null, 1));
  t.equal(r.status, 202, 'key order and whitespace do not make a conflict');
  t.same(await r.json(), { stored: 0, duplicates: 1, rejected: [] });
  r = await post(JSON.stringify({ ...first, label: first.kind === 'binary' && first.label === 'up' ? 'down' : 'up' }));
  t.equal(r.status, 409, 'other content under a stored id');
  const conflict = ((await r.json()) as { rejected: Array<{ code: string; event_id: string; reason: string }> }).rejected[0]!;
  t.equal(conflict.code, 'conflict');
  t.equal(conflict.event_id, first.event_id);
  r = await post(ndjson([makeEvent(7201), { ...makeEvent(7201), prompt: 'another prompt' }]), 'application/x-ndjson');
  t.equal(r.status, 409, 'a batch whose only refusals are conflicts');
  t.same(((await r.json()) as { rejected: Array<{ line: number; code: string }> }).rejected.map((x) => [x.line, x.code]), [[2, 'conflict']]);
});

t.test('a 16 MB batch is ingested in slices: /healthz is answered while it is stored', async (t) => {
  const lines: string[] = [];
  let bytes = 0;
  for (let i = 0; bytes < 15.5 * 1024 * 1024; i++) {
    const l = JSON.stringify(makeEvent(100_000 + i, { kind: 'preference', chosen: `good answer ${i} ${'x'.repeat(150)}` }));
    lines.push(l);
    bytes += l.length + 1;
  }
  const db = new Database(join(dataDir, 'buffer.sqlite'), { readonly: true });
  t.teardown(() => db.close());
  const count = (): number => (db.prepare(`SELECT count(*) AS n FROM events WHERE event_id LIKE 'ev-1_____'`).get() as { n: number }).n;
  const order: string[] = [];
  const batch = post(lines.join('\n') + '\n', 'application/x-ndjson').then((r) => { order.push('batch'); return r; });
  // Once the first events are durable (the daemon is storing the batch), ask for /healthz: a daemon
  // that stores the batch in slices answers it before the batch is done; one that stores it in one
  // synchronous piece commits everything at once and answers the batch first.
  let seen = 0;
  while (seen === 0 && order.length === 0) {
    seen = count();
    await new Promise((r) => setTimeout(r, 5));
  }
  const health = await fetch(`${d.url}/healthz`).then((r) => { order.push('healthz'); return r.status; });
  const b = await batch;
  t.equal(b.status, 202, `${lines.length} events taken`);
  t.equal(health, 200);
  t.ok(seen < lines.length, `storing was seen in progress (${seen} of ${lines.length} durable)`);
  t.same(order, ['healthz', 'batch'], 'the event loop answered /healthz while the batch was being stored');
  const status = (await (await fetch(`${d.url}/v1/status`)).json()) as { buffer: { events: number } };
  t.ok(status.buffer.events >= lines.length, `status counts them (${status.buffer.events})`);
});

t.test('admin auth: the Bearer scheme is case-insensitive, the token is not', async (t) => {
  const server = await startHttpServer({ host: '127.0.0.1', port: 0, log: silentLogger, adminToken: 's3cret',
    routes: [{ method: 'POST', path: '/admin', admin: true, handler: (_q, res) => sendJson(res, 200, { ok: true }) }] });
  t.teardown(() => closeServer(server));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/admin`;
  const call = async (auth: string): Promise<number> => (await fetch(url, { method: 'POST', headers: { authorization: auth } })).status;
  t.equal(await call('Bearer s3cret'), 200);
  t.equal(await call('bearer s3cret'), 200, 'lowercase scheme');
  t.equal(await call('BEARER  s3cret'), 200, 'upper case, two spaces');
  t.equal(await call('Bearer S3CRET'), 401, 'the token itself is compared exactly');
  t.equal(await call('Basic s3cret'), 401);
});

t.test('the rollback body is bounded: 8 MiB gets 413 (not read into memory), a non-object 400, and the daemon answers', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'alignd-faults-admin-'));
  const policy = join(dir, 'tiny.yaml');
  // No feedback arrives, so no round runs and the judge is never asked.
  writeFileSync(policy, loopPolicyYaml({ model: 'tiny', judge: { url: 'http://127.0.0.1:9/v1', model: 'unused' }, fileDropDir: join(dir, 'served') }));
  const admin = await spawnDaemon(['--data-dir', dir, '--policy', policy], { ALIGND_ADMIN_TOKEN: 'tok' });
  t.teardown(() => admin.stop('SIGKILL'));
  const call = (path: string, body: string): Promise<Response> => fetch(`${admin.url}${path}`, { method: 'POST', body, headers: { authorization: 'Bearer tok', 'content-type': 'application/json' } });
  const huge = JSON.stringify({ version: 'v1', note: 'x'.repeat(8 * 1024 * 1024) });
  const rollback = await call('/v1/models/tiny/rollback', huge);
  t.equal(rollback.status, 413, 'rollback: an 8 MiB body is refused as too large, not read into memory');
  t.match(await rollback.json(), { error: /request body over 4096 bytes/ });
  const list = await call('/v1/models/tiny/rollback', '["v1"]');
  t.equal(list.status, 400);
  t.match(await list.json(), { error: /body is not a JSON object/ });
  t.ok(await alive(admin), 'the daemon still answers /healthz');
});
