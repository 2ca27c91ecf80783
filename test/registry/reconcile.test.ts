/**
 * Reconciling against what the servers list, not against alignd's own record (issue 14), and
 * promotion that a hung server cannot stall (issue 13). Faults a real vLLM cannot be made to show
 * on demand (a hang, a restart at a chosen moment, garbage) use the vLLM-speaking test server;
 * the same behaviours against a real vLLM are in test-optional/vllm/.
 */
import t from 'tap';
import { existsSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { startFakeVllm } from '../harness/vllm-server.js';
import { addVersions, fast, loads, tmp as mkTmp, unloads, within } from './util.js';
import { openRegistry } from '../../daemon/registry/registry.js';
import { promote, reconcile } from '../../daemon/registry/promote.js';
import { enforceDeployment } from '../../daemon/release/deploy.js';
import type { ServerTarget } from '../../daemon/registry/targets.js';
import { vllmTarget } from '../../adapters/servers/vllm.js';
import { fileDropTarget } from '../../adapters/servers/file-drop.js';

const tmp = (): string => mkTmp('alignd-reconcile-');

/** A target whose server never answers and which ignores cancellation (the worst case). */
function deafTarget(id: string, timeoutMs: number): ServerTarget & { calls: number } {
  const target = {
    id, timeoutMs, calls: 0,
    deploy: () => { target.calls++; return new Promise<void>(() => undefined); },
    retire: async () => [],
  };
  return target;
}

t.test('completing a partial promotion keeps the last complete version as the rollback version', async (t) => {
  const a = await startFakeVllm();
  const b = await startFakeVllm();
  t.teardown(async () => { await a.close(); await b.close(); });
  const reg = openRegistry(tmp(), 'tiny');
  await addVersions(reg, 2);
  const targets = [vllmTarget({ url: a.url }), vllmTarget({ url: b.url })];
  await promote(reg, 'v1', { targets, retry: fast, reason: 'gate' });
  b.failLoads(1000, 503);
  t.equal((await promote(reg, 'v2', { targets, retry: fast, reason: 'gate' })).complete, false);
  b.failLoads(0);
  t.equal((await reconcile(reg, { targets, retry: fast }))?.complete, true);
  const done = reg.auditRecords().filter((r) => r.event === 'promote.done').map((r) => [r['version'], r['previous']]);
  t.same(done, [['v1', null], ['v2', 'v1']], 'the audit names v1, the version still serving, as previous');
  t.same(unloads(a.calls), [], 'v1 stays loaded for a fast rollback');
  t.same([...a.loaded.keys()].sort(), ['tiny-v1', 'tiny-v2']);
  t.match(reg.deployment(), { desired: 'v2', complete: true, last_complete: 'v2', previous: 'v1' });
});

t.test('a /v1/models listing of real size (far over 2,000 bytes) is parsed whole', async (t) => {
  const vllm = await startFakeVllm();
  t.teardown(() => vllm.close());
  const reg = openRegistry(tmp(), 'tiny');
  await addVersions(reg, 6);
  const targets = [vllmTarget({ url: vllm.url })];
  for (const v of ['v1', 'v2', 'v3', 'v4', 'v5', 'v6']) {
    const r = await promote(reg, v, { targets, retry: fast, reason: 'gate', keepPrevious: true });
    t.equal(r.complete, true, `${v} promoted: ${JSON.stringify(r.failed)}`);
  }
  // Load the retired ones again by hand so the listing grows well past 2,000 bytes.
  for (const v of ['v1', 'v2', 'v3', 'v4']) vllm.loaded.set(`tiny-${v}`, reg.get(v)!.adapterDir);
  const size = (await (await fetch(`${vllm.url}/v1/models`)).text()).length;
  t.ok(size > 3000, `listing is ${size} bytes`);
  const r = await reconcile(reg, { targets, retry: fast });
  t.equal(r?.complete, true);
  t.same([...vllm.loaded.keys()].sort(), ['tiny-v5', 'tiny-v6'], 'extras found in the long listing were retired');
});

t.test('garbage from /v1/models is a clear error, not a crash', async (t) => {
  const vllm = await startFakeVllm();
  t.teardown(() => vllm.close());
  const reg = openRegistry(tmp(), 'tiny');
  await addVersions(reg, 1);
  vllm.modelsBody = '<html>502 Bad Gateway</html>';
  const r = await promote(reg, 'v1', { targets: [vllmTarget({ url: vllm.url })], retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 1 }, reason: 'gate' });
  t.equal(r.complete, false);
  t.match(r.failed, [{ error: /answered non-JSON: <html>502 Bad Gateway<\/html>.*vLLM OpenAI-compatible server/ }]);
});

