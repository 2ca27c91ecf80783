/**
 * The durable file operations every stage writes through: the atomic whole-file write and the
 * durable line append of append-only logs (the audit chain, the file announcer).
 */
import t from 'tap';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { appendLineDurable, writeFileAtomicDurable } from '../../daemon/base/fs-durable.js';
import { fileAnnouncer } from '../../daemon/registry/publisher.js';
import type { PromotionAnnouncement } from '../../daemon/registry/targets.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'alignd-fsd-'));

t.test('atomic write: replaces the file whole and leaves no temp file behind', async (t) => {
  const dir = tmp();
  const p = join(dir, 'f.json');
  writeFileAtomicDurable(p, 'one');
  writeFileAtomicDurable(p, new Uint8Array([0x74, 0x77, 0x6f]));
  t.equal(readFileSync(p, 'utf8'), 'two');
  t.same(readdirSync(dir), ['f.json']);
  t.throws(() => writeFileAtomicDurable(join(dir, 'missing', 'f'), 'x'), { code: 'ENOENT' });
  t.same(readdirSync(dir), ['f.json'], 'a failed write leaves nothing behind');
});

t.test('line append: creates the file, appends one line a call', async (t) => {
  const p = join(tmp(), 'log.jsonl');
  t.same(appendLineDurable(p, '{"a":1}'), { tornBytesDropped: 0 });
  t.same(appendLineDurable(p, '{"a":2}'), { tornBytesDropped: 0 });
  t.equal(readFileSync(p, 'utf8'), '{"a":1}\n{"a":2}\n');
});

t.test('line append: a line holding a newline is refused and nothing is written', async (t) => {
  const p = join(tmp(), 'log.jsonl');
  appendLineDurable(p, 'first');
  t.throws(() => appendLineDurable(p, 'two\nlines'), /one line/);
  t.equal(readFileSync(p, 'utf8'), 'first\n');
});

t.test('line append: a torn tail (a crash mid-append) is cut off, never glued to the next line', async (t) => {
  const p = join(tmp(), 'log.jsonl');
  const torn = '{"a":2, "tor';
  writeFileSync(p, '{"a":1}\n' + torn);
  t.same(appendLineDurable(p, '{"a":3}'), { tornBytesDropped: Buffer.byteLength(torn) });
  t.equal(readFileSync(p, 'utf8'), '{"a":1}\n{"a":3}\n');
  const only = join(tmp(), 'only-torn.jsonl');
  writeFileSync(only, '{"half');
  t.same(appendLineDurable(only, 'x'), { tornBytesDropped: 6 });
  t.equal(readFileSync(only, 'utf8'), 'x\n');
});

t.test('the file announcer keeps one announcement per line after an interrupted append', async (t) => {
  const p = join(tmp(), 'promotions.jsonl');
  const a = (version: string): PromotionAnnouncement => ({ schema: 'alignd.promotion/v1', model: 'tiny', version, name: `tiny-${version}`,
    previous: null, reason: 'gate', adapter_sha256: '0'.repeat(64), ts: new Date(0).toISOString(), canary: null, audit_head: { seq: 1, head: '0'.repeat(64), keyed: false } });
  const pub = fileAnnouncer(p);
  await pub.publish(a('v1'));
  writeFileSync(p, readFileSync(p, 'utf8') + '{"model":"tiny","vers');
  await pub.publish(a('v2'));
  const lines = readFileSync(p, 'utf8').split('\n');
  t.equal(lines.pop(), '', 'ends with a newline');
  t.same(lines.map((l) => (JSON.parse(l) as { version: string }).version), ['v1', 'v2']);
});
