/**
 * Probation in the daemon's own parts: a real registry, a real SQLite buffer fed through the
 * ingest pipeline, the real policy watcher on a real file, a server speaking vLLM's LoRA API and a
 * webhook receiver. A staged promotion announces its canary weight (promotions topic publisher,
 * webhook body, deployed.json) and keeps both adapters loaded; worse live feedback makes alignd
 * pin the previous version in the policy file itself; a person's pin of the same version goes
 * through the same hot reload with the same effect; equal feedback ends probation as stable,
 * announces all traffic, and lets the candidate that waited be promoted; a hold is answered with
 * `approve`; a restart replays the stored events to the same decision.
 */
import t, { type Test } from 'tap';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../daemon/base/log.js';
import { openBuffer, type ReplayBuffer } from '../../daemon/store/buffer.js';
import { createIngest } from '../../daemon/ingest/pipeline.js';
import { defaultLimits } from '../../daemon/feedback/schema.js';
import { openModelRuntime, type ModelRuntime } from '../../daemon/loop/model-runtime.js';
import { memoryAnnouncer } from '../../daemon/registry/publisher.js';
import { approveCandidate, denyCandidate, recordDecision } from '../../daemon/release/decisions.js';
import { nextToPromote, promoteIfAllowed } from '../../daemon/release/deploy.js';
import { editDeployment } from '../../daemon/policy/edit.js';
import { createCanaryMonitor, type CanaryMonitor } from '../../daemon/canary/monitor.js';
import { serverTargets } from '../../adapters/servers/index.js';
import { parseModelConfig } from '../../daemon/model/hf-config.js';
import { initLora } from '../../daemon/model/lora.js';
import { writePeftAdapter } from '../../daemon/model/peft.js';
import { TINY_CONFIG } from '../../daemon/model/tiny.js';
import { startFakeVllm, type FakeVllm } from '../harness/vllm-server.js';
import { liveUsers, toFeedbackEvent, TYPICAL, type VersionBehaviour } from '../harness/live-users.js';
import type { Registry } from '../../daemon/registry/registry.js';

const spec = parseModelConfig(TINY_CONFIG, 'tiny');
const fast = { attempts: 3, baseDelayMs: 1, maxDelayMs: 2 };
process.env['TEST_CANARY_HOOK'] = 'hook-secret';

async function webhookReceiver(): Promise<{ url: string; bodies: Array<Record<string, unknown>>; server: Server }> {
  const bodies: Array<Record<string, unknown>> = [];
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => { raw += c.toString(); });
    req.on('end', () => { bodies.push(JSON.parse(raw) as Record<string, unknown>); res.writeHead(204).end(); });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address() as { port: number };
  return { url: `http://127.0.0.1:${addr.port}/deploy`, bodies, server };
}

const POLICY = (vllmUrl: string, hookUrl: string, rollout: string): string => `# a model on probation after each promotion
model: tiny
base_model: { path: builtin:tiny }
servers:
  - kind: vllm
    urls: [${vllmUrl}]
  - kind: webhook
    url: ${hookUrl}
    secret_env: TEST_CANARY_HOOK
rollout:
${rollout}
# promote what passes the gate
deployment: auto
`;

interface Setup {
  dir: string;
  policyFile: string;
  rt: ModelRuntime;
  reg: Registry;
  buffer: ReplayBuffer;
  vllm: FakeVllm;
  hook: Awaited<ReturnType<typeof webhookReceiver>>;
  pub: ReturnType<typeof memoryAnnouncer>;
  /** active: the lease check of a replica (absent: always watching). */
  monitor: (active?: () => boolean) => CanaryMonitor;
  send: (version: string, behaviour: { canary: VersionBehaviour; baseline: VersionBehaviour }, n: number, seed: number) => void;
  promote: (version: string) => Promise<void>;
}

