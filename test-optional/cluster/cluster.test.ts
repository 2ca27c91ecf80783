/**
 * alignd's rounds on a real Ray cluster (`npm run test:cluster`, run by .ci/run after `npm test`):
 * a local Ray head (ray[default] 2.60 from tools/cluster/requirements-lock.txt, --num-cpus 2) and
 * the real daemon with `trainer: ray`. The job is the one alignd ships (trainers/trl: TRL 1.16's
 * DPOTrainer with PEFT and alignd's KL guard as a callback), its pins installed by Ray's
 * runtime_env pip from trainers/trl/requirements.txt.
 *   - export → Ray job → TRL DPO with the KL callback → adapter → gate → registry → promotion,
 *     the version's figures from the job (KL checks, TRL's step log, versions);
 *   - the KL guard on the cluster: a budget the first check exceeds rolls the adapter back to the
 *     deployed state and stops the job; the round has no candidate and says why;
 *   - a job stopped mid-run on the cluster: a discarded round with the job's log tail, the
 *     deployed version untouched, no job directory left.
 */
import t from 'tap';
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clusterVenv, startRayHead, type RayHead } from './ray-head.js';
import { rayTrainer } from '../../adapters/trainers/ray.js';
import { spawnDaemon, type DaemonProcess } from '../../test/harness/daemon.js';
import { feedbackLines, modelStatus, startLoopJudge, waitFor, writeLoopPolicy } from '../../test/harness/loop.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import { openRegistry } from '../../daemon/registry/registry.js';
import { TINY_SEED, TINY_SERVING_SHAPE, writeTinyModel } from '../../daemon/model/tiny.js';
import { loadModel } from '../../daemon/model/model.js';
import { readPeftAdapter } from '../../daemon/model/peft.js';

const MODEL = 'tiny';
const work = mkdtempSync(join(tmpdir(), 'alignd-cluster-'));
const baseDir = join(work, 'base');
writeTinyModel(baseDir, TINY_SEED, TINY_SERVING_SHAPE);
const storage = join(work, 'shared');
const dataDir = join(work, 'data');
const policyFile = join(work, `${MODEL}.yaml`);

const judge = await startLoopJudge();
let ray: RayHead | undefined;
let daemon: DaemonProcess | undefined;
t.teardown(async () => {
  await daemon?.stop('SIGKILL');
  await ray?.stop();
  await judge.close();
  rmSync(work, { recursive: true, force: true });
});

function writePolicy(maxSteps: number, o: { learningRate?: number; perRound?: number } = {}): void {
  writeLoopPolicy(policyFile, { model: MODEL, judge, fileDropDir: join(work, 'served'), minNewExamples: 24, maxSteps, learningRate: o.learningRate ?? 5e-4 });
  const text = readFileSync(policyFile, 'utf8').replace('base_model: { path: builtin:tiny }', `base_model: { path: ${baseDir}, served_name: tiny-base }`)
    .replace(/per_round: 0\.05/, `per_round: ${o.perRound ?? 0.05}`);
  writeFileSync(policyFile, text);
  appendFileSync(policyFile, `trainer:
  kind: ray
  address: ${ray!.url}
  poll_s: 1
  timeout_s: 1500
  python: ${join(ray!.venv, 'bin/python')}
  runtime_env: { env_vars: { HF_HUB_OFFLINE: "1", OMP_NUM_THREADS: "2" } }   # pip: the pins of trainers/trl/requirements.txt
  storage: { path: ${storage} }
`);
}

const logTail = (): string => [...(daemon?.logs.slice(-25) ?? []), ...(ray?.logs.slice(-10) ?? [])].join('\n');
let batch = 0;
async function feed(): Promise<void> {
  batch++;
  const r = await fetch(`${daemon!.url}/v1/feedback`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: feedbackLines(MODEL, 40, batch, `c${batch}`).join('\n') });
  if (r.status !== 202) throw new Error(`feedback answered ${r.status}`);
}
const roundDone = (round: number, ms: number) => waitFor(async () => {
  const s = await modelStatus(daemon!.url, MODEL);
  return s !== undefined && s.lastRound === round && !s.roundRunning ? s : undefined;
}, ms, `round ${round} to finish`, logTail, 1000);
const outcomes = (): Array<Record<string, unknown>> => {
  const b = openBuffer({ path: join(dataDir, 'buffer.sqlite'), heldoutFraction: 0.1 });
  try { return b.roundResults(MODEL).map((r) => r.result); } finally { b.close(); }
};
const rayJobs = async (): Promise<Array<{ submission_id: string; status: string }>> => (await (await fetch(`${ray!.url}/api/jobs/`)).json()) as Array<{ submission_id: string; status: string }>;

t.before(async () => {
  ray = await startRayHead(clusterVenv());
  writePolicy(6);
  daemon = await spawnDaemon(['--policy', policyFile, '--data-dir', dataDir], { ALIGND_LOOP_POLL_MS: '1000', ALIGND_LOG_LEVEL: 'info' }, 120_000);
});

