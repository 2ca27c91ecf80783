/**
 * Starts the real daemon (`node dist/daemon/main.js start ...`) as a child process for tests,
 * on a free port, and waits until /readyz answers. Logs are kept for assertions and failures.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';

export const repoRoot = resolve(fileURLToPath(import.meta.url), '../../..').replace(/\/dist$/, '');
export const mainJs = resolve(repoRoot, 'dist/daemon/main.js');

export interface DaemonProcess {
  proc: ChildProcess;
  url: string;
  port: number;
  logs: string[];
  /** Send a signal and wait for exit; resolves with the exit code (null when killed). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Without --policy the daemon is started --ingest-only (no training loop), unless `args` ask otherwise. */
export async function spawnDaemon(args: string[], env: NodeJS.ProcessEnv = {}, readyTimeoutMs = 30_000): Promise<DaemonProcess> {
  const loopArgs = args.includes('--policy') || args.includes('--demo') ? [] : ['--ingest-only'];
  const proc = spawn(process.execPath, [mainJs, 'start', '--port', '0', ...loopArgs, ...args], {
    env: { ...process.env, ALIGND_LOG_LEVEL: 'debug', ...env }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  let port = 0;
  let partial = '';
  const listening = new Promise<number>((resolveListen, reject) => {
    const onData = (chunk: Buffer): void => {
      partial += chunk.toString('utf8');
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) {
        logs.push(l);
        const m = /"msg":"http listening".*"address":"[^"]*:(\d+)"/.exec(l);
        if (m !== null) resolveListen(Number(m[1]));
      }
    };
    proc.stderr?.on('data', onData);
    proc.stdout?.on('data', (c: Buffer) => logs.push(c.toString('utf8')));
    proc.once('exit', (code) => reject(new Error(`daemon exited (${code}) before listening:\n${logs.join('\n')}`)));
    setTimeout(() => reject(new Error(`daemon did not listen within ${readyTimeoutMs} ms:\n${logs.join('\n')}`)), readyTimeoutMs).unref();
  });
  port = await listening;
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    const r = await fetch(`${url}/readyz`).catch(() => undefined);
    if (r?.status === 200) break;
    if (i > 300) throw new Error(`daemon never became ready:\n${logs.join('\n')}`);
    await new Promise((r2) => setTimeout(r2, 100));
  }
  return {
    proc, url, port, logs,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      const exited = once(proc, 'exit');
      proc.kill(signal);
      const [code] = (await exited) as [number | null];
      return code;
    },
  };
}
