/**
 * Rounds on a remote trainer, through the real daemon: the policy's `trainer: ray` points at a
 * server speaking the Ray Jobs API whose jobs act as the cluster would (read job.json, write
 * out/adapter and out/metrics.json), so every way a job can end is on demand. Real TRL on a real
 * Ray head: test-optional/cluster (npm run test:cluster).
 *   - a job that returns a good adapter: registered with the round's lineage and the job's figures,
 *     gated and promoted; the job directory is removed afterwards;
 *   - a job that fails: a discarded round whose reason holds the job's log tail, v1 still deployed;
 *   - a malformed adapter (NaN): discarded with the job's log tail, v1 still deployed;
 *   - SIGTERM while a job runs: the job is stopped on the cluster, the round discarded with the
 *     job's log tail, the daemon exits 0.
 */
import t from 'tap';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnDaemon } from '../harness/daemon.js';
import { feedbackLines, modelStatus, startLoopJudge, stopWithin, waitFor, writeLoopPolicy } from '../harness/loop.js';
import { startFakeRay, type FakeJob } from '../harness/ray-jobs-server.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import { openRegistry } from '../../daemon/registry/registry.js';
import { fileSha256 } from '../../daemon/remote/handoff.js';
import { TINY_SEED, writeTinyModel } from '../../daemon/model/tiny.js';
import { loadModel } from '../../daemon/model/model.js';
import { initLora } from '../../daemon/model/lora.js';
import { readPeftAdapter, writePeftAdapter } from '../../daemon/model/peft.js';

