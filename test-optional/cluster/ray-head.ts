/**
 * A real local Ray head for the cluster suite: `ray start --head --block` from the cached venv
 * (tools/cluster/venv.sh), on 127.0.0.1 with --num-cpus 2 (the machine is shared), every port
 * chosen free, its own --temp-dir, in its own process group. stop() ends the group, then every
 * process that descended from the head or names our temp dir (Ray's workers and job drivers start
 * their own sessions), so nothing outlives a test file; it never runs `ray stop`, which would end
 * other people's Ray processes too.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../vllm/server.js';
import { repoRoot } from '../../test/harness/daemon.js';

export interface RayHead {
  /** The dashboard (Jobs API). */
  url: string;
  venv: string;
  logs: string[];
  stop(): Promise<void>;
}

/** The venv's path (built first when missing). */
export function clusterVenv(): string {
  return execFileSync(join(repoRoot, 'tools/cluster/venv.sh'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

/** Every process descending from `root` (Ray's workers and job drivers start their own sessions, so the group does not hold them). */
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      parent.set(Number(p), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch { /* gone */ }
  }
  const out: number[] = [];
  const walk = (pid: number): void => { for (const [c, pp] of parent) if (pp === pid) { out.push(c); walk(c); } };
  walk(root);
  return out;
}

/** Pids of processes whose command line mentions `needle` (our temp dir). */
function processesNaming(needle: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(needle)) out.push(Number(p));
    } catch { /* gone */ }
  }
  return out.filter((p) => p !== process.pid);
}

export async function startRayHead(venv: string, readyTimeoutMs = 240_000): Promise<RayHead> {
  const tempDir = mkdtempSync('/tmp/alignd-ray-');
  const [gcs, dash, client, agent] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const proc: ChildProcess = spawn(join(venv, 'bin/ray'), [
    'start', '--head', '--block', '--node-ip-address', '127.0.0.1', '--dashboard-host', '127.0.0.1', '--num-cpus', '2',
    '--port', String(gcs), '--dashboard-port', String(dash), '--ray-client-server-port', String(client), '--dashboard-agent-listen-port', String(agent),
    '--min-worker-port', '0', '--max-worker-port', '0', '--temp-dir', tempDir, '--include-dashboard=true', '--disable-usage-stats',
  ], {
    detached: true, stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PATH: `${join(venv, 'bin')}:${process.env['PATH'] ?? ''}`, RAY_USAGE_STATS_ENABLED: '0', HF_HUB_OFFLINE: '1' },
  });
  const logs: string[] = [];
  const keep = (c: Buffer): void => { logs.push(...c.toString('utf8').split('\n').filter((l) => l !== '')); if (logs.length > 500) logs.splice(0, logs.length - 500); };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  const exited = once(proc, 'exit');
  const url = `http://127.0.0.1:${dash}`;
  const stop = async (): Promise<void> => {
    // Found before anything is killed: once the head is gone its children belong to init.
    const family = proc.pid === undefined ? [] : descendants(proc.pid);
    const kill = (sig: NodeJS.Signals): void => { try { process.kill(-proc.pid!, sig); } catch { /* group gone */ } };
    if (proc.exitCode === null && proc.signalCode === null) {
      kill('SIGTERM');
      const timer = setTimeout(() => kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
    }
    kill('SIGKILL');
    for (let i = 0; i < 20; i++) {
      const left = [...new Set([...processesNaming(tempDir), ...family.filter((p) => existsSync(`/proc/${p}`))])];
      if (left.length === 0) break;
      for (const p of left) { try { process.kill(p, i < 10 ? 'SIGTERM' : 'SIGKILL'); } catch { /* gone */ } }
      await new Promise((r) => setTimeout(r, 500));
    }
    rmSync(tempDir, { recursive: true, force: true });
  };
  const t0 = Date.now();
  for (;;) {
    if (proc.exitCode !== null) { await stop(); throw new Error(`ray start exited (${proc.exitCode}) before the dashboard answered:\n${logs.slice(-40).join('\n')}`); }
    const ok = await fetch(`${url}/api/version`).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() - t0 > readyTimeoutMs) { await stop(); throw new Error(`the Ray dashboard did not answer within ${readyTimeoutMs} ms:\n${logs.slice(-40).join('\n')}`); }
    await new Promise((r) => setTimeout(r, 500));
  }
  return { url, venv, logs, stop };
}
