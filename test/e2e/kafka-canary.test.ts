/**
 * END-TO-END: probation on real parts. A real Kafka broker carries all feedback; the real daemon
 * (`dist/daemon/main.js start --kafka-brokers ... --policy`) trains the tiny model and promotes
 * to a server speaking vLLM's runtime-LoRA API, with `rollout` enabled: a staged rollout with half
 * the traffic on the new version.
 *
 * 1. v1, then v2 are trained and promoted; v2 goes on probation against v1 (both adapters stay
 *    loaded, the announcement carries the canary weight). Simulated users give v2 worse feedback
 *    (down-votes 0.6 against 0.2, ratings lower) through Kafka; alignd rolls back by itself within
 *    a bounded number of events: the policy file pins v1 (with alignd's note), the audit log has
 *    the reason, v1 is served, the rollback is announced on alignd.promotions, and v2 is
 *    rolled_back and never promoted again.
 * 2. A person sets the policy back to auto; v3 is trained and promoted, on probation against v1;
 *    users treat both alike; v3 leaves probation as stable and takes all traffic.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import { spawnDaemon } from '../harness/daemon.js';
import { feedbackLines, modelStatus, startLoopRig, stopWithin, waitFor, writeLoopPolicy } from '../harness/loop.js';
import { liveUsers, toFeedbackEvent, TYPICAL, type VersionBehaviour } from '../harness/live-users.js';
import { readTopic } from '../kafka/util.js';
import { openRegistry } from '../../daemon/registry/registry.js';
import { editDeployment } from '../../daemon/policy/edit.js';

const MODEL = 'canary';
const TOPIC = 'alignd.feedback';
/** The bound on live feedback events (both versions) by which a clearly worse version must be rolled back. */
const ROLLBACK_WITHIN = 1500;
const STABLE_WITHIN = 6000;
const { dir, broker, vllm, judge } = await startLoopRig(t, 'alignd-e2e-canary-', TOPIC);
const policyFile = writeLoopPolicy(join(dir, 'canary.yaml'), {
  model: MODEL, judge, vllmUrls: [vllm.url], minNewExamples: 24,
  rollout: '  enabled: true\n  min_events: 100\n  canary_weight: 0.5\n  margin: 0.1\n  metrics: [down_vote_share, mean_rating]\n',
});
const dataDir = join(dir, 'data');
const daemon = await spawnDaemon(['--policy', policyFile, '--data-dir', dataDir, '--kafka-brokers', broker.brokers.join(','), '--topic', TOPIC],
  { ALIGND_LOOP_POLL_MS: '1000', ALIGND_LOG_LEVEL: 'info' }, 60_000);
t.teardown(() => daemon.stop('SIGKILL'));
const logTail = (): string => daemon.logs.slice(-40).join('\n');
const producer: Producer = new Kafka({ clientId: 'e2e-canary', brokers: broker.brokers, logLevel: logLevel.NOTHING }).producer();
await producer.connect();
t.teardown(() => producer.disconnect());
const reg = openRegistry(join(dataDir, 'registry'), MODEL);

let sent = 0;
async function produce(lines: string[]): Promise<void> {
  await producer.send({ topic: TOPIC, messages: lines.map((value) => ({ key: MODEL, value })) });
  sent += lines.length;
  await waitFor(async () => {
    const r = await fetch(`${daemon.url}/v1/status`);
    return ((await r.json()) as { buffer: { events: number } }).buffer.events === sent;
  }, 60_000, `${sent} events in the buffer`, logTail);
}

async function trainAndPromote(version: string, batch: number): Promise<void> {
  await produce(feedbackLines(MODEL, 40, 300 + batch, `train-${batch}`));
  await waitFor(async () => {
    const s = await modelStatus(daemon.url, MODEL);
    return s?.deployed === version && s.complete === true && !s.roundRunning && vllm.loaded.has(`${MODEL}-${version}`);
  }, 240_000, `${MODEL}-${version} promoted and loaded at the vLLM server`, logTail);
}

interface View { status: string; version: string; figures: { canaryEvents: number; baselineEvents: number } | null; decision: { outcome: string; reason: string } | null }
const probation = async (): Promise<View | null> =>
  ((await (await fetch(`${daemon.url}/v1/models/${MODEL}/probation`)).json()) as { probation: View | null }).probation;

/**
 * Live users on `version` (canary) and `previous`, in batches of 100 through Kafka, until probation
 * decides or `limit` events; after each batch the monitor has read it all (or decided). Returns the events sent.
 */
async function liveFeedback(version: string, previous: string, canary: VersionBehaviour, limit: number, seed: number): Promise<number> {
  const next = liveUsers({ seed, canary, baseline: LIVE, canaryWeight: 0.5 });
  let n = 0;
  while (n < limit && (await probation())?.status === 'watching') {
    const batch = Array.from({ length: 100 }, () => {
      const e = next();
      return JSON.stringify(toFeedbackEvent(e, MODEL, e.arm === 'canary' ? version : previous, `live-${version}-${n++}`));
    });
    await produce(batch);
    await waitFor(async () => {
      const p = await probation();
      return p !== null && (p.status !== 'watching' || (p.figures !== null && p.figures.canaryEvents + p.figures.baselineEvents >= n));
    }, 60_000, `probation read ${n} live events`, logTail);
  }
  return n;
}