const MODEL = 'remote';
const dir = mkdtempSync(join(tmpdir(), 'alignd-remote-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const storage = join(dir, 'shared');
const spec = (() => { writeTinyModel(join(dir, 'tiny'), TINY_SEED); return loadModel(join(dir, 'tiny')).spec; })();

/** What the next job does: the cluster's behaviour on demand. */
let next: 'good' | 'fail' | 'nan' | 'hang' = 'good';
const seen: Array<{ job: FakeJob; spec: Record<string, unknown>; dirAfter?: boolean }> = [];
const ray = await startFakeRay(async (job) => {
  const jobPath = /--job (\S+)$/.exec(job.entrypoint)![1]!;
  const jobDir = join(jobPath, '..');
  const js = JSON.parse(readFileSync(jobPath, 'utf8')) as Record<string, unknown> & { deployed_adapter: string | null; output: string };
  seen.push({ job, spec: js });
  job.logs.push('alignd_trl: loading the base model', 'Tokenizing train dataset: 100%');
  const behaviour = next;
  if (behaviour === 'fail') {
    job.logs.push('Traceback (most recent call last):', 'RuntimeError: mat1 and mat2 shapes cannot be multiplied (4x128 and 64x8)');
    throw new Error('exit code 1');
  }
  if (behaviour === 'hang') {
    await new Promise((_, reject) => job.stopSignal.addEventListener('abort', () => reject(new Error('stopped'))));
  }
  // The job's work: start from the deployed adapter (or PEFT's init), move B, write the adapter and metrics.
  const out = join(jobDir, js.output);
  const adapterDir = join(out, 'adapter');
  mkdirSync(adapterDir, { recursive: true });
  const start = js.deployed_adapter === null
    ? initLora(spec, { r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: 'builtin:tiny' }, 1)
    : readPeftAdapter(join(jobDir, js.deployed_adapter), spec);
  for (const p of start.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = p.b[i]! + (behaviour === 'nan' && i === 0 ? NaN : 1e-3);
  writePeftAdapter(adapterDir, spec, start);
  writeFileSync(join(out, 'metrics.json'), JSON.stringify({
    format: 'alignd.trl-metrics/v1', loss: 0.61, steps: 8, kept_step: 8, stop_reason: 'completed', reason: null, beta: 0.1,
    kl: { perRound: 0.004, cumulative: 0.009, sampledSequence: null }, kl_checks: [{ step: 0, perRound: 0, cumulative: 0.005, beta: 0.1 }, { step: 8, perRound: 0.004, cumulative: 0.009, beta: 0.1 }],
    heldout: null, examples: 40, step_logs: [{ step: 8, loss: 0.61, lr: 1e-4, grad_norm: 0.9, beta: 0.1 }], versions: { trl: '1.16.0', peft: '0.21.2' }, wall_s: { train: 1.5 },
    adapter_files: Object.fromEntries(['adapter_config.json', 'adapter_model.safetensors'].map((f) => [f, fileSha256(join(adapterDir, f))])),
  }));
  job.logs.push('alignd_trl: round done');
});
t.teardown(() => ray.close());

const judge = await startLoopJudge();
t.teardown(() => judge.close());
const policyFile = writeLoopPolicy(join(dir, `${MODEL}.yaml`), { model: MODEL, judge, fileDropDir: join(dir, 'served'), minNewExamples: 24 });
appendFileSync(policyFile, `trainer:
  kind: ray
  address: ${ray.url}
  poll_s: 0.2
  timeout_s: 600
  runtime_env: { pip: [], env_vars: { HF_HUB_OFFLINE: "1" } }
  storage: { path: ${storage}, cluster_path: ${storage} }
`);
const dataDir = join(dir, 'data');
const daemon = await spawnDaemon(['--policy', policyFile, '--data-dir', dataDir], { ALIGND_LOOP_POLL_MS: '1000', ALIGND_LOG_LEVEL: 'info' }, 60_000);
t.teardown(() => daemon.stop('SIGKILL'));
const logTail = (): string => daemon.logs.slice(-30).join('\n');
const registry = openRegistry(join(dataDir, 'registry'), MODEL);
let batch = 0;
const feed = async (): Promise<void> => {
  batch++;
  const r = await fetch(`${daemon.url}/v1/feedback`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: feedbackLines(MODEL, 40, batch, `b${batch}`).join('\n') });
  if (r.status !== 202) throw new Error(`feedback answered ${r.status}`);
};
const roundDone = (round: number) => waitFor(async () => {
  const s = await modelStatus(daemon.url, MODEL);
  return s !== undefined && s.lastRound === round && !s.roundRunning ? s : undefined;
}, 180_000, `round ${round} to finish`, logTail);
const lastOutcome = (): Record<string, unknown> => {
  const b = openBuffer({ path: join(dataDir, 'buffer.sqlite'), heldoutFraction: 0.1 });
  try { return b.roundResults(MODEL).at(-1)!.result; } finally { b.close(); }
};

t.test('a job that returns a good adapter: a version with the round\'s lineage, gated and promoted', async (t) => {
  next = 'good';
  await feed();
  const s = await roundDone(1);
  t.equal(s.deployed, 'v1', 'v1 deployed');
  const m = registry.get('v1')!.manifest;
  t.match(m.data_window, { round: 1, events: 40 }, 'lineage recorded as for a local round');
  t.match(m.round_metrics, { steps: 8, kept_step: 8, stop_reason: 'completed', kl: { perRound: 0.004, cumulative: 0.009 }, trainer: { trainer: `ray:${ray.url}`, versions: { trl: '1.16.0' } } });
  const job = seen.at(-1)!;
  t.match(job.spec, { format: 'alignd.trl-job/v1', model: MODEL, round: 1, deployed_adapter: null, objective: { loss_type: 'sigmoid', max_steps: 8 } });
  t.same(job.job.runtimeEnv, { env_vars: { HF_HUB_OFFLINE: '1' } }, 'runtime_env from the policy (no pip list: the test cluster has it all)');
  t.match(job.job.entrypoint, new RegExp(`^env PYTHONPATH=${storage}/code/alignd_trl-[0-9a-f]{16} python -m alignd_trl --job ${storage}/${MODEL}/r1-[0-9a-f]{8}/job\\.json$`));
  t.ok(existsSync(join(storage, 'code', readdirSync(join(storage, 'code'))[0]!, 'alignd_trl', 'guard.py')), 'the job\'s code is on the shared storage');
  t.same(readdirSync(join(storage, MODEL)), [], 'the job directory is removed after the round');
  t.equal(registry.verifyVersion('v1').ok, true, 'the registered adapter matches its manifest');
});

t.test('a failed job and a malformed adapter: discarded rounds, v1 stays deployed', async (t) => {
  next = 'fail';
  await feed();
  await roundDone(2);
  const o2 = lastOutcome();
  t.equal(o2['decision'], 'discarded');
  t.match((o2['reasons'] as string[])[0], /round failed: training job alignd-remote-r2-.* ended FAILED.*RuntimeError: mat1 and mat2 shapes cannot be multiplied/s, 'the job\'s log tail is the reason');
  next = 'nan';
  await feed();
  await roundDone(3);
  t.match((lastOutcome()['reasons'] as string[])[0], /round failed: the returned adapter holds NaN\/Inf values.*training job alignd-remote-r3-[0-9a-f]+ on ray:.*log tail:\n.*alignd_trl: round done/s, 'the reason names the job and quotes its log');
  t.same(registry.list().map((v) => v.version), ['v1'], 'no version from either');
  t.match(registry.deployment(), { desired: 'v1', complete: true });
});

t.test('SIGTERM while a job runs: stopped on the cluster, a discarded round with the log tail, exit 0', async (t) => {
  next = 'hang';
  await feed();
  await waitFor(() => seen.length === 4 && seen[3]!.job.status === 'RUNNING', 120_000, 'the fourth job to run', logTail);
  t.equal(await stopWithin(daemon, 'SIGTERM', 120_000), 0, 'exits 0');
  t.equal(seen[3]!.job.status, 'STOPPED', 'the job was stopped through the Jobs API');
  const o = lastOutcome();
  t.equal(o['decision'], 'discarded');
  t.match((o['reasons'] as string[])[0], /cancelled because alignd is shutting down.*alignd_trl: loading the base model/s);
  t.match(registry.deployment(), { desired: 'v1' }, 'the deployed version is untouched');
});