async function setup(t: Test, rollout: string): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'alignd-canary-'));
  const vllm = await startFakeVllm();
  const hook = await webhookReceiver();
  t.teardown(async () => { await vllm.close(); hook.server.close(); });
  const policyFile = join(dir, 'tiny.yaml');
  writeFileSync(policyFile, POLICY(vllm.url, hook.url, rollout));
  const pub = memoryAnnouncer();
  const rt = openModelRuntime({ policyFile, dataDir: dir, log: silentLogger, makeTargets: (p) => serverTargets(p.servers), publisher: pub, retry: fast });
  t.teardown(() => rt.stop());
  const reg = rt.registry;
  for (let i = 1; i <= 3; i++) {
    const adapter = initLora(spec, { r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: 'tiny-base' }, i);
    const v = await reg.addVersion({ write: (d) => writePeftAdapter(d, spec, adapter) }, { parent: reg.latest()?.version ?? null, base_model: { path: 'builtin:tiny', sha256: null } });
    await recordDecision(reg, v.version, { decision: 'promote', reasons: [], checks: [] });
  }
  const buffer = openBuffer({ path: join(dir, 'buffer.sqlite'), heldoutFraction: 0 });
  t.teardown(() => buffer.close());
  const ingest = createIngest({ buffer, limits: defaultLimits });
  const models = [{ model: 'tiny', registry: reg, policyFile, policy: () => rt.policy(), reload: () => rt.watcher.check(), push: () => rt.pushOptions() }];
  let ids = 0;
  return {
    dir, policyFile, rt, reg, buffer, vllm, hook, pub,
    monitor: (active) => createCanaryMonitor({ db: buffer.db, models: models.map((m) => (active === undefined ? m : { ...m, active })), log: silentLogger }),
    send(canaryVersion, behaviour, n, seed) {
      const previous = reg.get(canaryVersion)!.manifest.probation!.previous;
      const next = liveUsers({ seed, ...behaviour, canaryWeight: 0.5 });
      const events = Array.from({ length: n }, () => {
        const e = next();
        return toFeedbackEvent(e, 'tiny', e.arm === 'canary' ? canaryVersion : previous, `ev-${seed}-${ids++}`);
      });
      const out = ingest.ingestBatch(events.map((e) => ({ bytes: Buffer.from(JSON.stringify(e)), origin: { source: 'cli' as const } })));
      if (out.some((o) => o.status !== 'stored')) throw new Error(`not stored: ${JSON.stringify(out.find((o) => o.status !== 'stored'))}`);
    },
    async promote(version) {
      const p = rt.policy();
      await promoteIfAllowed(reg, reg.get(version)!, p.deployment, { targets: rt.targets(), publisher: pub, retry: fast, log: silentLogger, rollout: p.rollout });
    },
  };
}

const STAGED = '  enabled: true\n  min_events: 100\n  canary_weight: 0.5\n  metrics: [down_vote_share, mean_rating]\n';
const WORSE = { canary: { ...TYPICAL, downShare: 0.6 }, baseline: TYPICAL };
const EQUAL = { canary: TYPICAL, baseline: TYPICAL };
const events = (reg: Registry): string[] => reg.auditRecords().map((r) => r.event);

t.test('a staged promotion announces its canary weight and keeps both adapters loaded', async (t) => {
  const s = await setup(t, STAGED);
  await s.promote('v1');
  t.equal(s.reg.get('v1')!.manifest.probation, null, 'the first version has nothing to be compared with: no probation');
  t.ok(events(s.reg).includes('probation.skipped'));
  await s.promote('v2');
  t.match(s.reg.get('v2')!.manifest.probation, { status: 'watching', previous: 'v1', canary_weight: 0.5 });
  const canary = { weight: 0.5, baseline: 'v1', baseline_name: 'tiny-v1' };
  t.same(s.reg.deployment()?.canary, canary, 'deployed.json carries the canary weight');
  t.same(s.pub.announcements.at(-1)?.canary, canary, 'so does the announcement on the promotions topic');
  t.same(s.hook.bodies.at(-1)?.['canary'], canary, 'and the webhook body');
  t.ok(s.vllm.loaded.has('tiny-v1') && s.vllm.loaded.has('tiny-v2'), 'vLLM serves both adapter names while the canary runs');

  await s.promote('v3');
  t.equal(s.reg.deployment()?.desired, 'v2', 'a newer candidate waits while v2 is on probation');
  t.match(s.reg.auditRecords().at(-1), { event: 'promote.deferred', version: 'v3', on_probation: 'v2' });
});