// Live users who edit nothing: their feedback makes no training pairs, so no round starts meanwhile.
const LIVE = { ...TYPICAL, editShare: 0, safetyShare: 0 };

t.test('worse live feedback on a freshly promoted version: alignd rolls back by itself', async (t) => {
  await trainAndPromote('v1', 1);
  t.equal((await probation()), null, 'the first version has nothing to be compared with');
  await trainAndPromote('v2', 2);
  t.match(await probation(), { version: 'v2', status: 'watching' });
  t.ok(vllm.loaded.has(`${MODEL}-v1`) && vllm.loaded.has(`${MODEL}-v2`), 'both adapters loaded while the canary runs');
  t.same(reg.deployment()?.canary, { weight: 0.5, baseline: 'v1', baseline_name: `${MODEL}-v1` }, 'deployed.json carries the canary weight');

  const n = await liveFeedback('v2', 'v1', { ...LIVE, downShare: 0.6, rating: 0.5 }, ROLLBACK_WITHIN, 1);
  const p = await probation();
  t.match(p, { version: 'v2', status: 'rolled_back', decision: { outcome: 'rollback', reason: /v2 is confidently worse than v1/ } });
  t.ok(n <= ROLLBACK_WITHIN, `rolled back after ${n} live events (bound ${ROLLBACK_WITHIN})`);

  await waitFor(async () => {
    const s = await modelStatus(daemon.url, MODEL);
    return s?.mode === 'pinned' && s.deployed === 'v1' && s.complete === true;
  }, 60_000, 'v1 served again after the pin', logTail);
  const policy = readFileSync(policyFile, 'utf8');
  t.match(policy, /deployment:\n {2}mode: pinned\n {2}version: v1\n {2}# alignd: rolled back v2 to v1 at \S+: \w+ worse on probation\n/, 'the policy file shows the pin and why');
  t.match(policy, /# promote what passes the gate\ndeployment:/, 'its comments kept');
  const audit = reg.auditRecords();
  t.match(audit.find((r) => r.event === 'probation.rollback_decided'), { version: 'v2', previous: 'v1', reason: /confidently worse/ }, 'the audit log has the reason');
  t.match(audit.find((r) => r.event === 'probation.rollback'), { version: 'v2', by: 'alignd' });
  t.match(audit.filter((r) => r.event === 'promote.done').at(-1), { version: 'v1', reason: /^pinned by policy \(v1\): rollback of v2 — / });
  t.ok(reg.verifyAudit().ok, 'the audit hash chain verifies');
  t.equal(reg.deployment()?.targets[`vllm:${vllm.url}`]?.version, 'v1', 'the vLLM target serves v1');
  t.equal((await modelStatus(daemon.url, MODEL))?.serverName, `${MODEL}-v1`);
  t.equal(reg.get('v2')?.manifest.probation?.status, 'rolled_back');

  const announced = await readTopic(broker.brokers, 'alignd.promotions', 3, 30_000);
  const bodies = announced.map((m) => JSON.parse(m.value?.toString() ?? '{}') as { version: string; reason: string; canary: unknown });
  t.match(bodies.map((b) => b.version), ['v1', 'v2', 'v1'], 'v1, v2 (on probation), v1 again (the rollback) announced');
  t.match(bodies[1], { canary: { weight: 0.5, baseline: 'v1' } });
  t.match(bodies[2], { canary: null, reason: /rollback of v2/ });
});

t.test('equal feedback on the next version: it leaves probation as stable', async (t) => {
  editDeployment(policyFile, { mode: 'auto' }); // a person hands control back
  await waitFor(async () => (await modelStatus(daemon.url, MODEL))?.mode === 'auto', 30_000, 'auto mode applied', logTail);
  await trainAndPromote('v3', 3);
  t.equal(reg.get('v3')?.manifest.parent, 'v1', 'v3 was trained from the version served after the rollback');
  t.match(await probation(), { version: 'v3', status: 'watching' });
  t.equal(reg.get('v2')?.manifest.probation?.status, 'rolled_back', 'v2 was not promoted again');

  const n = await liveFeedback('v3', 'v1', LIVE, STABLE_WITHIN, 2);
  t.match(await probation(), { version: 'v3', status: 'stable', decision: { outcome: 'stable' } }, `stable after ${n} live events`);
  await waitFor(() => reg.deployment()?.canary === null && reg.deployment()?.complete === true, 30_000, 'the canary weight ended on every target', logTail);
  t.match(reg.deployment(), { desired: 'v3', complete: true, reason: 'probation ended: v3 takes all traffic' });
  const announced = await readTopic(broker.brokers, 'alignd.promotions', 5, 30_000);
  t.match(JSON.parse(announced.at(-1)?.value?.toString() ?? '{}'), { version: 'v3', canary: null, reason: 'probation ended: v3 takes all traffic' });

  t.equal(await stopWithin(daemon, 'SIGTERM', 30_000), 0, 'the daemon exits 0 on SIGTERM');
});
