/**
 * Starts test/harness/judge-server in its own node process (under tap the .ts file through tap's
 * TypeScript loader, from dist/ the compiled .js) and follows its request lines, so a test can
 * kill it at a chosen request and start it again on the same port.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { JudgeServerConfig } from './judge-server.js';

export interface JudgeServerProcess {
  url: string;
  port: number;
  proc: ChildProcess;
  /** Completion requests it has received so far. */
  requests(): number;
  /** The most requests it has had in hand at once. */
  maxInFlight(): number;
  /** The messages of every request the model answered, in arrival order. */
  messages(): Array<Array<{ role: string; content: string }>>;
  /** Resolves when the n-th request arrives. */
  request(n: number): Promise<void>;
  stderr(): string;
  /** SIGKILL (no goodbye) and wait for the exit. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

export async function spawnJudgeServer(config: JudgeServerConfig): Promise<JudgeServerProcess> {
  const here = fileURLToPath(import.meta.url);
  const ts = here.endsWith('.ts');
  const entry = join(dirname(here), ts ? 'judge-server.ts' : 'judge-server.js');
  const loader = ts ? process.execArgv.filter((a) => a.includes('@tapjs/typescript')) : [];
  const proc = spawn(process.execPath, [...loader, entry], { env: { ...process.env, ALIGND_JUDGE_SERVER: JSON.stringify(config) }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let n = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  const messages: Array<Array<{ role: string; content: string }>> = [];
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const url = await new Promise<string>((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      const lines = stdout.split('\n');
      stdout = lines.pop() ?? '';
      for (const l of lines) {
        if (l.startsWith('{')) resolve((JSON.parse(l) as { url: string }).url);
        else if (l.startsWith('request')) {
          n++;
          maxInFlight = Math.max(maxInFlight, ++inFlight);
          for (const w of waiters.filter((x) => x.n <= n)) w.resolve();
        } else if (l === 'done') inFlight--;
        else if (l.startsWith('messages ')) messages.push(JSON.parse(l.slice('messages '.length)) as Array<{ role: string; content: string }>);
      }
    });
    proc.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    proc.once('exit', (code, signal) => reject(new Error(`judge server exited (${code ?? signal}) before listening:\n${stderr.slice(-3000)}`)));
  });
  return {
    url, port: Number(new URL(url).port), proc,
    requests: () => n,
    maxInFlight: () => maxInFlight,
    messages: () => messages,
    request: (k) => (k <= n ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ n: k, resolve }))),
    stderr: () => stderr,
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * A TCP proxy with a stable port in front of a judge server, the way a Service fronts a pod: a
 * test can start a replacement server, point the proxy at it and kill the old one mid-request —
 * connections to the killed one drop, new ones reach the replacement.
 */
export async function startTcpProxy(targetPort: number): Promise<{ url: string; retarget(port: number): void; close(): Promise<void> }> {
  const { createServer, connect } = await import('node:net');
  let target = targetPort;
  const sockets = new Set<import('node:net').Socket>();
  const server = createServer((client) => {
    const upstream = connect(target, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    retarget: (p) => { target = p; },
    close: () => new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    }),
  };
}
