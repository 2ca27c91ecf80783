/**
 * Promotion through a real file-drop directory, a real webhook receiver and real HTTP to the
 * vLLM-speaking test server, which is used here for what a real vLLM cannot be made to do on
 * demand (injected 5xx, older error shapes, routes off, a wrong API key); what a real vLLM does
 * on the normal path (load, list, retire, rollback, restart) is asserted against one in
 * test-optional/vllm/. Retries, partial failure and reconcile; rollback by pinning in the policy.
 */
import t from 'tap';
import { existsSync, mkdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startFakeVllm } from '../harness/vllm-server.js';
import { addVersions, fast, loads, tmp as mkTmp, unloads, webhookReceiver } from './util.js';
import { openRegistry } from '../../daemon/registry/registry.js';
import { promote, reconcile } from '../../daemon/registry/promote.js';
import { memoryAnnouncer } from '../../daemon/registry/publisher.js';
import { enforceDeployment } from '../../daemon/release/deploy.js';
import { watchPolicy } from '../../daemon/policy/watch.js';
import { editDeployment } from '../../daemon/policy/edit.js';
import { vllmTarget, vllmErrorMessage } from '../../adapters/servers/vllm.js';
import { fileDropTarget } from '../../adapters/servers/file-drop.js';
import { signWebhook, webhookTarget } from '../../adapters/servers/webhook.js';
import { serverTargets } from '../../adapters/servers/index.js';
import { policySchema } from '../../daemon/policy/schema.js';

const tmp = (): string => mkTmp('alignd-promote-');

t.test('promotion to vLLM: load, verify, announce, retire; retry after failures', async (t) => {
  const vllm = await startFakeVllm();
  t.teardown(() => vllm.close());
  const reg = openRegistry(tmp(), 'tiny');
  await addVersions(reg, 3);
  const pub = memoryAnnouncer();
  const targets = [vllmTarget({ url: vllm.url })];

  const r1 = await promote(reg, 'v1', { targets, publisher: pub, retry: fast, reason: 'gate' });
  t.match(r1, { complete: true, name: 'tiny-v1', failed: [] });
  t.same(vllm.calls.find((c) => c.path === '/v1/load_lora_adapter')?.body, { lora_name: 'tiny-v1', lora_path: reg.get('v1')!.adapterDir });
  t.equal(vllm.loaded.get('tiny-v1'), reg.get('v1')!.adapterDir);
  t.match(reg.deployment(), { desired: 'v1', desired_name: 'tiny-v1', complete: true, targets: { [`vllm:${vllm.url}`]: { version: 'v1', error: null } } });
  t.match(pub.announcements, [{ schema: 'alignd.promotion/v1', model: 'tiny', version: 'v1', name: 'tiny-v1', previous: null }]);

  // Two injected failures (older builds' flat error shape), then success on the third attempt.
  vllm.failLoads(2, 503, 'flat');
  const r2 = await promote(reg, 'v2', { targets, publisher: pub, retry: fast, reason: 'gate' });
  t.equal(r2.complete, true);
  t.same(loads(vllm.calls), ['tiny-v1', 'tiny-v2', 'tiny-v2', 'tiny-v2'], 'retried until the server took it');
  t.equal(reg.deployment()!.targets[`vllm:${vllm.url}`]!.attempts, 3);
  t.same(unloads(vllm.calls), [], 'the previous version stays loaded for a fast rollback');

  await promote(reg, 'v3', { targets, publisher: pub, retry: fast, reason: 'gate' });
  t.same(unloads(vllm.calls), ['tiny-v1'], 'versions no longer needed are unloaded');
  t.same([...vllm.loaded.keys()].sort(), ['tiny-v2', 'tiny-v3']);
  t.same(pub.announcements.map((a) => [a.version, a.previous]), [['v1', null], ['v2', 'v1'], ['v3', 'v2']]);

  // Promoting the served version again loads nothing (immutable names are never reloaded).
  const before = loads(vllm.calls).length;
  await promote(reg, 'v3', { targets, publisher: pub, retry: fast, reason: 'gate' });
  t.equal(loads(vllm.calls).length, before);
  t.equal(pub.announcements.length, 3, 'no second announcement');
  const events = reg.auditRecords().map((r) => r.event);
  t.same(events.filter((e) => e === 'promote.done').length, 3);
  t.ok(reg.verifyAudit().ok);
});