t.test('a restarted vLLM (adapters forgotten) is noticed by the next reconcile and gets the served version back', async (t) => {
  const vllm = await startFakeVllm();
  t.teardown(() => vllm.close());
  const reg = openRegistry(tmp(), 'tiny');
  await addVersions(reg, 2);
  const targets = [vllmTarget({ url: vllm.url })];
  await promote(reg, 'v1', { targets, retry: fast, reason: 'gate' });
  await promote(reg, 'v2', { targets, retry: fast, reason: 'gate' });
  const quiet = loads(vllm.calls).length;
  t.equal((await reconcile(reg, { targets, retry: fast }))?.complete, true);
  t.equal(loads(vllm.calls).length, quiet, 'nothing pushed while the server lists what should be served');

  vllm.restart();
  t.match(reg.deployment(), { desired: 'v2', complete: true }, 'the record alone still says complete');
  const r = await reconcile(reg, { targets, retry: fast });
  t.match(r, { complete: true, restored: [`vllm:${vllm.url}`] });
  t.ok(vllm.loaded.has('tiny-v2'), 'the served name is loaded again');
  const events = reg.auditRecords().map((x) => x.event);
  t.ok(events.includes('reconcile.drift') && events.includes('reconcile.restored'));
  t.equal(events.filter((e) => e === 'promote.done').length, 2, 'a restore is not a new promotion');
});

t.test('a rank above --max-lora-rank is a permanent error: one attempt, not retried by reconcile', async (t) => {
  const vllm = await startFakeVllm('tiny-base', 4);
  t.teardown(() => vllm.close());
  const reg = openRegistry(tmp(), 'tiny');
  await addVersions(reg, 1, 8);
  const targets = [vllmTarget({ url: vllm.url })];
  const r = await promote(reg, 'v1', { targets, retry: fast, reason: 'gate' });
  t.equal(r.complete, false);
  t.match(r.failed, [{ permanent: true, error: /HTTP 500: LoRA rank 8 is greater than max_lora_rank 4.*--max-lora-rank.*lora\.r/ }]);
  t.equal(loads(vllm.calls).length, 1, 'no retries');
  await reconcile(reg, { targets, retry: fast });
  await reconcile(reg, { targets, retry: fast });
  t.equal(loads(vllm.calls).length, 1, 'reconcile does not push it again');
  t.match(reg.deployment()!.targets[`vllm:${vllm.url}`], { refused: 'v1', error: /max_lora_rank/ });
  t.equal(reg.auditRecords().filter((x) => x.event === 'promote.partial').length, 1, 'one partial record, not one per pass');
});

t.test('every target call has a deadline, even when the target ignores cancellation', async (t) => {
  const reg = openRegistry(tmp(), 'tiny');
  await addVersions(reg, 1);
  const deaf = deafTarget('deaf', 100);
  const r = await within(promote(reg, 'v1', { targets: [deaf], retry: { attempts: 2, baseDelayMs: 1, maxDelayMs: 1 }, reason: 'gate' }), 30_000, 'promotion to a deaf target');
  t.equal(r.complete, false);
  t.match(r.failed, [{ target: 'deaf', error: /deaf deploy tiny-v1: no answer within 1\.1 s/ }]);
  t.equal(deaf.calls, 2);
});

t.test('a pin (rollback) is not held behind a push to a hung server', async (t) => {
  const reg = openRegistry(tmp(), 'tiny');
  await addVersions(reg, 2);
  const drop = join(tmp(), 'served');
  const file = fileDropTarget({ dir: drop });
  await promote(reg, 'v1', { targets: [file], retry: fast, reason: 'gate' });
  // v2 goes to the directory and to a server that never answers (a minute per attempt).
  const deaf = deafTarget('deaf', 60_000);
  const stuck = promote(reg, 'v2', { targets: [file, deaf], retry: fast, reason: 'gate' });
  for (let i = 0; i < 400 && deaf.calls === 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(readlinkSync(join(drop, 'tiny')), 'tiny-v2');
  // The operator pins v1 and drops the hung server from the policy.
  const pin = enforceDeployment(reg, { mode: 'pinned', version: 'v1' }, { targets: [file], retry: fast });
  const r = await within(pin, 30_000, 'the pin');
  t.match(r, { version: 'v1', complete: true });
  t.equal(readlinkSync(join(drop, 'tiny')), 'tiny-v1', 'the directory serves v1 again');
  t.match(await within(stuck, 30_000, 'the superseded push'), { version: 'v2', complete: false });
  t.equal(deaf.calls, 1, 'the superseded push was not retried');
  t.match(reg.deployment(), { desired: 'v1', complete: true, reason: 'pinned by policy (v1)' });
  t.ok(existsSync(join(drop, 'tiny-v1', 'adapter_config.json')));
});

t.test('a promotion is announced once: a listing that fails and recovers does not announce it again', async (t) => {
  const vllm = await startFakeVllm();
  t.teardown(() => vllm.close());
  const reg = openRegistry(tmp(), 'tiny');
  await addVersions(reg, 1);
  const published: string[] = [];
  const publisher = { publish: async (a: { version: string }) => { published.push(a.version); } };
  const targets = [vllmTarget({ url: vllm.url })];
  t.equal((await promote(reg, 'v1', { targets, retry: fast, reason: 'gate', publisher })).complete, true);
  // The server's listing answers garbage for one pass (a hiccup under load), then recovers.
  vllm.modelsBody = 'not json';
  t.equal((await reconcile(reg, { targets, retry: fast, publisher }))?.complete, false, 'the pass that could not read the listing is incomplete');
  vllm.modelsBody = undefined;
  t.equal((await reconcile(reg, { targets, retry: fast, publisher }))?.complete, true);
  t.same(published, ['v1'], 'announced once');
  t.equal(reg.auditRecords().filter((r) => r.event === 'promote.done').length, 1, 'one promote.done in the audit');
});
