/**
 * A RemoteTrainer on a Ray cluster, through the Ray Jobs REST API of its dashboard (Ray 2.x):
 *   POST /api/jobs/                     {entrypoint, submission_id, runtime_env, metadata}
 *   GET  /api/jobs/{submission_id}      → {status: PENDING|RUNNING|STOPPED|SUCCEEDED|FAILED, message}
 *   GET  /api/jobs/{submission_id}/logs → {logs}
 *   POST /api/jobs/{submission_id}/stop → {stopped}
 * KubeRay's RayCluster serves the same API, so one adapter covers a laptop head and Kubernetes.
 */
import { AligndError } from '../../daemon/base/errors.js';
import { errorBody, fetchWithTimeout, readBody } from '../../daemon/base/http-json.js';
import type { JobState, JobStatus, JobSubmission, RemoteTrainer } from '../../daemon/remote/remote-trainer.js';

export interface RayTrainerOptions {
  /** The dashboard, e.g. http://ray-head:8265. */
  address: string;
  /** A bearer token for a dashboard behind an authenticating proxy. */
  token?: string;
  /** Per-request deadline (a submission with a pip list returns before the install). */
  requestTimeoutMs?: number;
}

const STATES: ReadonlySet<string> = new Set(['PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'STOPPED']);

/** POSIX shell quoting: Ray runs the entry point through a shell. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function rayTrainer(o: RayTrainerOptions): RemoteTrainer {
  const base = o.address.replace(/\/+$/, '');
  const id = `ray:${base}`;
  const timeoutMs = o.requestTimeoutMs ?? 30_000;
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(o.token === undefined ? {} : { authorization: `Bearer ${o.token}` }) };

  async function call(method: 'GET' | 'POST', path: string, body: unknown, what: string, signal?: AbortSignal): Promise<unknown> {
    let res: Response;
    try {
      res = await fetchWithTimeout(`${base}${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) }, timeoutMs, signal);
    } catch (err) {
      throw new AligndError('TRAINER_FAILED', `${what}: the Ray dashboard at ${base} did not answer (${(err as Error).message})`, {
        action: 'check trainer.address (the dashboard port, 8265 by default) and that the head is running', cause: err });
    }
    if (!res.ok) {
      throw new AligndError('TRAINER_FAILED', `${what}: Ray answered HTTP ${res.status}: ${await errorBody(res, what)}`, {
        action: res.status === 404 ? 'the job is unknown to this cluster (a restarted head forgets jobs)' : 'read the message; check the cluster\'s dashboard log',
        permanent: res.status >= 400 && res.status < 500,
      });
    }
    const text = await readBody(res, what);
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new AligndError('TRAINER_FAILED', `${what}: Ray answered a body that is not JSON: ${text.slice(0, 200)}`, { action: `is ${base} a Ray dashboard?` });
    }
  }

  return {
    id,
    async submit(job: JobSubmission, signal?: AbortSignal): Promise<void> {
      const runtimeEnv: Record<string, unknown> = { env_vars: job.env };
      if (job.pip.length > 0) runtimeEnv['pip'] = job.pip;
      await call('POST', '/api/jobs/', {
        entrypoint: job.entrypoint.map(shellQuote).join(' '), submission_id: job.id, runtime_env: runtimeEnv, metadata: job.metadata,
      }, `submitting job ${job.id}`, signal);
    },
    async status(jobId: string, signal?: AbortSignal): Promise<JobStatus> {
      const j = await call('GET', `/api/jobs/${encodeURIComponent(jobId)}`, undefined, `status of job ${jobId}`, signal) as { status?: unknown; message?: unknown };
      if (typeof j.status !== 'string' || !STATES.has(j.status)) {
        throw new AligndError('TRAINER_FAILED', `status of job ${jobId}: Ray answered status ${JSON.stringify(j.status)}`, { action: 'is the cluster a Ray 2.x release?' });
      }
      return { state: j.status as JobState, message: typeof j.message === 'string' ? j.message : null };
    },
    async logs(jobId: string, signal?: AbortSignal): Promise<string> {
      const j = await call('GET', `/api/jobs/${encodeURIComponent(jobId)}/logs`, undefined, `log of job ${jobId}`, signal) as { logs?: unknown };
      return typeof j.logs === 'string' ? j.logs : '';
    },
    async stop(jobId: string): Promise<void> {
      await call('POST', `/api/jobs/${encodeURIComponent(jobId)}/stop`, {}, `stopping job ${jobId}`);
    },
  };
}