t.test('partial failure is recorded per target and reconciled later', async (t) => {
  const a = await startFakeVllm();
  const b = await startFakeVllm();
  t.teardown(async () => { await a.close(); await b.close(); });
  const reg = openRegistry(tmp(), 'tiny');
  await addVersions(reg, 2);
  const targets = serverTargets(policySchema.parse({ model: 'tiny', base_model: { path: 'x' }, servers: [{ kind: 'vllm', urls: [a.url, b.url] }] }).servers);
  t.same(targets.map((x) => x.id), [`vllm:${a.url}`, `vllm:${b.url}`]);
  await promote(reg, 'v1', { targets, retry: fast, reason: 'gate' });
  b.failLoads(1000, 500);
  const r = await promote(reg, 'v2', { targets, retry: fast, reason: 'gate' });
  t.equal(r.complete, false);
  t.match(r.failed, [{ target: `vllm:${b.url}`, error: /HTTP 500: engine is busy/ }]);
  const s = reg.deployment()!;
  t.match(s, { desired: 'v2', complete: false, last_complete: 'v1' });
  t.match(s.targets[`vllm:${a.url}`], { version: 'v2', error: null });
  t.match(s.targets[`vllm:${b.url}`], { version: 'v1', error: /engine is busy/ }, 'the lagging server is recorded as still serving v1');
  t.ok(reg.auditRecords().some((x) => x.event === 'promote.partial'));
  t.same(unloads(a.calls), [], 'nothing retired while the push is incomplete');

  b.failLoads(0);
  const rec = await reconcile(reg, { targets, retry: fast });
  t.equal(rec?.complete, true);
  t.match(reg.deployment()!.targets[`vllm:${b.url}`], { version: 'v2', error: null });
  t.equal(reg.deployment()!.last_complete, 'v2');
  t.ok(b.loaded.has('tiny-v2'));
  const pushed = [...a.calls, ...b.calls].filter((c) => c.path !== '/v1/models').length;
  t.match(await reconcile(reg, { targets, retry: fast }), { complete: true, restored: [] });
  t.equal([...a.calls, ...b.calls].filter((c) => c.path !== '/v1/models').length, pushed, 'nothing left to do: only listings read');
});

t.test('concurrent promotions run one at a time, in call order', async (t) => {
  const reg = openRegistry(tmp(), 'tiny');
  await addVersions(reg, 3);
  const drop = join(tmp(), 'served');
  const targets = [fileDropTarget({ dir: drop })];
  const results = await Promise.all(['v1', 'v2', 'v3'].map((v) => promote(reg, v, { targets, retry: fast, reason: 'gate' })));
  t.same(results.map((r) => r.complete), [true, true, true]);
  t.equal(readlinkSync(join(drop, 'tiny')), 'tiny-v3');
  t.match(reg.deployment(), { desired: 'v3', complete: true });
  t.same(reg.auditRecords().filter((r) => r.event === 'promote.done').map((r) => [r['version'], r['previous']]), [['v1', null], ['v2', 'v1'], ['v3', 'v2']]);
});

t.test('vLLM errors become clear messages', async (t) => {
  const vllm = await startFakeVllm('tiny-base', 4);
  t.teardown(() => vllm.close());
  const reg = openRegistry(tmp(), 'tiny');
  await addVersions(reg, 1, 8);
  const v = reg.get('v1')!;
  const req = { model: 'tiny', version: 'v1', name: 'tiny-v1', adapterDir: v.adapterDir, adapterSha256: v.manifest.adapter_sha256, baseModel: 'tiny-base' };
  await t.rejects(vllmTarget({ url: vllm.url }).deploy(req), { code: 'SERVER_FAILED', permanent: true, message: /HTTP 500: LoRA rank 8 is greater than max_lora_rank 4.*--max-lora-rank/ });
  vllm.maxRank = 16;
  await t.rejects(vllmTarget({ url: vllm.url, pathMap: { from: reg.dir, to: '/mnt/elsewhere' } }).deploy(req), { message: /HTTP 404: No adapter found for \/mnt\/elsewhere.*mounted where vLLM runs/ });
  vllm.routesOff = true;
  await t.rejects(vllmTarget({ url: vllm.url }).deploy(req), { message: /runtime LoRA updating is off.*VLLM_ALLOW_RUNTIME_LORA_UPDATING=True/ });
  await t.rejects(vllmTarget({ url: 'http://127.0.0.1:1' }).deploy(req), { message: /cannot connect/ });
  t.equal(vllmErrorMessage('{"error":{"message":"nested","type":"x","code":400}}'), 'nested');
  t.equal(vllmErrorMessage('{"object":"error","message":"flat","code":400}'), 'flat');
  t.equal(vllmErrorMessage('Internal Server Error'), 'Internal Server Error');
});

t.test('vLLM behind --api-key; targets from the policy need their secrets', async (t) => {
  const vllm = await startFakeVllm('tiny-base', 16, 'k3y');
  t.teardown(() => vllm.close());
  const reg = openRegistry(tmp(), 'tiny');
  await addVersions(reg, 1);
  const servers = policySchema.parse({ model: 'tiny', base_model: { path: 'x' }, servers: [{ kind: 'vllm', urls: [vllm.url], api_key_env: 'TEST_VLLM_KEY' }, { kind: 'webhook', url: 'http://127.0.0.1:1/h', secret_env: 'TEST_HOOK_SECRET' }] }).servers;
  t.throws(() => serverTargets(servers, {}), { message: /vLLM target needs TEST_VLLM_KEY, which is not set/ });
  t.throws(() => serverTargets(servers, { TEST_VLLM_KEY: 'k3y' }), { message: /webhook target needs TEST_HOOK_SECRET/ });
  await t.rejects(promote(reg, 'v1', { targets: [vllmTarget({ url: vllm.url, apiKey: 'wrong' })], retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 1 }, reason: 'gate' })
    .then((r) => { if (!r.complete) throw new Error(r.failed[0]!.error); }), /HTTP 401: Unauthorized/);
  const [target] = serverTargets(servers, { TEST_VLLM_KEY: 'k3y', TEST_HOOK_SECRET: 's' });
  const r = await promote(reg, 'v1', { targets: [target!], retry: fast, reason: 'gate' });
  t.equal(r.complete, true);
  t.ok(vllm.loaded.has('tiny-v1'));
});

