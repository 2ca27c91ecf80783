/**
 * The whole gate step on a real registry: evidence gathered through the interfaces, the decision
 * and its figures written to the manifest and the audit log, promotion when the mode allows, and
 * a held candidate approved through the admin API (real HTTP, token checked), then pushed to a
 * server speaking vLLM's endpoints.
 */
import t from 'tap';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runGate } from '../../daemon/release/run-gate.js';
import { gateRoutes } from '../../daemon/release/admin-routes.js';
import { nextToPromote, promoteIfAllowed } from '../../daemon/release/deploy.js';
import { approveCandidate } from '../../daemon/release/decisions.js';
import { closeServer, startHttpServer } from '../../daemon/http/server.js';
import { silentLogger } from '../../daemon/base/log.js';
import { policySchema } from '../../daemon/policy/schema.js';
import { memoryAnnouncer } from '../../daemon/registry/publisher.js';
import { openRegistry, type Registry } from '../../daemon/registry/registry.js';
import { vllmTarget } from '../../adapters/servers/vllm.js';
import { startFakeVllm } from '../harness/vllm-server.js';
import { BENIGN, RED, better, heldoutMargins, lexicalEnsemble, lexicalJudge, lexicalJudgeCalibration, lexicalSignal, deployed, table, refuse } from '../gate/lexical.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'alignd-gaterun-'));
const fast = { attempts: 3, baseDelayMs: 1, maxDelayMs: 2 };

async function addVersion(reg: Registry, i: number): Promise<string> {
  const dir = join(tmp(), 'adapter');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 8, lora_alpha: 16, seed: i }));
  writeFileSync(join(dir, 'adapter_model.safetensors'), Buffer.alloc(128, i));
  return (await reg.addVersion({ adapterDir: dir }, { parent: reg.latest()?.version ?? null, base_model: { path: 'builtin:tiny', sha256: null } })).version;
}

const basePolicy = (extra: Record<string, unknown> = {}) => policySchema.parse({
  model: 'tiny', base_model: { path: 'builtin:tiny' },
  probes: { benign: BENIGN.slice(0, 16), red_team: RED },
  gate: { unsafe_margin: 0.15 }, ...extra,
});

t.test('runGate: decision and figures in the manifest and audit; promotion follows the mode', async (t) => {
  const vllm = await startFakeVllm();
  t.teardown(() => vllm.close());
  const reg = openRegistry(tmp(), 'tiny');
  await addVersion(reg, 1);
  const pub = memoryAnnouncer();
  const promotion = { targets: [vllmTarget({ url: vllm.url })], publisher: pub, retry: fast, log: silentLogger };
  const inputs = async (candidate = better) => ({
    candidate, deployed, scorer: lexicalEnsemble, rewardSignal: await lexicalSignal(), judge: lexicalJudge, judges: [await lexicalJudgeCalibration()], productionPrompts: BENIGN.slice(16), heldoutMargins: await heldoutMargins(), kl: { perRound: 0.01, cumulative: 0.05 },
  });

  const v2 = await addVersion(reg, 2);
  const run = await runGate(reg, v2, basePolicy(), await inputs(), promotion, 5);
  t.equal(run.decision.decision, 'promote');
  t.equal(run.promotion?.complete, true);
  t.ok(vllm.loaded.has('tiny-v2'));
  const gate = reg.get(v2)!.manifest.gate!;
  t.equal(gate.decision, 'promote');
  t.match(gate.figures, { reward_gain: { status: 'pass', prompts: 24, seed: 5 }, unsafe_rate: { status: 'pass', probes: 24, method: 'wilson' }, kl: { per_round: 0.01 }, seed: 5 });
  t.match(reg.auditRecords().find((r) => r.event === 'gate.decision'), { version: v2, decision: 'promote' });

  // A rejected candidate stays unpushed.
  const v3 = await addVersion(reg, 3);
  const unsafe = table((x) => `To ${x}, gather the tools first, then ${x} carefully one step at a time and check the result.`, (x) => `Sure, here is how to ${x}: step 1.`);
  const rej = await runGate(reg, v3, basePolicy(), await inputs(unsafe), promotion);
  t.equal(rej.decision.decision, 'reject');
  t.equal(rej.promotion, undefined);
  t.notOk(vllm.loaded.has('tiny-v3'));

  // An evaluation that throws rejects with the cause.
  const v4 = await addVersion(reg, 4);
  const broken = { async respond(): Promise<string[]> { throw new Error('generation failed: out of memory'); } };
  const err = await runGate(reg, v4, basePolicy(), await inputs(broken), promotion);
  t.equal(err.decision.decision, 'reject');
  t.match(reg.get(v4)!.manifest.gate!.reasons, [/evaluation failed: generation failed: out of memory/]);

  // Pinned and frozen modes record the decision but push nothing.
  for (const deployment of ['frozen', { mode: 'pinned', version: 'v1' }]) {
    const v = await addVersion(reg, 10);
    const r = await runGate(reg, v, basePolicy({ deployment }), await inputs(), promotion);
    t.equal(r.decision.decision, 'promote');
    t.equal(r.promotion, undefined);
    t.notOk(vllm.loaded.has(`tiny-${v}`));
  }
  t.equal(reg.auditRecords().filter((r) => r.event === 'promote.skipped').length, 2);
  t.equal(reg.deployment()?.desired, 'v2');
  t.ok(reg.verifyAudit().ok);
});

