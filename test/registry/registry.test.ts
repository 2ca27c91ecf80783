import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../harness/daemon.js';
import { openRegistry } from '../../daemon/registry/registry.js';
import { parseModelConfig } from '../../daemon/model/hf-config.js';
import { initLora } from '../../daemon/model/lora.js';
import { readPeftAdapter, writePeftAdapter } from '../../daemon/model/peft.js';
import { TINY_CONFIG } from '../../daemon/model/tiny.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'alignd-reg-'));
const spec = parseModelConfig(TINY_CONFIG, 'tiny');
const lora = (seed: number) => initLora(spec, { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: 'tiny' }, seed);
const base = { path: 'builtin:tiny', sha256: null };

t.test('versions with PEFT adapters and manifests; adapter dir from elsewhere; integrity', async (t) => {
  const reg = openRegistry(tmp(), 'tiny');
  const v1 = await reg.addVersion({ write: (d) => writePeftAdapter(d, spec, lora(1)) }, { parent: null, base_model: base, data_window: { kafka_offsets: { 'alignd.feedback:0': 42 } }, round_metrics: { loss: 0.69 } });
  t.equal(v1.version, 'v1');
  const outside = join(tmp(), 'adapter');
  writePeftAdapter(outside, spec, lora(2));
  const v2 = await reg.addVersion({ adapterDir: outside }, { parent: 'v1', base_model: base });
  t.equal(v2.version, 'v2');
  t.same(reg.list().map((v) => v.version), ['v1', 'v2']);
  const m = reg.get('v1')!.manifest;
  t.equal(m.parent, null);
  t.same(m.data_window.kafka_offsets, { 'alignd.feedback:0': 42 });
  t.match(m.adapter_sha256, /^[0-9a-f]{64}$/);
  t.same(Object.keys(m.adapter_files).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
  const back = readPeftAdapter(reg.get('v2')!.adapterDir, spec);
  t.same(Array.from(back.pairs.values())[0]!.a.slice(0, 4), Array.from(lora(2).pairs.values())[0]!.a.slice(0, 4), 'PEFT adapter round-trips');
  t.same(reg.verifyVersion('v2'), { ok: true });
  writeFileSync(join(reg.get('v2')!.adapterDir, 'adapter_config.json'), '{}');
  t.equal(reg.verifyVersion('v2').ok, false, 'a changed adapter file fails its manifest hash');
  await t.rejects(reg.addVersion({ adapterDir: join(outside, 'nope') }, { parent: null, base_model: base }), /does not exist/);
  t.same(reg.list().map((v) => v.version), ['v1', 'v2'], 'a failed add leaves nothing behind');
  t.same(readdirSync(join(reg.dir, '.staging')), []);
});

t.test('model names are validated', async (t) => {
  const root = tmp();
  for (const bad of ['../evil', 'a/b', '..', '.hidden', '', 'x'.repeat(65), 'a..b', 'sp ace']) {
    t.throws(() => openRegistry(root, bad), { code: 'CONFIG_INVALID' }, JSON.stringify(bad));
  }
  t.doesNotThrow(() => openRegistry(root, 'Llama-3.1_8b'));
  t.same(readdirSync(root), ['Llama-3.1_8b']);
});

t.test('audit chain verifies, and tampering is found', async (t) => {
  const reg = openRegistry(tmp(), 'tiny');
  for (let i = 0; i < 5; i++) await reg.audit('test.event', { i });
  const ok = reg.verifyAudit();
  t.match(ok, { ok: true, records: 5, tornTail: false });
  const path = join(reg.dir, 'audit.jsonl');
  const lines = readFileSync(path, 'utf8').split('\n');
  const original = lines.join('\n');
  lines[2] = lines[2]!.replace('"i":2', '"i":9');
  writeFileSync(path, lines.join('\n'));
  t.match(reg.verifyAudit(), { ok: false, badLine: 4 }, 'an edited line breaks the next line\'s prev hash');
  const removed = original.split('\n');
  removed.splice(1, 1);
  writeFileSync(path, removed.join('\n'));
  t.match(reg.verifyAudit(), { ok: false, badLine: 2 });
  // A torn tail (an interrupted append) is reported, and the next append repairs it.
  writeFileSync(path, original + '{"seq":6,"ts":');
  t.match(reg.verifyAudit(), { ok: true, records: 5, tornTail: true });
  const rec = await reg.audit('after.crash');
  t.equal(rec.seq, 6);
  t.equal(rec['tornTailBytesDropped'], 14);
  t.match(reg.verifyAudit(), { ok: true, records: 6, tornTail: false });
  // A complete but foreign last line: nothing more is appended until a person looks.
  writeFileSync(path, readFileSync(path, 'utf8') + 'not json\n');
  await t.rejects(reg.audit('after.tamper'), { code: 'STORE_FAILED', message: /last line of the audit log .* is not an audit record/ });
});

t.test('gc keeps the newest N, the deployed, targets\' versions and unanswered holds', async (t) => {
  const reg = openRegistry(tmp(), 'tiny');
  for (let i = 1; i <= 6; i++) await reg.addVersion({ write: (d) => writePeftAdapter(d, spec, lora(i)) }, { parent: null, base_model: base });
  reg.setDeployment({ desired: 'v2', desired_name: 'tiny-v2', reason: 'test', since: new Date().toISOString(), complete: false, targets: { a: { version: 'v1', name: 'tiny-v1', error: null, attempts: 1, updated_at: '' } } });
  await reg.recordGate('v3', { decision: 'hold', reasons: ['uncertain'], figures: {}, decided_at: '' });
  const removed = await reg.gc(2);
  t.same(removed, ['v4']);
  t.same(reg.list().map((v) => v.version), ['v1', 'v2', 'v3', 'v5', 'v6']);
  const v7 = await reg.addVersion({ write: (d) => writePeftAdapter(d, spec, lora(7)) }, { parent: 'v6', base_model: base });
  t.equal(v7.version, 'v7', 'numbers are never reused');
  t.ok(reg.auditRecords().some((r) => r.event === 'registry.gc'));
});

t.test('kill -9 at random points while writing versions: never a half version, audit verifies', async (t) => {
  const root = tmp();
  const writer = join(repoRoot, 'dist/test/harness/registry-writer.js');
  const committed = new Set<string>();
  // The newest version when a gc last finished: that gc kept it and the four before it. Versions
  // after it wait for the next gc (several trials in a row can die before theirs on a loaded
  // machine, where a first pass is slow), so the bound is on what is older, not on the count.
  let newestAtGc = 0;
  let newestSoFar = 0;
  const TRIALS = 32;
  for (let trial = 0; trial < TRIALS; trial++) {
    const child = spawn(process.execPath, [writer, root, 'tiny', String(trial)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (c: Buffer) => { err += c.toString(); });
    const ready = new Promise<void>((resolve) => child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('ready')) resolve();
    }));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await Promise.race([ready, exited]);
    await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 400)));
    child.kill('SIGKILL');
    const code = await exited;
    t.equal(code, null, `trial ${trial}: killed, not exited by itself ${err}`);
    for (const m of out.matchAll(/committed (v\d+)|gc done/g)) {
      if (m[1] === undefined) newestAtGc = newestSoFar;
      else {
        committed.add(m[1]);
        newestSoFar = Math.max(newestSoFar, Number(m[1].slice(1)));
      }
    }
  }
  const reg = openRegistry(root, 'tiny');
  const versions = reg.list();
  t.ok(committed.size >= 5, `versions were committed across trials (${committed.size})`);
  for (const v of versions) {
    const check = reg.verifyVersion(v.version);
    if (!check.ok) t.fail(`${v.version}: ${check.reason}`);
    readPeftAdapter(v.adapterDir, spec); // a complete, loadable PEFT adapter
  }
  const listed = new Set(versions.map((v) => v.version));
  const newest = Math.max(...[...committed].map((v) => Number(v.slice(1))));
  t.ok(listed.has(`v${newest}`), 'the newest acknowledged version survived');
  for (const v of committed) if (!listed.has(v)) t.ok(Number(v.slice(1)) <= newest - 5, `${v} only gone by gc`);
  const audit = reg.verifyAudit();
  t.equal(audit.ok, true, JSON.stringify(audit));
  const d = reg.deployment();
  t.ok(d === undefined || reg.has(d.desired), 'the deployed pointer names an existing version');
  t.ok(newestAtGc > 0, 'some gc finished');
  const stale = versions.filter((v) => Number(v.version.slice(1)) <= newestAtGc - 5).map((v) => v.version);
  t.same(stale, [], `gc kept it bounded: nothing older than the 5 it kept at v${newestAtGc}`);
  const rec = await reg.cleanStaging();
  t.same(readdirSync(join(reg.dir, '.staging')), []);
  const created = new Set(reg.auditRecords().filter((r) => r.event === 'version.create').map((r) => r['version']));
  for (const v of versions) t.ok(created.has(v.version), `${v.version} has its version.create record${rec.recovered.includes(v.version) ? ' (recovered)' : ''}`);
  t.ok(reg.verifyAudit().ok);
  mkdirSync(join(reg.dir, 'versions', 'not-a-version'));
  t.same(reg.list().map((v) => v.version), versions.map((v) => v.version), 'stray entries are not versions');
});