t.test('file-drop switches a symlink atomically; webhook posts signed JSON', async (t) => {
  const reg = openRegistry(tmp(), 'tiny');
  await addVersions(reg, 3);
  const drop = join(tmp(), 'served');
  const { got, url } = await webhookReceiver(t);
  const targets = [fileDropTarget({ dir: drop }), webhookTarget({ url, secret: 's3cret' })];
  mkdirSync(join(drop, '.tiny-v9.0badc0de.tmp'), { recursive: true }); // a copy interrupted by a crash
  for (const v of ['v1', 'v2', 'v3']) await promote(reg, v, { targets, retry: fast, reason: 'gate' });
  t.equal(readlinkSync(join(drop, 'tiny')), 'tiny-v3');
  t.ok(existsSync(join(drop, 'tiny', 'adapter_config.json')), 'the link resolves to a complete adapter');
  t.notOk(existsSync(join(drop, 'tiny-v1')), 'old versions removed');
  t.ok(existsSync(join(drop, 'tiny-v2')), 'previous kept');
  t.notOk(existsSync(join(drop, '.tiny-v9.0badc0de.tmp')), 'crash leftovers cleaned');
  t.equal(got.length, 3);
  for (const g of got) t.equal(g.sig, signWebhook('s3cret', g.ts, g.body), 'HMAC-SHA256 over timestamp.body');
  t.match(JSON.parse(got[2]!.body), { model: 'tiny', version: 'v3', name: 'tiny-v3', adapter_sha256: reg.get('v3')!.manifest.adapter_sha256 });
  t.not(got[0]!.sig, signWebhook('other', got[0]!.ts, got[0]!.body));
});

t.test('rollback: pinning in the policy file serves vN everywhere, observed on the targets', async (t) => {
  const root = tmp();
  const reg = openRegistry(root, 'tiny');
  await addVersions(reg, 3);
  const drop = join(tmp(), 'served');
  const file = join(tmp(), 'tiny.yaml');
  const hook = await webhookReceiver(t);
  writeFileSync(file, `# the demo policy\nmodel: tiny\nbase_model: { path: builtin:tiny }\nservers:\n  - kind: webhook\n    url: ${hook.url}\n    secret_env: TEST_PIN_SECRET\n  - kind: file_drop\n    dir: ${drop}\n# how we serve\ndeployment: auto  # promote what passes\n`);
  const pub = memoryAnnouncer();
  const applied: string[] = [];
  const opts = () => ({ targets: serverTargets(w.current().servers, { TEST_PIN_SECRET: 's' }), publisher: pub, retry: fast });
  const w = watchPolicy({
    file, ctx: { versionExists: (_m, v) => reg.has(v) }, audit: (e, f) => reg.audit(e, f), pollMs: 50, debounceMs: 20,
    onApply: async (p) => {
      applied.push(JSON.stringify(p.deployment));
      await enforceDeployment(reg, p.deployment, opts());
    },
  });
  t.teardown(() => w.stop());
  await promote(reg, 'v2', { ...opts(), reason: 'gate' });
  await promote(reg, 'v3', { ...opts(), reason: 'gate' });
  t.same(hook.got.map((g) => (JSON.parse(g.body) as { name: string }).name), ['tiny-v2', 'tiny-v3']);

  // What `alignd rollback tiny v1` does: edit the file; the daemon's watcher applies it.
  editDeployment(file, { mode: 'pinned', version: 'v1' }, { versionExists: (_m, v) => reg.has(v) });
  for (let i = 0; i < 200 && reg.deployment()?.desired !== 'v1'; i++) await new Promise((r) => setTimeout(r, 25));
  for (let i = 0; i < 200 && reg.deployment()?.complete !== true; i++) await new Promise((r) => setTimeout(r, 25));
  t.same(applied, ['{"mode":"pinned","version":"v1"}']);
  t.match(reg.deployment(), { desired: 'v1', complete: true, reason: 'pinned by policy (v1)' });
  t.match(JSON.parse(hook.got.at(-1)!.body), { name: 'tiny-v1', adapter_path: reg.get('v1')!.adapterDir }, 'the webhook was told to serve tiny-v1');
  t.equal(readlinkSync(join(drop, 'tiny')), 'tiny-v1', 'file-drop switched back too');
  t.match(pub.announcements.at(-1), { version: 'v1', previous: 'v3', reason: 'pinned by policy (v1)' });
  const events = reg.auditRecords().map((r) => r.event);
  t.ok(events.includes('policy.applied') && events.includes('deployment.pinned'));
  t.ok(reg.verifyAudit().ok);
});
