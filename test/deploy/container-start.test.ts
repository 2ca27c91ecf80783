/**
 * Starts the daemon with exactly the command and environment the container image declares
 * (Dockerfile ENTRYPOINT + CMD, ENV, WORKDIR, read back by the parser, never copied here) as a
 * plain process, since no Docker engine runs here, from the files the image contains (laid out
 * under a temp root by image-fs.ts: /app with what the final stage copies, /policies as the image
 * fills it, an empty /data volume). Container paths in the command and environment point there;
 * the port is a free one, since a process shares the host's port space where a container would not.
 * Then: /healthz answers 200, the image's own HEALTHCHECK command passes, SIGTERM stops it cleanly,
 * and the HEALTHCHECK command fails once it is down.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../harness/daemon.js';
import { containerSpec, readDockerfile } from './dockerfile.js';
import { layOutImage } from './image-fs.js';

const text = readDockerfile();
const spec = containerSpec(text);
const tmp = mkdtempSync(join(tmpdir(), 'alignd-container-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

const image = layOutImage(text, join(tmp, 'rootfs'));
/** Container paths (absolute, under a directory the image has) → their place in the laid-out image. */
const mapPath = (v: string): string => {
  const top = v.split('/')[1];
  return v.startsWith('/') && top !== undefined && top !== '' && existsSync(image.hostPath('/' + top)) ? image.hostPath(v) : v;
};
// `node` on the image's PATH is this Node (the image's base is the Node 20 that CI runs).
const mapArgv = (argv: string[]): string[] => argv.map((a, i) => (i === 0 && a === 'node' ? process.execPath : mapPath(a)));

async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  srv.close();
  await once(srv, 'close');
  if (addr === null || typeof addr === 'string') throw new Error('no port');
  return addr.port;
}

async function run(argv: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<{ code: number | null; out: string }> {
  const p = spawn(argv[0] ?? '', argv.slice(1), { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (c: Buffer) => { out += c.toString(); });
  p.stderr.on('data', (c: Buffer) => { out += c.toString(); });
  const [code] = (await once(p, 'exit')) as [number | null];
  return { code, out };
}

t.test('the container command and environment come from the Dockerfile', async (t) => {
  t.equal(spec.workdir, '/data', 'relative paths land in the data volume');
  t.same(spec.argv.slice(0, 2), ['node', '/app/dist/daemon/main.js'], 'ENTRYPOINT runs the built CLI');
  t.equal(spec.argv[2], 'start', 'CMD starts the daemon');
  t.ok(existsSync(mapPath(spec.argv[1] ?? '')), 'the entrypoint is in the image');
  t.ok(existsSync(image.hostPath('/app/package.json')), 'package.json too (the CLI reads its version)');
  t.equal(existsSync(image.hostPath('/app/test')) || existsSync(image.hostPath('/app/dist/test')), false, 'tests are not shipped');
});

t.test('the daemon runs as the container would run it', async (t) => {
  t.same(readdirSync(image.hostPath('/data'), { recursive: true }), ['registry'], 'the data volume starts with only the (empty) registry mount point');
  if (existsSync(join(repoRoot, 'policies'))) {
    t.same(readdirSync(image.hostPath('/policies')).sort(), readdirSync(join(repoRoot, 'policies')).sort(), '/policies holds the example policies');
  }

  // The image's /app must stay as shipped: Kubernetes mounts the root filesystem read-only.
  const appFiles = (): string[] => readdirSync(image.hostPath('/app'), { recursive: true }).map(String).filter((f) => !f.startsWith('node_modules')).sort();
  const appBefore = appFiles();

  const argv = mapArgv(spec.argv);
  const cwd = mapPath(spec.workdir);
  let port = 0;
  let env: NodeJS.ProcessEnv = {};
  let proc: ChildProcess | undefined;
  let logs: string[] = [];
  let exited = false;
  let exit: Promise<{ code: number | null; signal: string | null }> = Promise.resolve({ code: null, signal: null });
  let status = 0;
  t.teardown(() => { if (!exited) proc?.kill('SIGKILL'); });
  // A free port can be taken by someone else before the daemon binds it: then start again.
  for (let attempt = 0; attempt < 3 && status !== 200; attempt++) {
    port = await freePort();
    env = {
      PATH: process.env['PATH'], HOME: tmp,
      ...Object.fromEntries(Object.entries(spec.env).map(([k, v]) => [k, mapPath(v)])),
      ALIGND_HTTP_PORT: String(port),
    };
    const p = spawn(argv[0] ?? '', argv.slice(1), { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    proc = p;
    const lines: string[] = [];
    logs = lines;
    p.stdout.on('data', (c: Buffer) => lines.push(c.toString()));
    p.stderr.on('data', (c: Buffer) => lines.push(c.toString()));
    exited = false;
    exit = once(p, 'exit').then(([code, signal]) => { exited = true; return { code: code as number | null, signal: signal as string | null }; });
    for (let i = 0; i < 600 && !exited; i++) {
      status = (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.status ?? 0;
      if (status === 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    if (status !== 200 && !(exited && /EADDRINUSE/.test(lines.join('')))) break;
  }
  t.equal(status, 200, '/healthz answers 200', { logs: logs.join('') });
  // What the Kubernetes probes and the ServiceMonitor use (deploy/k8s/).
  let ready = 0;
  for (let i = 0; i < 600 && !exited && ready !== 200; i++) {
    ready = (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status ?? 0;
    if (ready !== 200) await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(ready, 200, '/readyz answers 200 once the sources run');
  const metrics = await fetch(`http://127.0.0.1:${port}/metrics`);
  t.equal(metrics.status, 200, '/metrics answers');
  t.match(await metrics.text(), /^# (HELP|TYPE) /m, 'in Prometheus text format');
  t.match(logs.join(''), new RegExp(`"msg":"http listening".*"address":"0\\.0\\.0\\.0:${port}"`), 'bound to 0.0.0.0 as ALIGND_HTTP_HOST says');
  t.ok(readdirSync(image.hostPath('/data')).some((f) => f.startsWith('buffer.sqlite')), 'the buffer lives in the /data volume');

  const hc = spec.healthcheck ?? [];
  const up = await run(mapArgv(hc), env, cwd);
  t.equal(up.code, 0, "the image's HEALTHCHECK command passes while the daemon is up", { out: up.out });

  proc?.kill('SIGTERM');
  const { code, signal } = await exit;
  t.equal(signal, null, 'not killed by the signal: alignd handled it');
  t.equal(code, 0, 'SIGTERM: clean exit');
  t.match(logs.join(''), /"msg":"alignd stopped"/, 'it logged its clean stop');

  t.same(appFiles(), appBefore, 'nothing was written under /app (read-only root filesystem in k8s)');
  t.ok(readdirSync(image.hostPath('/data')).length > 1, 'what the daemon wrote is in /data', { data: readdirSync(image.hostPath('/data'), { recursive: true }) });

  const down = await run(mapArgv(hc), env, cwd);
  t.equal(down.code, 1, 'the HEALTHCHECK command fails once the daemon is down');
});