t.test('a round on Ray: export, TRL DPO with the KL guard, adapter back, gate, registry, promotion', async (t) => {
  await feed();
  // The first job builds Ray's pip environment from the pins (minutes on a shared 2-core machine).
  const s = await roundDone(1, 1_500_000);
  const o = outcomes().at(-1)!;
  t.equal(s.deployed, 'v1', `v1 deployed (outcome: ${JSON.stringify(o['reasons'])})`);
  const m = openRegistry(join(dataDir, 'registry'), MODEL).get('v1')!.manifest;
  const rm = m.round_metrics as Record<string, any>;
  t.match(rm, { steps: 6, stop_reason: /^(completed|kl_budget)$/, trainer: { versions: { trl: '1.16.0', peft: '0.21.2', transformers: '5.19.0' } } });
  t.ok(rm['kept_step'] > 0, `kept step ${rm['kept_step']}`);
  t.ok(rm['kl'].perRound > 0 && rm['kl'].perRound <= 0.05, `KL ${rm['kl'].perRound} nats/token, measured by the guard, inside the round budget`);
  t.ok(rm['heldout'] === null || rm['heldout'].pairs > 0);
  t.comment(`where the time went (ms): ${JSON.stringify(rm['trainer'].timing)}`);
  t.match(m.data_window, { round: 1, events: 40 });
  // The returned adapter is PEFT's own writing; alignd reads it and it moved away from the base.
  const spec = loadModel(baseDir).spec;
  const a = readPeftAdapter(openRegistry(join(dataDir, 'registry'), MODEL).get('v1')!.adapterDir, spec);
  t.equal(a.config.baseModelNameOrPath, 'tiny-base', 'the adapter names the base as the servers know it');
  t.ok([...a.pairs.values()].some((p) => p.b.some((x) => x !== 0)), 'B moved off PEFT\'s zero init');
  t.same((await rayJobs()).map((j) => j.status), ['SUCCEEDED']);
  t.same(readdirSync(join(storage, MODEL)), [], 'the job directory is removed');
});

const applied = (): number => daemon!.logs.filter((l) => l.includes('"msg":"policy applied"')).length;
/** Edit the policy file and wait until the running daemon applied it (hot reload). */
async function editPolicy(maxSteps: number, o: { learningRate?: number; perRound?: number } = {}): Promise<void> {
  const before = applied();
  writePolicy(maxSteps, o);
  await waitFor(() => applied() > before, 60_000, 'the policy edit to be applied', logTail);
}

t.test('the KL guard on the cluster: over the round budget, the job rolls back and stops; no candidate', async (t) => {
  await editPolicy(6, { learningRate: 5e-2, perRound: 1e-5 }); // a step this large leaves a budget this small at once
  await feed();
  await roundDone(2, 900_000);
  const o = outcomes().at(-1)!;
  t.match(o, { decision: 'discarded', stopReason: 'kl_budget' });
  t.match((o['reasons'] as string[])[0], /KL [0-9.]+ \(round\) \/ [0-9.]+ \(cumulative\) nats\/token after step 5 exceeds the budget 1e-05 \/ 10; kept step 0/, 'the guard\'s reason, from the job');
  t.same(openRegistry(join(dataDir, 'registry'), MODEL).list().map((v) => v.version), ['v1'], 'no version');
});

t.test('a job stopped mid-run on the cluster: a discarded round with its log tail, v1 untouched', async (t) => {
  await editPolicy(100_000); // far more steps than can run before the stop
  await feed();
  const running = await waitFor(async () => (await rayJobs()).find((j) => j.status === 'RUNNING'), 600_000, 'the third job to run', logTail, 1000);
  // Training has begun once TRL logs a step.
  await waitFor(async () => {
    const logs = ((await (await fetch(`${ray!.url}/api/jobs/${running.submission_id}/logs`)).json()) as { logs: string }).logs;
    return /'loss'/.test(logs);
  }, 900_000, 'the job to log a training step', logTail, 2000);
  // Through alignd's own adapter: Ray refuses a POST that carries fetch's Sec-Fetch-* headers.
  await rayTrainer({ address: ray!.url }).stop(running.submission_id);
  await roundDone(3, 300_000);
  const o = outcomes().at(-1)!;
  t.equal(o['decision'], 'discarded');
  t.match((o['reasons'] as string[])[0], /training job alignd-tiny-r3-[0-9a-f]+ on ray:.* ended STOPPED.*log tail:.*'loss'/s, 'the reason names the stop and quotes the job\'s log');
  const reg = openRegistry(join(dataDir, 'registry'), MODEL);
  t.same(reg.list().map((v) => v.version), ['v1']);
  t.match(reg.deployment(), { desired: 'v1', complete: true });
  t.same(readdirSync(join(storage, MODEL)), [], 'no job directory left');
  t.equal(await daemon!.stop('SIGTERM'), 0);
});
