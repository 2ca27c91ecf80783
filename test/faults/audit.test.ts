/**
 * The audit chain under faults and tampering: a corrupt line (named by file and line, never a
 * crash of the watcher or the daemon), a keyed chain that cannot be rewritten and rehashed
 * without the key, a published head that makes truncation visible, and answers to a held
 * candidate checked under the registry's lock.
 */
import t from 'tap';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, createHmac } from 'node:crypto';
import { openRegistry, type Registry } from '../../daemon/registry/registry.js';
import { watchPolicy } from '../../daemon/policy/watch.js';
import { approveCandidate, denyCandidate, recordDecision } from '../../daemon/release/decisions.js';
import { createLogger, silentLogger } from '../../daemon/base/log.js';
import { promote } from '../../daemon/registry/promote.js';
import { memoryAnnouncer } from '../../daemon/registry/publisher.js';
import { fileDropTarget } from '../../adapters/servers/file-drop.js';
import { spawnDaemon } from '../harness/daemon.js';
import { loopPolicyYaml } from '../harness/loop.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'alignd-faults-audit-'));
const POLICY = 'model: tiny\nbase_model: { path: builtin:tiny }\ndeployment: auto\n';

async function withVersions(root: string, n: number, auditKey?: string): Promise<Registry> {
  const reg = openRegistry(root, 'tiny', { auditKey });
  for (let i = 0; i < n; i++) {
    const dir = join(root, `src${i}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 8, i }));
    await reg.addVersion({ adapterDir: dir }, { parent: null, base_model: { path: 'builtin:tiny', sha256: null } });
  }
  return reg;
}

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger({}, 'debug', (l: string) => { lines.push(JSON.parse(l) as Record<string, unknown>); });
  return { log, lines };
}

t.test('a corrupt audit log never stops the policy watcher: the edit is applied, the failure logged', async (t) => {
  const dir = tmp();
  const reg = await withVersions(join(dir, 'registry'), 1);
  const file = join(dir, 'tiny.yaml');
  writeFileSync(file, POLICY);
  const { log, lines } = capture();
  const w = watchPolicy({ file, ctx: { versionExists: (_m, v) => reg.has(v) }, audit: (e, f) => reg.audit(e, f), log, pollMs: 60_000 });
  t.teardown(() => w.stop());
  const auditPath = join(reg.dir, 'audit.jsonl');
  writeFileSync(auditPath, readFileSync(auditPath, 'utf8') + 'not json\n');
  writeFileSync(file, POLICY.replace('deployment: auto', 'deployment: {mode: pinned, version: v1}'));
  await t.resolves(w.check(), 'the check does not throw');
  t.same(w.current().deployment, { mode: 'pinned', version: 'v1' }, 'the rollback is applied even though it could not be audited');
  t.equal(w.stats.auditFailures, 1);
  const failure = lines.find((l) => l['msg'] === 'writing the policy audit record failed; the watcher goes on');
  t.match(String(failure?.['err']), /audit log .*audit\.jsonl is not an audit record/, 'the log line names the file');
});

t.test('a policy edit renaming the model is refused, and each refusal is logged once', async (t) => {
  const dir = tmp();
  const file = join(dir, 'tiny.yaml');
  writeFileSync(file, POLICY);
  const { log, lines } = capture();
  const w = watchPolicy({ file, log, pollMs: 60_000 });
  t.teardown(() => w.stop());
  writeFileSync(file, POLICY.replace('model: tiny', 'model: other'));
  await w.check();
  t.equal(w.current().model, 'tiny', 'the running model stays');
  t.match(w.lastRefusal(), [{ path: 'model', reason: /cannot change while the daemon runs/ }]);
  t.equal(lines.filter((l) => String(l['msg']).startsWith('policy edit refused')).length, 1);
});

t.test('reading a corrupt audit log names the file and the line', async (t) => {
  const reg = await withVersions(tmp(), 0);
  for (let i = 0; i < 3; i++) await reg.audit('test.event', { i });
  const path = join(reg.dir, 'audit.jsonl');
  const lines = readFileSync(path, 'utf8').split('\n');
  lines[1] = '{"seq": 2, "truncated';
  writeFileSync(path, lines.join('\n'));
  t.throws(() => reg.auditRecords(), { code: 'STORE_FAILED', message: /audit log .*audit\.jsonl, line 2: not valid JSON/ });
  t.match(reg.verifyAudit(), { ok: false, badLine: 2, reason: 'not valid JSON' });
  await t.rejects(reg.cleanStaging(), { message: /line 2/ }, 'startup recovery says where (the runtime logs it and goes on)');
});

t.test('a keyed chain: records rewritten and rehashed without the key do not verify', async (t) => {
  const key = 'k'.repeat(32);
  const root = tmp();
  const reg = await withVersions(root, 0, key);
  for (let i = 0; i < 100; i++) await reg.audit(i % 10 === 0 ? 'gate.approved' : 'test.event', { i, by: 'alice' });
  t.match(reg.verifyAudit(), { ok: true, records: 100, keyed: true });
  t.match(reg.auditHead(), { seq: 100, keyed: true, head: /^hmac-sha256:[0-9a-f]{64}$/ });
  const path = join(reg.dir, 'audit.jsonl');
  const original = readFileSync(path, 'utf8');

  // The attack the issue describes: rewrite approvers, drop 64 records, recompute every link.
  const rewrite = (link: (line: string) => string): string => {
    const recs = original.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).filter((_r, i) => i < 36);
    let prev = '0'.repeat(64);
    return recs.map((r, i) => {
      const line = JSON.stringify({ ...r, seq: i + 1, prev, ...(r['event'] === 'gate.approved' ? { by: 'mallory' } : {}) });
      prev = link(line);
      return line;
    }).join('\n') + '\n';
  };
  writeFileSync(path, rewrite((l) => createHash('sha256').update(l).digest('hex')));
  t.match(reg.verifyAudit(), { ok: false, reason: /does not end keyed/ }, 'plain hashes where the key makes HMACs: refused');
  writeFileSync(path, rewrite((l) => 'hmac-sha256:' + createHmac('sha256', 'a guessed key').update(l).digest('hex')));
  t.match(reg.verifyAudit(), { ok: false, badLine: 2, reason: /another key/ }, 'HMACs with another key: refused');

  writeFileSync(path, original);
  const noKey = openRegistry(root, 'tiny', { auditKey: undefined });
  t.match(noKey.verifyAudit(), { ok: false, reason: /set ALIGND_AUDIT_KEY/ }, 'without the key a keyed chain is not called sound');
  await t.rejects(noKey.audit('plain.after.keyed'), { message: /is keyed .* ALIGND_AUDIT_KEY is not set/ }, 'nor continued with plain links');
});

t.test('a plain chain continued with a key verifies; its status says when it is not keyed', async (t) => {
  const root = tmp();
  const plain = await withVersions(root, 0);
  for (let i = 0; i < 3; i++) await plain.audit('before.key', { i });
  t.match(plain.auditHead(), { seq: 3, keyed: false, head: /^[0-9a-f]{64}$/ });
  const keyed = openRegistry(root, 'tiny', { auditKey: 'x'.repeat(32) });
  for (let i = 0; i < 3; i++) await keyed.audit('after.key', { i });
  t.match(keyed.verifyAudit(), { ok: true, records: 6, keyed: false }, 'sound, though not keyed from the start');

  // A key set on a log that has not been written since: startup recovery ends it keyed.
  const root2 = tmp();
  const before = await withVersions(root2, 1);
  await before.audit('before.key', {});
  const after = openRegistry(root2, 'tiny', { auditKey: 'y'.repeat(32) });
  t.match(after.verifyAudit(), { ok: false, reason: /does not end keyed/ });
  await after.cleanStaging();
  t.match(after.auditRecords().at(-1), { event: 'audit.keyed' });
  t.match(after.verifyAudit(), { ok: true, records: 3 });
});

t.test('every promotion announcement carries the chain head after it', async (t) => {
  const root = tmp();
  const reg = await withVersions(root, 1);
  const pub = memoryAnnouncer();
  await promote(reg, 'v1', { targets: [fileDropTarget({ dir: join(root, 'served') })], publisher: pub, reason: 'test', log: silentLogger });
  t.equal(pub.announcements.length, 1);
  t.same(pub.announcements[0]!.audit_head, reg.auditHead(), 'the head as the log ends after promote.done');
  t.equal(reg.auditRecords().at(-1)!.event, 'promote.done');
});

t.test('a published head makes truncation and a rewritten tail visible', async (t) => {
  const reg = await withVersions(tmp(), 0);
  for (let i = 0; i < 10; i++) await reg.audit('test.event', { i });
  const published = reg.auditHead();
  t.match(reg.verifyAudit(published), { ok: true });
  await reg.audit('later', {});
  t.match(reg.verifyAudit(published), { ok: true }, 'a log that grew past the head still reaches it');
  const path = join(reg.dir, 'audit.jsonl');
  const lines = readFileSync(path, 'utf8').trim().split('\n');
  writeFileSync(path, lines.slice(0, 8).join('\n') + '\n');
  t.match(reg.verifyAudit(), { ok: true }, 'a truncated plain chain verifies on its own');
  t.match(reg.verifyAudit(published), { ok: false, reason: /8 records, but a head was published at seq 10: truncated/ });
  // the last two records replaced by others (the chain recomputed): the head no longer matches
  writeFileSync(path, lines.slice(0, 8).join('\n') + '\n');
  for (let i = 0; i < 2; i++) await reg.audit('forged', { i });
  t.match(reg.verifyAudit(), { ok: true });
  t.match(reg.verifyAudit(published), { ok: false, reason: /not the one whose head was published/ });
});

t.test('approve and deny of one held candidate at once: exactly one answer is recorded', async (t) => {
  const reg = await withVersions(tmp(), 1);
  await recordDecision(reg, 'v1', { decision: 'hold', reasons: ['uncertain'], checks: [] });
  const results = await Promise.allSettled([approveCandidate(reg, 'v1', 'alice'), denyCandidate(reg, 'v1', 'bob'), approveCandidate(reg, 'v1', 'carol')]);
  t.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'one answer');
  t.match(results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason)), [/already (approved|denied)/, /already (approved|denied)/]);
  t.equal(reg.auditRecords().filter((r) => r.event === 'gate.approved' || r.event === 'gate.denied').length, 1, 'one audit record');
});

t.test('the daemon starts on a corrupt audit log, names the line, and publishes the chain head', async (t) => {
  const dataDir = tmp();
  const reg = await withVersions(join(dataDir, 'registry'), 1);
  await reg.audit('test.event', {});
  const path = join(reg.dir, 'audit.jsonl');
  const lines = readFileSync(path, 'utf8').split('\n');
  lines.splice(1, 0, 'garbage in the middle');
  writeFileSync(path, lines.join('\n'));
  const policy = join(dataDir, 'tiny.yaml');
  // No round runs here (no feedback), so the judge is never asked.
  writeFileSync(policy, loopPolicyYaml({ model: 'tiny', judge: { url: 'http://127.0.0.1:9/v1', model: 'unused' }, fileDropDir: join(dataDir, 'served') }));
  const d = await spawnDaemon(['--data-dir', dataDir, '--policy', policy], { ALIGND_AUDIT_KEY: '' });
  t.teardown(() => d.stop('SIGKILL'));
  t.ok(d.logs.some((l) => l.includes('registry recovery failed') && l.includes('audit.jsonl, line 2')), 'the log names the file and the line');
  const status = (await (await fetch(`${d.url}/v1/status`)).json()) as { models: Array<{ audit: { seq: number; head: string; keyed: boolean; note?: string } }> };
  t.match(status.models[0]!.audit, { seq: 2, keyed: false, head: /^[0-9a-f]{64}$/, note: /ALIGND_AUDIT_KEY is not set/ });
});
