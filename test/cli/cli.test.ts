import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { mainJs, spawnDaemon } from '../harness/daemon.js';
import { makeEvent } from '../harness/events.js';
import { loadModel } from '../../daemon/model/model.js';

const run = promisify(execFile);
const alignd = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  run(process.execPath, [mainJs, ...args], { env: { ...process.env, ...env } }).then((r) => ({ ...r, code: 0 }), (e: { stdout: string; stderr: string; code: number }) => e);

t.test('help, version, schema and unknown commands', async (t) => {
  const help = await alignd(['--help']);
  for (const cmd of ['start', 'send', 'status', 'schema']) t.match(help.stdout, new RegExp(`\\n  ${cmd} `), `help lists ${cmd}`);
  const schema = JSON.parse((await alignd(['schema'])).stdout) as { oneOf: Array<{ properties: { kind: { const: string } } }> };
  t.same(schema.oneOf.map((s) => s.properties.kind.const).sort(), ['binary', 'edit', 'exposure', 'preference', 'rating', 'safety_report']);
  const bad = await alignd(['frobnicate']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /unknown command 'frobnicate'/);
  const badFlag = await alignd(['start', '--nope']);
  t.equal(badFlag.code, 1);
  t.match(badFlag.stderr, /Unknown option '--nope'/);
});

t.test('tiny-model writes the built-in checkpoint, or its serving variant (heads of 64 for vLLM\'s CPU kernels)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'alignd-cli-tiny-'));
  const r = await alignd(['tiny-model', join(dir, 'serving'), '--serving']);
  t.equal(r.code, 0, r.stderr);
  const cfg = JSON.parse(readFileSync(join(dir, 'serving', 'config.json'), 'utf8')) as Record<string, number>;
  t.match(cfg, { hidden_size: 128, num_attention_heads: 2, head_dim: 64, vocab_size: 384 });
  t.ok(loadModel(join(dir, 'serving')).tokenizer?.hasChatTemplate, 'a loadable checkpoint with a chat template');
  t.equal((await alignd(['tiny-model', join(dir, 'plain')])).code, 0);
  t.match(JSON.parse(readFileSync(join(dir, 'plain', 'config.json'), 'utf8')), { hidden_size: 64, head_dim: 16 });
  t.equal((await alignd(['tiny-model'])).code, 2, 'no directory: usage, exit 2');
});

t.test('send (file and stdin) to a running daemon, then status', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'alignd-cli-'));
  const d = await spawnDaemon(['--data-dir', dataDir]);
  t.teardown(() => d.stop('SIGKILL'));
  const file = join(dataDir, 'events.jsonl');
  writeFileSync(file, [makeEvent(1), makeEvent(2), makeEvent(3)].map((e) => JSON.stringify(e)).join('\n') + '\n\n{"bad": true}\n');
  const sent = await alignd(['send', file, '--http', d.url]);
  t.equal(sent.code, 2, 'a refused line makes send exit 2');
  const out = JSON.parse(sent.stdout) as { stored: number; rejected: Array<{ line: number }> };
  t.equal(out.stored, 3);
  t.same(out.rejected.map((r) => r.line), [5], 'refused line numbered as in the file');
  t.match(sent.stderr, /line 5: unknown_kind/);

  const child = spawn(process.execPath, [mainJs, 'send', '-', '--http', d.url]);
  child.stdin.end(JSON.stringify(makeEvent(4)) + '\n' + JSON.stringify(makeEvent(1)) + '\n');
  let stdout = '';
  child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
  const code = await new Promise((r) => child.on('exit', r));
  t.equal(code, 0);
  t.match(JSON.parse(stdout), { stored: 1, duplicates: 1 });

  const status = JSON.parse((await alignd(['status', '--url', d.url])).stdout) as { daemon: string; buffer: { events: number } };
  t.equal(status.daemon, 'running');
  t.equal(status.buffer.events, 4);
  await d.stop('SIGTERM');
  const offline = JSON.parse((await alignd(['status', '--url', d.url, '--data-dir', dataDir])).stdout) as { daemon: string; buffer: { events: number } };
  t.equal(offline.daemon, 'not running');
  t.equal(offline.buffer.events, 4, 'status reads the buffer when the daemon is down');
});

t.test('an invalid config is a clear error naming the field', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'alignd-cli-'));
  const cfg = join(dir, 'alignd.yaml');
  writeFileSync(cfg, 'http:\n  port: "eighty"\nunknownThing: 1\n');
  const r = await alignd(['start', '--config', cfg]);
  t.equal(r.code, 1);
  t.match(r.stderr, /http\.port/);
  t.match(r.stderr, /unknownThing/);
  writeFileSync(cfg, 'sources:\n  kafka:\n    brokers: ["${NOT_SET_ANYWHERE}"]\n    topics: [t]\n');
  const r2 = await alignd(['start', '--config', cfg]);
  t.match(r2.stderr, /NOT_SET_ANYWHERE/);
});