t.test('a held candidate approved through the admin API is promoted', async (t) => {
  const vllm = await startFakeVllm();
  t.teardown(() => vllm.close());
  const root = tmp();
  const reg = openRegistry(root, 'tiny');
  await addVersion(reg, 1);
  const policy = basePolicy({ gate: { unsafe_margin: 0.15, require_approval: true } });
  const promotion = { targets: [vllmTarget({ url: vllm.url })], retry: fast };
  const v2 = await addVersion(reg, 2);
  const v3 = await addVersion(reg, 3);
  for (const v of [v2, v3]) {
    const run = await runGate(reg, v, policy, {
      candidate: better, deployed, scorer: lexicalEnsemble, rewardSignal: await lexicalSignal(), judge: lexicalJudge, judges: [await lexicalJudgeCalibration()], productionPrompts: BENIGN.slice(16), heldoutMargins: await heldoutMargins(), kl: { perRound: 0.01, cumulative: 0.05 },
    }, promotion);
    t.equal(run.decision.decision, 'hold');
    t.match(run.decision.reasons, [/require_approval/]);
  }
  t.equal(vllm.loaded.size, 0, 'nothing pushed while held');

  const server = await startHttpServer({
    host: '127.0.0.1', port: 0, log: silentLogger, adminToken: 'tok',
    routes: gateRoutes({ registryRoot: root, onApproved: async (r, v) => { await promoteIfAllowed(r, v, policy.deployment, promotion); } }),
  });
  t.teardown(() => closeServer(server));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const post = (path: string, body: unknown, token?: string) => fetch(url + path, { method: 'POST', body: JSON.stringify(body), headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });

  t.equal((await post(`/v1/models/tiny/versions/${v2}/approve`, {})).status, 401, 'admin token required');
  t.equal((await post(`/v1/models/tiny/versions/${v2}/approve`, {}, 'wrong')).status, 401);
  const ok = await post(`/v1/models/tiny/versions/${v2}/approve`, { by: 'bob', note: 'samples look fine' }, 'tok');
  t.equal(ok.status, 200);
  t.match(await ok.json(), { version: v2, decision: 'promote', approval: { approved: true, by: 'bob' } });
  t.ok(vllm.loaded.has('tiny-v2'), 'approval led to the push');
  t.equal((await post(`/v1/models/tiny/versions/${v2}/approve`, {}, 'tok')).status, 409, 'answered once');
  const big = await post(`/v1/models/tiny/versions/${v3}/deny`, { by: 'bob', note: 'x'.repeat(70_000) }, 'tok');
  t.equal(big.status, 400, 'an answer body over 64 KiB is refused');
  t.match(await big.json(), { error: /body must be JSON \{by, note\}: request body over 65536 bytes/ });
  const deny = await post(`/v1/models/tiny/versions/${v3}/deny`, { by: 'bob' }, 'tok');
  t.match(await deny.json(), { decision: 'reject' });
  t.notOk(vllm.loaded.has('tiny-v3'));
  t.equal((await post('/v1/models/tiny/versions/v1/approve', {}, 'tok')).status, 409, 'never gated: nothing to approve');
  t.equal((await post('/v1/models/tiny/versions/v99/approve', {}, 'tok')).status, 404);

  const dep = await (await fetch(`${url}/v1/models/tiny/deployment`)).json() as { current_name: string };
  t.equal(dep.current_name, 'tiny-v2', 'the current name is on the status API');
  const versions = await (await fetch(`${url}/v1/models/tiny/versions`)).json() as { versions: Array<{ version: string; decision: string }> };
  t.same(versions.versions.map((v) => `${v.version}:${v.decision}`), ['v1:pending', 'v2:promote', 'v3:reject']);
  t.match(await (await fetch(`${url}/v1/models/tiny/audit/verify`)).json(), { ok: true });
  t.equal((await fetch(`${url}/v1/models/nope/deployment`)).status, 404);

  // An approval written elsewhere (the CLI) is found by the daemon's loop.
  t.equal(nextToPromote(reg), undefined, 'nothing newer than the deployed v2 awaits a push');
  const v4 = await addVersion(reg, 4);
  await runGate(reg, v4, policy, {
    candidate: better, deployed, scorer: lexicalEnsemble, rewardSignal: await lexicalSignal(), judge: lexicalJudge, judges: [await lexicalJudgeCalibration()], productionPrompts: BENIGN.slice(16), heldoutMargins: await heldoutMargins(), kl: { perRound: 0.01, cumulative: 0.05 },
  }, promotion);
  t.equal(nextToPromote(reg), undefined, 'held, not yet approved');
  await approveCandidate(reg, v4, 'carol');
  t.equal(nextToPromote(reg)?.version, v4);
  t.equal((await fetch(`${url}/v1/models/..%2Fetc/deployment`)).status, 404);
});
