/**
 * A RemoteTrainer on a Ray cluster, through the Ray Jobs REST API of its dashboard (Ray 2.x):
 *   POST /api/jobs/                     {entrypoint, submission_id, runtime_env, metadata}
 *   GET  /api/jobs/{submission_id}      → {status: PENDING|RUNNING|STOPPED|SUCCEEDED|FAILED, message}
 *   GET  /api/jobs/{submission_id}/logs → {logs}
 *   POST /api/jobs/{submission_id}/stop → {stopped}
 * KubeRay's RayCluster serves the same API, so one adapter covers a laptop head and Kubernetes.
 *
 * Requests go through node:http, not fetch: Ray's dashboard refuses mutating requests that look
 * like a browser's (ray/dashboard/optional_utils.py is_browser_request: any Sec-Fetch-* header),
 * and Node's fetch always sends `sec-fetch-mode: cors` (HTTP 405 "method not allowed for browser
 * traffic" on POST /api/jobs/, measured with Ray 2.60).
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { AligndError } from '../../daemon/base/errors.js';
import { excerpt, MAX_BODY_BYTES } from '../../daemon/base/http-json.js';
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

/** One request with a deadline and a bounded body (see the header for why not fetch). */
function send(method: string, url: string, headers: Record<string, string>, body: string | undefined, timeoutMs: number, signal?: AbortSignal): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(u, {
      method, headers: { ...headers, ...(body === undefined ? {} : { 'content-length': String(Buffer.byteLength(body)) }) },
      timeout: timeoutMs, ...(signal === undefined ? {} : { signal }),
    }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY_BYTES) req.destroy(new Error(`body exceeds alignd's limit of ${MAX_BODY_BYTES} bytes`));
        else chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

export function rayTrainer(o: RayTrainerOptions): RemoteTrainer {
  const base = o.address.replace(/\/+$/, '');
  const id = `ray:${base}`;
  const timeoutMs = o.requestTimeoutMs ?? 30_000;
  const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'alignd', ...(o.token === undefined ? {} : { authorization: `Bearer ${o.token}` }) };

  async function call(method: 'GET' | 'POST', path: string, body: unknown, what: string, signal?: AbortSignal): Promise<unknown> {
    let res: { status: number; text: string };
    try {
      res = await send(method, `${base}${path}`, headers, body === undefined ? undefined : JSON.stringify(body), timeoutMs, signal);
    } catch (err) {
      throw new AligndError('TRAINER_FAILED', `${what}: the Ray dashboard at ${base} did not answer (${(err as Error).message})`, {
        action: 'check trainer.address (the dashboard port, 8265 by default) and that the head is running', cause: err });
    }
    if (res.status < 200 || res.status >= 300) {
      throw new AligndError('TRAINER_FAILED', `${what}: Ray answered HTTP ${res.status}: ${excerpt(res.text)}`, {
        action: res.status === 404 ? 'the job is unknown to this cluster (a restarted head forgets jobs)' : 'read the message; check the cluster\'s dashboard log',
        permanent: res.status >= 400 && res.status < 500,
      });
    }
    const text = res.text;
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
