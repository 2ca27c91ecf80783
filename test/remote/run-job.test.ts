/**
 * Driving a job on the Ray Jobs API to its end (daemon/remote/run-job.ts through
 * adapters/trainers/ray.ts), against a server that speaks the API with faults on demand: success;
 * a failed job's log tail in the reason; a job past its deadline and a job running at shutdown are
 * stopped on the cluster; a dashboard that keeps failing; a refused submission.
 */
import t from 'tap';
import { startFakeRay, type FakeJob } from '../harness/ray-jobs-server.js';
import { rayTrainer, shellQuote } from '../../adapters/trainers/ray.js';
import { runJob, logTail } from '../../daemon/remote/run-job.js';
import { silentLogger } from '../../daemon/base/log.js';
import type { JobSubmission } from '../../daemon/remote/remote-trainer.js';

const never = (job: FakeJob): Promise<void> => new Promise((_, reject) => job.stopSignal.addEventListener('abort', () => reject(new Error('stopped'))));
const behaviours: Record<string, (job: FakeJob) => Promise<void>> = {
  ok: async (job) => { job.logs.push('alignd_trl: round 1 of tiny: completed'); },
  fail: async (job) => {
    for (let i = 0; i < 100; i++) job.logs.push(`step ${i}`);
    job.logs.push('Traceback (most recent call last):', 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB');
    throw new Error('exit code 1');
  },
  hang: async (job) => { job.logs.push('loading the base model'); await never(job); },
};
const ray = await startFakeRay((job) => behaviours[job.metadata['behaviour']!]!(job));
t.teardown(() => ray.close());
const trainer = rayTrainer({ address: `${ray.url}/` });

let n = 0;
const submission = (behaviour: string): JobSubmission => ({
  id: `alignd-tiny-r${++n}-test`, entrypoint: ['env', 'PYTHONPATH=/shared/code x', 'python', '-m', 'alignd_trl', '--job', "/shared/it's/job.json"],
  pip: ['trl==1.16.0'], env: { HF_HUB_OFFLINE: '1' }, metadata: { behaviour },
});
const opts = { timeoutMs: 60_000, pollMs: 20, log: silentLogger, stopGraceMs: 2000 };

t.test('a job that succeeds: submitted with the entry point quoted for a shell, the pins and env in runtime_env', async (t) => {
  const run = await runJob(trainer, submission('ok'), opts);
  t.equal(run.state, 'SUCCEEDED');
  const job = ray.jobs.get(run.id)!;
  t.equal(job.entrypoint, `env 'PYTHONPATH=/shared/code x' python -m alignd_trl --job '/shared/it'\\''s/job.json'`);
  t.same(job.runtimeEnv, { env_vars: { HF_HUB_OFFLINE: '1' }, pip: ['trl==1.16.0'] });
  t.equal(trainer.id, `ray:${ray.url}`, 'the trailing slash of the address is dropped');
  t.equal(shellQuote('a b'), `'a b'`);
});

t.test('a failed job: TRAINER_FAILED with the end of its log, not the beginning', async (t) => {
  const err = await runJob(trainer, submission('fail'), opts).then(() => null, (e: unknown) => e as Error & { code: string });
  t.equal(err?.code, 'TRAINER_FAILED');
  t.match(err?.message, /ended FAILED \(Job entrypoint command failed: exit code 1\)/);
  t.match(err?.message, /torch\.OutOfMemoryError: CUDA out of memory/);
  t.notMatch(err?.message, /step 3\n/, 'only the tail');
  t.equal(logTail('a\n\nb\nc', 2), 'b\nc');
});

t.test('a job past trainer.timeout_s is stopped on the cluster', async (t) => {
  const sub = submission('hang');
  const err = await runJob(trainer, sub, { ...opts, timeoutMs: 300 }).then(() => null, (e: unknown) => e as Error & { code: string });
  t.equal(err?.code, 'TRAINER_FAILED');
  t.match(err?.message, /did not finish within trainer\.timeout_s.*stopped \(state: STOPPED\)/s);
  t.match(err?.message, /loading the base model/, 'the log tail');
  t.equal(ray.jobs.get(sub.id)!.status, 'STOPPED');
  t.ok(ray.requests.includes(`POST /api/jobs/${sub.id}/stop`));
});

t.test('shutdown (SIGTERM) while a job runs: the job is stopped, the run ends as cancelled', async (t) => {
  const sub = submission('hang');
  const ac = new AbortController();
  const p = runJob(trainer, sub, { ...opts, signal: ac.signal });
  while (ray.jobs.get(sub.id)?.status !== 'RUNNING') await new Promise((r) => setTimeout(r, 10));
  ac.abort();
  const err = await p.then(() => null, (e: unknown) => e as Error & { code: string });
  t.equal(err?.code, 'TRAINER_FAILED');
  t.match(err?.message, /cancelled because alignd is shutting down \(state after the stop request: STOPPED\)/);
  t.equal(ray.jobs.get(sub.id)!.status, 'STOPPED');
});

t.test('a dashboard that fails a few polls is waited out; five in a row end the run and stop the job', async (t) => {
  ray.failStatus = 2;
  t.equal((await runJob(trainer, submission('ok'), opts)).state, 'SUCCEEDED', 'two failed polls are retried');
  ray.failStatus = 5;
  const sub = submission('hang');
  const err = await runJob(trainer, sub, opts).then(() => null, (e: unknown) => e as Error & { code: string });
  t.match(err?.message, /could not be polled \(status of job .*HTTP 500.*dashboard restarting/s);
  t.equal(ray.jobs.get(sub.id)!.status, 'STOPPED');
});

t.test('a submission Ray refuses: its answer in the error, marked permanent', async (t) => {
  const sub = submission('ok');
  await runJob(trainer, sub, opts);
  const err = await runJob(trainer, sub, opts).then(() => null, (e: unknown) => e as Error & { code: string; permanent: boolean });
  t.match(err, { code: 'TRAINER_FAILED', permanent: true });
  t.match(err?.message, /HTTP 400.*already exists/);
  const down = rayTrainer({ address: 'http://127.0.0.1:9' });
  const e2 = await runJob(down, submission('ok'), opts).then(() => null, (e: unknown) => e as Error);
  t.match(e2?.message, /Ray dashboard at http:\/\/127\.0\.0\.1:9 did not answer/);
});
