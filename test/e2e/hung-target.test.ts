/**
 * Rollback stuck behind a hung server (issue 13), against the real daemon process: a webhook
 * target that accepts connections and never answers. The daemon still becomes ready, reconcile
 * ticks are skipped rather than queued, a rollback is answered and served on the other target, a
 * target removed from the policy gets no more pushes, and SIGTERM ends the process.
 */
import t from 'tap';
import { createServer, type IncomingMessage } from 'node:http';
import { mkdtempSync, readlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnDaemon } from '../harness/daemon.js';
import { within } from '../registry/util.js';
import { openRegistry } from '../../daemon/registry/registry.js';
import { parseModelConfig } from '../../daemon/model/hf-config.js';
import { initLora } from '../../daemon/model/lora.js';
import { writePeftAdapter } from '../../daemon/model/peft.js';
import { TINY_CONFIG } from '../../daemon/model/tiny.js';

const spec = parseModelConfig(TINY_CONFIG, 'tiny');

const until = async (what: string, f: () => boolean | Promise<boolean>, tries = 300): Promise<void> => {
  for (let i = 0; i < tries; i++) {
    if (await f()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
};

t.test('a hung webhook holds neither startup, nor a rollback, nor shutdown', async (t) => {
  const requests: IncomingMessage[] = [];
  const hung = createServer((req) => { requests.push(req); }); // accepts, never answers
  await new Promise<void>((r) => hung.listen(0, '127.0.0.1', r));
  t.teardown(() => { hung.closeAllConnections(); hung.close(); });
  const hookUrl = `http://127.0.0.1:${(hung.address() as { port: number }).port}/deploy`;

  const dataDir = mkdtempSync(join(tmpdir(), 'alignd-hung-'));
  const drop = join(dataDir, 'served');
  const reg = openRegistry(join(dataDir, 'registry'), 'hung');
  for (let i = 0; i < 2; i++) {
    const adapter = initLora(spec, { r: 4, loraAlpha: 8, targetModules: ['q_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: 'tiny' }, 7 + i);
    await reg.addVersion({ write: (d) => writePeftAdapter(d, spec, adapter) }, { parent: null, base_model: { path: 'builtin:tiny', sha256: null } });
  }
  const policyFile = join(dataDir, 'hung.yaml');
  const policy = (deployment: string, withHook: boolean): string => `model: hung
base_model: { path: builtin:tiny }
servers:
  - kind: file_drop
    dir: ${drop}
${withHook ? `  - kind: webhook\n    url: ${hookUrl}\n    secret_env: HUNG_HOOK_SECRET\n    timeout_s: 600\n` : ''}schedule: { cron: "0 0 1 1 *", min_new_examples: 100000 }
deployment: ${deployment}
`;
  writeFileSync(policyFile, policy('{ mode: pinned, version: v2 }', true));

  const daemon = await spawnDaemon(['--policy', policyFile, '--data-dir', dataDir], {
    HUNG_HOOK_SECRET: 's3cret', ALIGND_ADMIN_TOKEN: 'tok', ALIGND_LOOP_POLL_MS: '100',
  }, 60_000);
  let exited = false;
  t.teardown(async () => { if (!exited) await daemon.stop('SIGKILL'); });

  await until('v2 on the file-drop target and a push waiting on the webhook', () => requests.length > 0 && readlinkSync(join(drop, 'hung')) === 'hung-v2');
  await until('reconcile ticks skipped while a pass is in hand', async () => {
    const s = await (await fetch(`${daemon.url}/v1/status`)).json() as { models: Array<{ reconcileRunning: boolean; reconcileSkippedTicks: number }> };
    return s.models[0]!.reconcileRunning && s.models[0]!.reconcileSkippedTicks >= 3;
  });

  const res = await within(fetch(`${daemon.url}/v1/models/hung/rollback`, {
    method: 'POST', headers: { authorization: 'Bearer tok', 'content-type': 'application/json' }, body: JSON.stringify({ version: 'v1' }),
  }), 30_000, 'the rollback answer');
  t.equal(res.status, 200);
  t.match(await res.json(), { model: 'hung', deployment: { mode: 'pinned', version: 'v1' }, push: { desired: 'v1' } });
  await until('v1 served on the file-drop target', () => readlinkSync(join(drop, 'hung')) === 'hung-v1');

  // The operator drops the hung webhook from the policy: nothing is pushed to it any more.
  const applied = (): number => reg.auditRecords().filter((r) => r.event === 'policy.applied').length;
  const before = applied();
  writeFileSync(policyFile, policy('{ mode: pinned, version: v1 }', false));
  await until('the edit applied', () => applied() > before);
  await until('the pass on the removed target ended', () => requests.every((r) => r.destroyed || r.socket.destroyed));
  const seen = requests.length;
  await new Promise((r) => setTimeout(r, 2000)); // twenty reconcile ticks
  t.equal(requests.length, seen, 'no push to a target the policy no longer names');
  t.match(reg.deployment(), { desired: 'v1', complete: true });
  t.same(Object.keys(reg.deployment()!.targets), [`file:${drop}`]);

  // Put the hung webhook back, let a push to it start, then SIGTERM: the process exits.
  writeFileSync(policyFile, policy('{ mode: pinned, version: v1 }', true));
  await until('a push to the hung webhook again', () => requests.length > seen);
  const code = await within(daemon.stop('SIGTERM'), 30_000, 'exit after SIGTERM');
  exited = true;
  t.equal(code, 0);
  t.ok(daemon.logs.some((l) => l.includes('"msg":"alignd stopped"')));
});