/** Promote v1 and v2 (v2 on probation), then worse feedback on v2. */
async function onProbation(t: Test, rollout = STAGED): Promise<Setup> {
  const s = await setup(t, rollout);
  await s.promote('v1');
  await s.promote('v2');
  return s;
}

/** What a rollback leaves behind, whoever wrote the pin. */
function afterRollback(t: Test, s: Setup, by: string): string[] {
  t.match(readFileSync(s.policyFile, 'utf8'), /deployment:\n {2}mode: pinned\n {2}version: v1\n/, 'the policy file pins v1');
  t.match(readFileSync(s.policyFile, 'utf8'), /# promote what passes the gate\ndeployment:/, 'comments kept');
  t.same(s.rt.policy().deployment, { mode: 'pinned', version: 'v1' }, 'the watcher applied the pin');
  t.match(s.reg.deployment(), { desired: 'v1', complete: true, canary: null });
  t.equal(s.reg.deployment()?.targets[`vllm:${s.vllm.url}`]?.version, 'v1', 'the vLLM target confirmed v1');
  t.match(s.reg.get('v2')!.manifest.probation, { status: 'rolled_back', decision: { outcome: 'rollback', by } });
  const done = s.reg.auditRecords().filter((r) => r.event === 'promote.done').at(-1);
  t.match(done, { version: 'v1', reason: /^pinned by policy \(v1\): rollback of v2 — / });
  t.match(s.pub.announcements.at(-1), { version: 'v1', previous: 'v2', canary: null }, 'announced: v1 takes all traffic');
  t.match(s.hook.bodies.at(-1), { version: 'v1', canary: null });
  // Never promoted again by itself, nor the candidate gated against it.
  editDeployment(s.policyFile, { mode: 'auto' });
  t.equal(nextToPromote(s.reg), undefined, 'back in auto mode, neither v2 nor its child v3 is next to promote');
  const after = s.reg.auditRecords().map((r) => r.event);
  return after.slice(after.lastIndexOf('policy.applied'));
}

t.test('worse live feedback: alignd pins the previous version itself, with the reason in the audit log', async (t) => {
  const s = await onProbation(t);
  const monitor = s.monitor();
  s.send('v2', WORSE, 400, 1);
  await monitor.tick();
  const rec = s.reg.get('v2')!.manifest.probation!;
  t.match(rec.decision, { outcome: 'rollback', by: 'alignd', trigger: 'down_vote_share', reason: /v2 is confidently worse than v1 on down_vote_share/ });
  const decided = s.reg.auditRecords().find((r) => r.event === 'probation.rollback_decided');
  t.match(decided, { version: 'v2', previous: 'v1', trigger: 'down_vote_share', reason: /confidently worse/ }, 'the audit log has the reason and its figures');
  t.match(decided?.['figures'], { versions: { canary: 'v2', baseline: 'v1' }, metrics: [{ metric: 'down_vote_share' }, { metric: 'mean_rating' }] });
  t.match(readFileSync(s.policyFile, 'utf8'), /# alignd: rolled back v2 to v1 at .*: down_vote_share worse on probation/, 'the pin says why (git diff tells the story)');
  const tail = afterRollback(t, s, 'alignd');
  t.same(tail, ['policy.applied', 'deployment.pinned', 'probation.rollback', 'promote.start', 'promote.done'], 'the hot reload did the rest');
  const view = monitor.view('tiny');
  t.match(view, { version: 'v2', status: 'rolled_back', decision: { outcome: 'rollback' } });
  t.ok((view?.timeline.length ?? 0) > 0 && view?.figures !== null, 'the status page keeps the figures and timeline the decision was taken on');
});

t.test('a replica without the model\'s lease leaves probation to the holder; on taking it over it replays and decides', async (t) => {
  const s = await onProbation(t);
  let holder = false;
  const monitor = s.monitor(() => holder);
  s.send('v2', WORSE, 400, 7);
  await monitor.tick();
  t.match(s.reg.get('v2')!.manifest.probation, { status: 'watching' }, 'no decision from a replica that does not hold the lease');
  t.notMatch(readFileSync(s.policyFile, 'utf8'), /rolled back/, 'nor a pin');
  holder = true;
  await monitor.tick();
  t.match(s.reg.get('v2')!.manifest.probation!.decision, { outcome: 'rollback', by: 'alignd', trigger: 'down_vote_share' }, 'the holder decides on the stored events');
});

t.test('a pin alignd cannot write (the file was left broken) holds the version for a person, with what it found', async (t) => {
  const s = await onProbation(t);
  writeFileSync(s.policyFile, readFileSync(s.policyFile, 'utf8').replace('deployment: auto', 'deployment: [auto'));
  await s.rt.watcher.check();
  t.ok(s.rt.watcher.lastRefusal() !== undefined, 'the broken edit was refused; the last good policy stays');
  s.send('v2', WORSE, 400, 6);
  await s.monitor().tick();
  t.match(s.reg.get('v2')!.manifest.probation, { status: 'held', decision: { outcome: 'hold', by: 'alignd',
    reason: /^automatic rollback to v1 failed: the policy is not valid YAML.*; the comparison found: v2 is confidently worse than v1 on down_vote_share.*; pin it by hand: alignd rollback tiny v1$/ } });
  t.equal(s.reg.deployment()?.desired, 'v2', 'nothing was changed behind the operator\'s back');
});

t.test('a person pinning the previous version during probation: the same hot reload, the same result', async (t) => {
  const s = await onProbation(t);
  editDeployment(s.policyFile, { mode: 'pinned', version: 'v1' }, { versionExists: (_m, v) => s.reg.has(v) }); // what `alignd rollback tiny v1` writes
  await s.rt.watcher.check();
  const tail = afterRollback(t, s, 'policy pin');
  t.same(tail, ['policy.applied', 'deployment.pinned', 'probation.rollback', 'promote.start', 'promote.done'], 'the same audit sequence as alignd\'s own rollback');
  t.match(s.reg.get('v2')!.manifest.probation?.decision?.reason, /the policy pins v1 while v2 was on probation/);
  await s.monitor().tick();
  t.equal(s.reg.get('v2')!.manifest.probation?.status, 'rolled_back', 'the monitor has nothing left to watch');
});

t.test('equal feedback: stable, all traffic announced, and the candidate that waited is promoted', async (t) => {
  const s = await onProbation(t, '  enabled: true\n  min_events: 100\n  canary_weight: 0.5\n  margin: 0.1\n  metrics: [down_vote_share, mean_rating]\n');
  await s.promote('v3');
  const monitor = s.monitor();
  for (let seed = 1; seed <= 40 && s.reg.get('v2')!.manifest.probation?.status === 'watching'; seed++) {
    s.send('v2', EQUAL, 250, seed);
    await monitor.tick();
  }
  t.match(s.reg.get('v2')!.manifest.probation, { status: 'stable', decision: { outcome: 'stable', by: 'alignd', trigger: 'margin' } });
  t.match(s.reg.deployment(), { desired: 'v2', canary: null, reason: 'probation ended: v2 takes all traffic' });
  t.match(s.pub.announcements.at(-1), { version: 'v2', canary: null, reason: 'probation ended: v2 takes all traffic' });
  t.match(s.hook.bodies.at(-1), { version: 'v2', canary: null }, 'the webhook learns it too');
  t.equal(nextToPromote(s.reg)?.version, 'v3', 'the waiting candidate is next');
  await s.promote('v3');
  t.match(s.reg.get('v3')!.manifest.probation, { status: 'watching', previous: 'v2' }, 'and goes on probation against v2');
});

t.test('max_hours without a decision holds for a person; approve keeps the version', async (t) => {
  const s = await onProbation(t, '  enabled: true\n  max_hours: 1\n  on_timeout: hold\n  metrics: [down_vote_share]\n');
  t.equal(s.reg.deployment()?.canary, null, 'without canary_weight: all traffic, the previous version\'s last window is the baseline');
  s.send('v2', EQUAL, 50, 1);
  const monitor = s.monitor();
  await monitor.tick();
  t.equal(s.reg.get('v2')!.manifest.probation?.status, 'watching');
  await monitor.tick(Date.now() + 3_600_001);
  t.match(s.reg.get('v2')!.manifest.probation, { status: 'held', decision: { outcome: 'hold', trigger: 'timeout' } });
  t.match(s.reg.get('v2')!.manifest.probation?.decision?.reason, /1 h on probation without a decision \(on_timeout: hold\); a person decides: `alignd approve MODEL v2` keeps it/);
  await t.rejects(denyCandidate(s.reg, 'v2', 'dave'), { message: /denying it means rolling back.*alignd rollback tiny v1/ }, 'deny points at the rollback');
  const v = await approveCandidate(s.reg, 'v2', 'dave', 'looks fine in the dashboards');
  t.match(v.manifest.probation, { status: 'stable', decision: { outcome: 'stable', by: 'dave', reason: /approved by dave after probation held/ } });
  t.match(s.reg.auditRecords().at(-1), { event: 'probation.stable', version: 'v2', by: 'dave' });
  await monitor.tick(Date.now() + 7_200_000);
  t.equal(s.reg.get('v2')!.manifest.probation?.status, 'stable', 'nothing reopens it');
});

t.test('frozen pauses the watch; switching rollout off keeps the version and lets the waiting candidate go', async (t) => {
  const s = await onProbation(t);
  await s.promote('v3');
  const monitor = s.monitor();
  writeFileSync(s.policyFile, readFileSync(s.policyFile, 'utf8').replace('deployment: auto', 'deployment: frozen'));
  await s.rt.watcher.check();
  s.send('v2', WORSE, 400, 5);
  await monitor.tick();
  t.equal(s.reg.get('v2')!.manifest.probation?.status, 'watching', 'frozen: no rollback, however bad the feedback');
  t.same(s.rt.policy().deployment, { mode: 'frozen' });
  writeFileSync(s.policyFile, readFileSync(s.policyFile, 'utf8').replace('  enabled: true\n', '  enabled: false\n').replace('deployment: frozen', 'deployment: auto'));
  await s.rt.watcher.check();
  await monitor.tick();
  t.match(s.reg.get('v2')!.manifest.probation, { status: 'stable', decision: { by: 'policy', reason: /rollout.enabled was set to false while v2 was on probation/ } });
  t.match(s.reg.deployment(), { desired: 'v2', canary: null }, 'the canary weight ended');
  t.equal(nextToPromote(s.reg)?.version, 'v3');
});

t.test('a restart replays the stored events to the same decision', async (t) => {
  const s = await onProbation(t);
  s.send('v2', WORSE, 60, 3);
  const first = s.monitor();
  await first.tick();
  t.equal(s.reg.get('v2')!.manifest.probation?.status, 'watching', 'not decided on 60 events');
  const figures = first.view('tiny')?.figures;
  const restarted = s.monitor();
  await restarted.tick();
  t.same(restarted.view('tiny')?.figures, figures, 'the same figures after a restart');
  s.send('v2', WORSE, 400, 4);
  await restarted.tick();
  t.equal(s.reg.get('v2')!.manifest.probation?.status, 'rolled_back');
});

