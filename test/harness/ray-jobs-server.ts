/**
 * An HTTP server speaking the Ray Jobs REST API (POST /api/jobs/, GET /api/jobs/{id},
 * GET /api/jobs/{id}/logs, POST /api/jobs/{id}/stop) for tests that need a cluster's faults on
 * demand: a job that fails with a log, one that never ends, a dashboard that answers 500. What a
 * job does is the test's `run` function (e.g. write the job's out/ directory as the real job
 * would). The real cluster is exercised by test-optional/cluster (npm run test:cluster).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type FakeJobState = 'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'STOPPED';

export interface FakeJob {
  id: string;
  entrypoint: string;
  runtimeEnv: Record<string, unknown>;
  metadata: Record<string, string>;
  status: FakeJobState;
  message: string | null;
  logs: string[];
  /** Aborted when the job is stopped through the API. */
  stopSignal: AbortSignal;
}

export interface FakeRay {
  url: string;
  jobs: Map<string, FakeJob>;
  /** Every request, in order: `METHOD path`. */
  requests: string[];
  /** Status requests answer 500 while this is > 0 (decremented per answer). */
  failStatus: number;
  close(): Promise<void>;
}

/** `run` resolves: SUCCEEDED; throws: FAILED with its message; never settles: RUNNING until stopped. */
export async function startFakeRay(run: (job: FakeJob) => Promise<void>): Promise<FakeRay> {
  const jobs = new Map<string, FakeJob>();
  const requests: string[] = [];
  const stops = new Map<string, AbortController>();
  const send = (res: ServerResponse, status: number, body: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const readJson = async (req: IncomingMessage): Promise<Record<string, unknown>> => {
    let raw = '';
    for await (const c of req) raw += (c as Buffer).toString('utf8');
    return raw === '' ? {} : JSON.parse(raw) as Record<string, unknown>;
  };
  const fake: FakeRay = {
    url: '', jobs, requests, failStatus: 0,
    close: () => new Promise((r) => {
      for (const c of stops.values()) c.abort();
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
  const server = createServer((req, res) => {
    void (async () => {
      const path = (req.url ?? '').split('?')[0]!;
      requests.push(`${req.method} ${path}`);
      const m = /^\/api\/jobs\/([^/]+)(\/logs|\/stop)?$/.exec(path);
      if (req.method === 'POST' && path === '/api/jobs/') {
        const body = await readJson(req);
        const id = String(body['submission_id']);
        if (jobs.has(id)) return send(res, 400, { detail: `Job with submission_id ${id} already exists.` });
        const stop = new AbortController();
        stops.set(id, stop);
        const job: FakeJob = { id, entrypoint: String(body['entrypoint']), runtimeEnv: (body['runtime_env'] ?? {}) as Record<string, unknown>,
          metadata: (body['metadata'] ?? {}) as Record<string, string>, status: 'PENDING', message: null, logs: [], stopSignal: stop.signal };
        jobs.set(id, job);
        setTimeout(() => {
          if (job.status !== 'PENDING') return;
          job.status = 'RUNNING';
          run(job).then(() => { if (job.status === 'RUNNING') job.status = 'SUCCEEDED'; },
            (err: unknown) => { if (job.status === 'RUNNING') { job.status = 'FAILED'; job.message = `Job entrypoint command failed: ${(err as Error).message}`; } });
        }, 20);
        return send(res, 200, { submission_id: id, job_id: null });
      }
      if (m === null) return send(res, 404, { detail: 'not found' });
      const job = jobs.get(decodeURIComponent(m[1]!));
      if (job === undefined) return send(res, 404, { detail: `Job ${m[1]} does not exist.` });
      if (req.method === 'GET' && m[2] === undefined) {
        if (fake.failStatus > 0) {
          fake.failStatus--;
          return send(res, 500, { detail: 'dashboard restarting' });
        }
        return send(res, 200, { submission_id: job.id, status: job.status, message: job.message, entrypoint: job.entrypoint });
      }
      if (req.method === 'GET' && m[2] === '/logs') return send(res, 200, { logs: job.logs.map((l) => `${l}\n`).join('') });
      if (req.method === 'POST' && m[2] === '/stop') {
        const running = job.status === 'PENDING' || job.status === 'RUNNING';
        if (running) {
          job.status = 'STOPPED';
          job.message = 'Job was intentionally stopped.';
          stops.get(job.id)?.abort();
        }
        return send(res, 200, { stopped: running });
      }
      return send(res, 405, { detail: 'method not allowed' });
    })().catch((err: unknown) => send(res, 500, { detail: String(err) }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return fake;
}
